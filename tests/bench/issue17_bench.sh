#!/bin/bash
# Every row of issue 17's table in one run, each beside its yardstick:
# CreateBooking against ../shared/perf-reference (throughput, p99, CPU per
# booking of every process; both key-space shapes, rounds alternating ours /
# reference), booking's reads against the health Check of the same server
# (rounds alternating Check / GetBooking / ListBookings / QueryAvailability /
# SearchAvailableInstruments over 30 instruments),
# Redis memory per stored booking, the usage reports over one million events
# and the ingest rates of billing and usage. Prints each bench's own lines,
# then one summary table with the ratio and the target of every row.
#
# usage: tests/bench/issue17_bench.sh [BUILD_DIR]
#   BUILD_DIR   a Release build (default build-perf) with the targets
#               labshare-inventory labshare-booking labshare-token booking-load
#               read-bench storage-bench usage-bench ingest-bench, e.g.
#     cmake -S . -B build-perf -DCMAKE_BUILD_TYPE=Release
#     cmake --build build-perf -j2 --target labshare-inventory labshare-booking \
#       labshare-token booking-load read-bench storage-bench usage-bench ingest-bench
# Environment: REPEAT (rounds of each comparison, default 5), SECONDS_PER_ROUND
#   (CreateBooking rounds, default 10), READ_SECONDS (3), USAGE_EVENTS
#   (1000000), INGEST_EVENTS (60000), STORAGE_BOOKINGS (2000), ONLY (a
#   space-separated subset of: create read storage usage ingest).
# Takes about 25 minutes with the defaults. The machine should be quiet:
# every bench logs its load average; ratios come from the same run.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="${1:-${BUILD_DIR:-build-perf}}"
case "$build" in /*) ;; *) [ -d "$build" ] || build="$repo/$build" ;; esac
build="$(cd "$build" && pwd)" || { echo "issue17_bench: no build dir $1" >&2; exit 2; }
repeat="${REPEAT:-5}"
secs="${SECONDS_PER_ROUND:-10}"
only="${ONLY:-create read storage usage ingest}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

wants() { [[ " $only " == *" $1 "* ]]; }
bin() { for c in "$build/tests/$1" "$build/bin/$1"; do [ -x "$c" ] && { echo "$c"; return 0; }; done; echo "issue17_bench: $1 is not built in $build" >&2; return 1; }
section() { printf '\n==== %s (%s; loadavg %s)\n' "$1" "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)"; }
# The value of key=... in the first line of $1 that matches $2.
val() { grep -m1 -- "$2" "$1" 2>/dev/null | grep -o " $3=[0-9.]*" | head -1 | cut -d= -f2; }
verdict() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN { if (v == "") { print "not measured"; exit } ok = (dir == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0); print ok ? "met" : "MISSED" }'; }

rows=()
row() {  # what, measured, target op, target value
  rows+=("$(printf '| %s | %s | %s %s | %s |' "$1" "${2:-n/a}" "$3" "$4" "$(verdict "$2" "$4" "$3")")")
}

if wants create; then
  for shape in reference sparse; do
    section "CreateBooking, $shape key space, REPEAT=$repeat x ${secs}s"
    SHAPE="$shape" REPEAT="$repeat" "$here/run_booking_bench.sh" "$build" 64 "$secs" 2>&1 | tee "$out/create-$shape.txt"
    r="$(grep -m1 '^ratio ours/reference qps' "$out/create-$shape.txt" | awk '{ print $4 }')"
    p="$(grep -m1 '^ratio ours/reference p99' "$out/create-$shape.txt" | awk '{ print $4 }')"
    c="$(grep -m1 '^ratio ours/reference cpu' "$out/create-$shape.txt" | awk '{ print $6 }')"
    row "CreateBooking throughput / reference ($shape)" "$r" ">=" 0.8
    row "CreateBooking p99 / reference p99 ($shape)" "$p" "<=" 1.5
    row "CPU per booking, all processes / reference ($shape)" "$c" "<=" 1.25
  done
fi

if wants storage; then
  section "Redis memory per stored booking (storage-bench)"
  STORAGE_BENCH_BOOKINGS="${STORAGE_BOOKINGS:-2000}" "$(bin storage-bench)" 2>&1 | tee "$out/storage.txt"
  # The CreateBooking lines: everything a booking writes, in used_memory;
  # the issue's row is the stored booking once outbox retention has trimmed
  # its entry (after the window); the figure inside the window is printed too.
  b="$(grep -m1 '^RESULT per booking (CreateBooking), outbox trimmed:' "$out/storage.txt" | grep -o 'used_memory_bytes_per_item=[0-9.]*' | cut -d= -f2)"
  bo="$(grep -m1 '^RESULT per booking (CreateBooking):' "$out/storage.txt" | grep -o 'used_memory_bytes_per_item=[0-9.]*' | cut -d= -f2)"
  row "Redis bytes per stored booking (used_memory, outbox entry trimmed)" "$b" "<=" 512
  rows+=("| Redis bytes per stored booking inside the retention window (outbox entry included) | ${bo:-n/a} | | |")
fi

if wants read; then
  section "booking's reads against the health Check (read-bench)"
  "$here/run_read_bench.sh" "$build" -- --rounds="$repeat" --seconds="${READ_SECONDS:-3}" 2>&1 | tee "$out/read.txt"
  row "GetBooking / health Check" "$(val "$out/read.txt" '^RESULT get ' ratio_to_check)" ">=" 0.6
  row "ListBookings (page of 50) / health Check" "$(val "$out/read.txt" '^RESULT list ' ratio_to_check)" ">=" 0.2
  row "QueryAvailability (7 days) / health Check" "$(val "$out/read.txt" '^RESULT query ' ratio_to_check)" ">=" 0.3
  row "SearchAvailableInstruments / health Check" "$(val "$out/read.txt" '^RESULT search ' ratio_to_check)" ">=" 0.1
fi

if wants usage; then
  section "usage over ${USAGE_EVENTS:-1000000} events (usage-bench)"
  "$(bin usage-bench)" --events="${USAGE_EVENTS:-1000000}" 2>&1 | tee "$out/usage.txt"
  for report in get_usage_figures_year_all_instruments query_usage_month_by_instrument_year annual_report_first_page; do
    m="$(grep "^RESULT $report aggregates" "$out/usage.txt" | grep -o 'median_ms=[0-9.]*' | tail -1 | cut -d= -f2)"
    row "usage $report, ms (aggregates)" "$m" "<=" 100
  done
  row "usage ingest from the outbox, events/s" "$(val "$out/usage.txt" '^RESULT ingest_batched' events_per_s)" ">=" 20000
fi

if wants ingest; then
  section "billing ingest from the booking outboxes (ingest-bench)"
  "$(bin ingest-bench)" --events="${INGEST_EVENTS:-60000}" --rounds="$repeat" 2>&1 | tee "$out/ingest.txt"
  row "billing ingest from the outbox, events/s" "$(val "$out/ingest.txt" '^RESULT' batch)" ">=" 20000
fi

printf '\n==== issue 17, summary (%s, %s; loadavg at the end %s)\n\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$build" "$(cut -d' ' -f1-3 /proc/loadavg)"
echo "| row | measured | target | |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
