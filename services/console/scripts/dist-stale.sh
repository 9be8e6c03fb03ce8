#!/bin/bash
# Whether the console's build (dist/, `npm run build`) is missing or older
# than what it is built from: server/, web/, the protos (gen/ is made from
# them), scripts/gen.sh, package.json and package-lock.json. Exit 0 and the
# first newer source on stdout when it must be built again; exit 1 when the
# build is current. One `find` that stops at the first newer file: cheap
# when nothing changed.
# usage: scripts/dist-stale.sh [CONSOLE_DIR [PROTO_DIR]]
#   (default: this script's console and the repository's proto/)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
console="${1:-$here}"
proto="${2:-$(cd "$here/../.." && pwd)/proto}"
sources=("$console/server" "$console/web" "$proto" "$console/scripts/gen.sh" "$console/package.json"
  "$console/package-lock.json")
for out in "$console/dist/server/main.js" "$console/dist/web/index.html"; do
  if [ ! -f "$out" ]; then
    echo "$out is missing"
    exit 0
  fi
  newer="$(find "${sources[@]}" -newer "$out" -type f -not -path '*/node_modules/*' -print -quit 2>/dev/null || true)"
  if [ -n "$newer" ]; then
    echo "$newer is newer than $out"
    exit 0
  fi
done
exit 1
