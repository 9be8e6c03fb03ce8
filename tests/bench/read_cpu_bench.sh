#!/bin/bash
# CPU per call of booking's read RPCs, per process (booking, Redis, the
# client, inventory), for before/after comparisons of two builds: throughput
# on a shared 2-core machine drifts by tens of per cent, CPU time per call
# much less. Runs tests/bench/run_read_bench.sh with one long round of one
# RPC (--only) and reads each process's CPU time (/proc/PID/stat) over 6
# seconds in the middle of it.
#
# usage: tests/bench/read_cpu_bench.sh BUILD_DIR KIND [ROUNDS]
#   BUILD_DIR  a Release build (as run_read_bench.sh wants it)
#   KIND       check | get | list | query | search
#   ROUNDS     how many times (default 1); alternate two builds yourself:
#     for i in 1 2 3; do for b in OLD NEW; do tests/bench/read_cpu_bench.sh $b list; done; done
# Prints per round:
#   <kind> <build> calls/s=<n> us per call: booking <> redis <> client <> inventory <>
# Run it on a machine doing nothing else (under `flock /work/bench.lock` where
# benches share a machine).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$(cd "${1:?usage: read_cpu_bench.sh BUILD_DIR KIND [ROUNDS]}" && pwd)"
kind="${2:?usage: read_cpu_bench.sh BUILD_DIR KIND [ROUNDS]}"
rounds="${3:-1}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cpu() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"; }
for _ in $(seq "$rounds"); do
  "$here/run_read_bench.sh" "$build" -- --rounds=1 --seconds=12 --fill=5000 --only="$kind" >"$log" 2>&1 &
  bench=$!
  for _ in $(seq 600); do grep -q '^filled' "$log" 2>/dev/null && break; sleep 0.1; done
  sleep 3  # into the measured round
  # This run's processes: run_read_bench.sh's children.
  bk="$(pgrep -P "$bench" -f "$build/bin/labshare-booking")"
  inv="$(pgrep -P "$bench" -f "$build/bin/labshare-inventory")"
  client="$(pgrep -P "$bench" -f "read-bench --target")"
  redis="$(pgrep -P "$bench" -x redis-server)"
  a=("$(cpu "$bk")" "$(cpu "$redis")" "$(cpu "$client")" "$(cpu "$inv")")
  sleep 6
  b=("$(cpu "$bk")" "$(cpu "$redis")" "$(cpu "$client")" "$(cpu "$inv")")
  wait "$bench"
  q="$(grep "^RESULT $kind " "$log" | grep -o 'calls_per_s=[0-9]*' | cut -d= -f2)"
  awk -v k="$kind" -v d="$build" -v q="$q" -v a0="${a[0]}" -v b0="${b[0]}" -v a1="${a[1]}" -v b1="${b[1]}" \
    -v a2="${a[2]}" -v b2="${b[2]}" -v a3="${a[3]}" -v b3="${b[3]}" 'BEGIN {
      n = q * 6
      printf "%s %s calls/s=%d us per call: booking %.1f redis %.1f client %.1f inventory %.1f\n", k, d, q,
        (b0 - a0) * 1e6 / n, (b1 - a1) * 1e6 / n, (b2 - a2) * 1e6 / n, (b3 - a3) * 1e6 / n }'
done
