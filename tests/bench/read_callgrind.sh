#!/bin/bash
# Instructions per call of labshare-booking for one read RPC, under
# callgrind: a count that the shared machine's load does not move (CPU time
# per call drifts by tens of per cent with what else runs), for before/after
# comparisons of two builds. Runs tests/bench/run_read_bench.sh with the
# booking server under `valgrind --tool=callgrind` (instrumentation off),
# fills --fill bookings, then counts every instruction of the server for 25 s
# of one RPC at 16 in flight and divides by the calls the handler received
# (callgrind's call count of BookingService::<Method>).
#
# usage: tests/bench/read_callgrind.sh BUILD_DIR [KIND] [FILL]
#   KIND  list (default) | get | query | search;  FILL  600 (the page shape
#         of a list of 50 over 16 partitions needs no more; valgrind is slow)
# Prints: <kind> <build> instructions/call=<n> calls=<n> (the client is the
# build's read-bench unless READ_BENCH is set; run under flock /work/bench.lock).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$(cd "${1:?usage: read_callgrind.sh BUILD_DIR [KIND] [FILL]}" && pwd)"
kind="${2:-list}"
fill="${3:-600}"
case "$kind" in
  list) method=ListBookings ;; get) method=GetBooking ;; query) method=QueryAvailability ;;
  search) method=SearchAvailableInstruments ;; *) echo "read_callgrind: unknown kind $kind" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { echo "read_callgrind: needs valgrind" >&2; exit 1; }
work="$(mktemp -d /tmp/read-callgrind.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# A build directory whose labshare-booking runs under callgrind.
mkdir -p "$work/build/bin"
ln -s "$build/bin/labshare-inventory" "$build/bin/labshare-token" "$work/build/bin/"
echo "CMAKE_BUILD_TYPE:STRING=Release" >"$work/build/CMakeCache.txt"
cat >"$work/build/bin/labshare-booking" <<WRAP
#!/bin/bash
exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$work/cg.%p "$build/bin/labshare-booking" "\$@"
WRAP
chmod +x "$work/build/bin/labshare-booking"
export READ_BENCH="${READ_BENCH:-$build/tests/read-bench}" BOOKING_LOAD="${BOOKING_LOAD:-$build/tests/booking-load}"
"$here/run_read_bench.sh" "$work/build" -- --rounds=1 --seconds=40 --fill="$fill" --only="$kind" --concurrency=16 \
  --warmup=0 >"$work/log" 2>&1 &
bench=$!
for _ in $(seq 3000); do grep -q '^filled' "$work/log" 2>/dev/null && break; sleep 0.1; done
sleep 3
vg="$(pgrep -P "$bench" -f labshare-booking)"
callgrind_control -i on "$vg" >/dev/null 2>&1
sleep 25
callgrind_control -i off "$vg" >/dev/null 2>&1
callgrind_control -d "$vg" >/dev/null 2>&1
wait "$bench" || { cat "$work/log" >&2; exit 1; }
python3 - "$(ls "$work"/cg.*.1 | head -1)" "BookingService::$method(grpc::CallbackServerContext" "$kind" "$1" <<'PY'
import re, sys
path, want, kind, build = sys.argv[1:5]
names, calls, total, cfn = {}, {}, 0, None
for line in open(path, errors="replace"):
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
    m = re.match(r"^(c?)fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        if m.group(3): names[m.group(2)] = m.group(3)
        cfn = m.group(2) if m.group(1) else None
        continue
    if line.startswith("calls=") and cfn is not None:
        calls[cfn] = calls.get(cfn, 0) + int(line.split("=")[1].split()[0])
        cfn = None
n = sum(c for i, c in calls.items() if want in names.get(i, ""))
print(f"{kind} {build} instructions/call={total // n if n else 0} calls={n}")
PY
