#!/bin/bash
# labshare-usage's --time_zone (usage.proto: the reporting time zone is an
# IANA name): names the zone library also takes but that are no IANA zone
# (the host's zone, a fixed offset, a file) stop it at start, exit 2, with
# the flag named, before it connects to anything.
# Usage: usage_time_zone_flag_test.sh BUILD_DIR
set -u
bin="$1/bin/labshare-usage"
[ -x "$bin" ] || { echo "FAIL: $bin not built"; exit 1; }
failed=0
for zone in localtime Fixed/UTC+08:00:00 /usr/share/zoneinfo/Asia/Shanghai Mars/Olympus; do
  out=$(timeout 60 "$bin" --time_zone="$zone" --redis=127.0.0.1:1 --listen=127.0.0.1:0 2>&1)
  rc=$?
  if [ "$rc" -ne 2 ] || ! grep -q 'bad --time_zone: not an IANA time zone name' <<<"$out"; then
    echo "FAIL: --time_zone=$zone: exit $rc, output:"
    echo "$out" | head -20
    failed=1
  else
    echo "ok: --time_zone=$zone refused"
  fi
done
exit $failed
