#!/bin/bash
# booking's read RPCs against the health Check of the same server (issue 17):
# starts redis-server, labshare-inventory and ONE labshare-booking, seeds
# the catalogue (booking-load --seed), then runs read-bench (fill, then
# alternating rounds of Check / GetBooking / ListBookings / QueryAvailability /
# SearchAvailableInstruments at 64 in flight; see tests/bench/read_bench.cc),
# and prints its lines.
#
# usage: tests/bench/run_read_bench.sh [BUILD_DIR] [-- read-bench flags...]
#   BUILD_DIR   the services' build (bin/labshare-inventory, bin/labshare-booking,
#               bin/labshare-token), default $BUILD_DIR or build-release. Use a
#               Release build.
# Environment: READ_BENCH (default BUILD_DIR/tests/read-bench, else this
#   tree's build-release/tests/read-bench), BOOKING_LOAD (for seeding; same
#   search), INSTRUMENTS (30, as the demo), BOOKING_FLAGS (more labshare-booking flags),
#   APPENDFSYNC (everysec). "Before/after" comparisons: run it once with an
#   old BUILD_DIR and once with a new one, both with the new read-bench.
# Every process it starts is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
extra=()
pos=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  pos+=("$1"); shift
done
build="${pos[0]:-${BUILD_DIR:-build-release}}"
instruments="${INSTRUMENTS:-30}"
fsync="${APPENDFSYNC:-everysec}"
die() { echo "run_read_bench: $*" >&2; exit 1; }

if [ -d "$build" ]; then build="$(cd "$build" && pwd)"
elif [ -d "$repo/$build" ]; then build="$(cd "$repo/$build" && pwd)"
else die "no build directory '$build'"; fi
for b in labshare-inventory labshare-booking labshare-token; do
  [ -x "$build/bin/$b" ] || die "$build/bin/$b missing"
done
find_tool() {  # $1 name, $2 override
  local c
  for c in "$2" "$build/tests/$1" "$build/bin/$1" "$repo/build-release/tests/$1"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}
bench="$(find_tool read-bench "${READ_BENCH:-}")" || die "no read-bench (build the read-bench target)"
load="$(find_tool booking-load "${BOOKING_LOAD:-}")" || die "no booking-load (build the booking-load target)"
grep -qs '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt" || echo "run_read_bench: warning: $build is not a Release build" >&2

work="$(mktemp -d /tmp/read-bench.XXXXXX)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${keep_logs:-0}" = 1 ]; then echo "run_read_bench: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_listening() {
  local log="$1" pid="$2" line
  for _ in $(seq 300); do
    line="$(grep -m1 '^listening on ' "$log" 2>/dev/null || true)"
    if [ -n "$line" ]; then echo "${line#listening on }"; return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

"$repo/deploy/dev-pki.sh" "$work/pki" >/dev/null || die "deploy/dev-pki.sh failed"
tls() { echo "--tls_cert=$work/pki/$1.crt" "--tls_key=$work/pki/$1.key" "--tls_ca=$work/pki/ca.crt"; }
"$build/bin/labshare-token" --generate_key="$work/token-signing.pem" >/dev/null || die "labshare-token --generate_key failed"
"$build/bin/labshare-token" --jwks "$work/token-signing.pem" >"$work/jwks.json" || die "labshare-token --jwks failed"

mkdir -p "$work/redis"
rport="$(free_port)"
redis-server --port "$rport" --bind 127.0.0.1 --dir "$work/redis" --save '' --appendonly yes \
  --appendfsync "$fsync" --daemonize no --hash-max-listpack-value 1024 >"$work/redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$rport" ping >/dev/null 2>&1 || { keep_logs=1; die "redis-server did not start"; }

# shellcheck disable=SC2046
"$build/bin/labshare-inventory" --listen=127.0.0.1:0 --redis="127.0.0.1:$rport" \
  --jwks="$work/jwks.json" --token_signing_key_file="$work/token-signing.pem" $(tls inventory) \
  >"$work/inventory.out" 2>"$work/inventory.err" &
ipid=$!; pids+=("$ipid")
inv_addr="$(wait_listening "$work/inventory.out" "$ipid")" || { keep_logs=1; die "labshare-inventory did not start"; }
# shellcheck disable=SC2046,SC2086
"$build/bin/labshare-booking" --listen=127.0.0.1:0 --redis="127.0.0.1:$rport" --inventory="$inv_addr" \
  --jwks="$work/jwks.json" $(tls booking) ${BOOKING_FLAGS:-} >"$work/booking.out" 2>"$work/booking.err" &
bpid=$!; pids+=("$bpid")
bk_addr="$(wait_listening "$work/booking.out" "$bpid")" || { keep_logs=1; die "labshare-booking did not start"; }
token="$("$build/bin/labshare-token" --signing_key_file="$work/token-signing.pem" --user=bench-admin --org= \
  --roles=consortium_admin --ttl=1h)"
"$load" --seed --inventory="$inv_addr" --tls_ca="$work/pki/ca.crt" --token="$token" --instruments="$instruments" \
  >"$work/seed.out" 2>&1 || { keep_logs=1; cat "$work/seed.out" >&2; die "seeding failed"; }
echo "run_read_bench: services from $build, read-bench $bench; booking $bk_addr; loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$bench" --target="$bk_addr" --tls_ca="$work/pki/ca.crt" --token="$token" --instruments="$instruments" "${extra[@]}"
echo "booking's stderr: $(wc -l <"$work/booking.err") lines ($(grep -c '"msg":"rpc"' "$work/booking.err" || true) access-log lines)"
