#!/bin/bash
# labshare-usage's --max_concurrent_exports (usage.proto, Streaming exports:
# "the server at most 32 (configuration)"): a value below 1 stops it at
# start, exit 2, with the flag named, before it connects to anything; the
# flag is known (an unknown flag would exit 1 from the flags library).
# Usage: usage_max_exports_flag_test.sh BUILD_DIR
set -u
bin="$1/bin/labshare-usage"
[ -x "$bin" ] || { echo "FAIL: $bin not built"; exit 1; }
failed=0
for n in 0 -1; do
  out=$(timeout 60 "$bin" --max_concurrent_exports="$n" --redis=127.0.0.1:1 --listen=127.0.0.1:0 2>&1)
  rc=$?
  if [ "$rc" -ne 2 ] || ! grep -q 'bad --max_concurrent_exports: must be at least 1' <<<"$out"; then
    echo "FAIL: --max_concurrent_exports=$n: exit $rc, output:"
    echo "$out" | head -20
    failed=1
  else
    echo "ok: --max_concurrent_exports=$n refused"
  fi
done
# The help names it with its default.
if ! "$bin" --helpfull 2>&1 | grep -A3 -- '-max_concurrent_exports' | grep -q 'default: 32'; then
  echo "FAIL: --helpfull does not list --max_concurrent_exports with default 32"
  failed=1
else
  echo "ok: --max_concurrent_exports listed, default 32"
fi
exit $failed
