#!/bin/bash
# Generates the TypeScript types and service descriptors of every contract in
# proto/ (and google/rpc's ErrorInfo and friends from Debian's
# golang-github-gogo-googleapis-dev) with protoc-gen-es into gen/.
# Nothing in gen/ is written by hand or committed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
googleapis="${GOOGLEAPIS_DIR:-/usr/share/gocode/src/github.com/gogo/googleapis}"
out="$here/gen"
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cd "$root/proto"
mapfile -t protos < <(find labshare grpc -name '*.proto' | sort)
protoc -I "$root/proto" -I "$googleapis" \
  --plugin=protoc-gen-es="$here/node_modules/.bin/protoc-gen-es" \
  --es_out="$out.tmp" --es_opt=target=ts,import_extension=js \
  "${protos[@]}" google/rpc/error_details.proto google/rpc/status.proto google/rpc/code.proto
rm -rf "$out" && mv "$out.tmp" "$out"
