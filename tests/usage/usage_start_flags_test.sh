#!/bin/bash
# labshare-usage refuses bad start-up flags before it connects to anything:
# exit 2 with the flag named.
# - --time_zone (usage.proto: the reporting time zone is an IANA name):
#   names the zone library also takes but that are no IANA zone (the host's
#   zone, a fixed offset, a file) and unknown names;
# - --max_concurrent_exports (usage.proto, Streaming exports: "the server
#   at most 32 (configuration)"): below 1; the flag is known, listed by
#   --helpfull with its default 32 (an unknown flag would exit 1).
# Usage: usage_start_flags_test.sh BUILD_DIR
set -u
bin="$1/bin/labshare-usage"
[ -x "$bin" ] || { echo "FAIL: $bin not built"; exit 1; }
failed=0
refused() {  # FLAG VALUE MESSAGE
  local out rc
  out=$(timeout 60 "$bin" "--$1=$2" --redis=127.0.0.1:1 --listen=127.0.0.1:0 2>&1)
  rc=$?
  if [ "$rc" -ne 2 ] || ! grep -qF -- "$3" <<<"$out"; then
    echo "FAIL: --$1=$2: exit $rc, output:"
    echo "$out" | head -20
    failed=1
  else
    echo "ok: --$1=$2 refused"
  fi
}
for zone in localtime Fixed/UTC+08:00:00 /usr/share/zoneinfo/Asia/Shanghai Mars/Olympus; do
  refused time_zone "$zone" 'bad --time_zone: not an IANA time zone name'
done
for n in 0 -1; do
  refused max_concurrent_exports "$n" 'bad --max_concurrent_exports: must be at least 1'
done
if ! "$bin" --helpfull 2>&1 | grep -A3 -- '-max_concurrent_exports' | grep -q 'default: 32'; then
  echo "FAIL: --helpfull does not list --max_concurrent_exports with default 32"
  failed=1
else
  echo "ok: --max_concurrent_exports listed, default 32"
fi
exit $failed
