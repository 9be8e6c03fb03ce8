#!/bin/bash
# CreateBooking throughput against the perf-reference ceiling, in one run on
# one machine.
#
# usage: tests/bench/run_booking_bench.sh [BUILD_DIR] [CONCURRENCY] [SECONDS] [-- booking-load flags...]
#   BUILD_DIR    default $BUILD_DIR or build-release (relative to the current
#                directory, else to the repository root). It must hold
#                bin/labshare-inventory, bin/labshare-booking, bin/labshare-token
#                and tests/booking-load (or bin/booking-load). Use a Release build.
#   CONCURRENCY  calls in flight, default $CONCURRENCY or 64
#   SECONDS      measured seconds, default $DURATION or 10 (after a 2 s warmup)
# Environment: SHAPE (reference: the perf-reference client's key space, 1000
#   instruments x 1000 slots of 15 min, 3 slots a booking, calendars filling up
#   as they do for the reference; sparse: 200 instruments, starts spread over
#   3000 days, 5-60 min, nearly every request accepted), WARMUP (2),
#   INSTRUMENTS (1000 for reference, 200 for sparse), THREADS (1), BUFFER_MINUTES (0),
#   APPENDFSYNC (everysec), REDIS_EXTRA (more redis-server flags for our stack only,
#   e.g. "--auto-aof-rewrite-min-size 4gb"), REPEAT (1: rounds of ours-then-reference; the ratio
#   is of the medians), PERF_REFERENCE_DIR (where build.sh/run.sh live),
#   PERF_REFERENCE_OUT (reuse built reference binaries; default: a temp dir),
#   COMMANDSTATS (non-empty: print Redis's INFO commandstats of each of our
#   rounds, counted from the end of the seeding).
#
# What it does: builds the reference (perf-reference/build.sh) into a temp
# dir; starts its own redis-server on a free loopback port (appendonly yes,
# appendfsync everysec, as the reference does), labshare-inventory and ONE
# labshare-booking; seeds the organisation, facility, instruments, user and
# rates (booking-load --seed); runs booking-load; stops all that; runs the
# reference (its run.sh steps, Redis awaited first) with the same concurrency and duration; prints both
# RESULT lines (of the last round) and ours/reference. The machine may be
# shared: each measurement logs the load average on stderr; use REPEAT=3+
# when it is not quiet. Every process it starts is stopped on exit.
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
conc="${pos[1]:-${CONCURRENCY:-64}}"
secs="${pos[2]:-${DURATION:-10}}"
warmup="${WARMUP:-2}"
shape="${SHAPE:-reference}"
case "$shape" in
  reference) instruments="${INSTRUMENTS:-1000}"; shape_flags=(--slots=1000 --slot_minutes=15 --dur_slots=3) ;;
  sparse) instruments="${INSTRUMENTS:-200}"; shape_flags=() ;;
  *) echo "run_booking_bench: SHAPE must be reference or sparse" >&2; exit 2 ;;
esac
threads="${THREADS:-1}"
buffer_min="${BUFFER_MINUTES:-0}"
fsync="${APPENDFSYNC:-everysec}"
repeat="${REPEAT:-1}"

die() { echo "run_booking_bench: $*" >&2; exit 1; }

# ---- locate things
if [ -d "$build" ]; then build="$(cd "$build" && pwd)"
elif [ -d "$repo/$build" ]; then build="$(cd "$repo/$build" && pwd)"
else die "no build directory '$build' (here or under $repo)"; fi
for b in labshare-inventory labshare-booking labshare-token; do
  [ -x "$build/bin/$b" ] || die "$build/bin/$b missing (build it: cmake --build $build)"
done
load=""
for c in "$build/tests/booking-load" "$build/bin/booking-load"; do
  [ -x "$c" ] && { load="$c"; break; }
done
[ -n "$load" ] || die "no booking-load in $build/tests or $build/bin"
if grep -qs '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt"; then :; else
  echo "run_booking_bench: warning: $build is not a Release build" >&2
fi

ref=""
for c in "${PERF_REFERENCE_DIR:-}" "$repo/../shared/perf-reference" "/work/shared/perf-reference"; do
  if [ -n "$c" ] && [ -x "$c/run.sh" ] && [ -x "$c/build.sh" ]; then ref="$(cd "$c" && pwd)"; break; fi
done
[ -n "$ref" ] || die "perf-reference not found (set PERF_REFERENCE_DIR)"
command -v redis-server >/dev/null || die "redis-server not on PATH"
command -v redis-cli >/dev/null || die "redis-cli not on PATH"

# ---- cleanup
work="$(mktemp -d /tmp/booking-bench.XXXXXX)"
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  if [ "${keep_logs:-0}" = 1 ]; then echo "run_booking_bench: logs kept in $work" >&2
  else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits for "listening on HOST:PORT" in $1 (stdout log of pid $2); prints the address.
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

# ---- reference binaries first, so compiling does not overlap a measurement
ref_out="${PERF_REFERENCE_OUT:-$work/perf-out}"
if [ ! -x "$ref_out/perf-server" ] || [ ! -x "$ref_out/perf-client" ]; then
  echo "building the reference into $ref_out ..." >&2
  "$ref/build.sh" "$ref_out" >"$work/ref-build.log" 2>&1 || { keep_logs=1; cat "$work/ref-build.log" >&2; die "reference build failed"; }
fi

# Services talk over mutual TLS: booking calls inventory as the service its
# certificate names (without one inventory refuses it: MISSING_CREDENTIALS).
"$repo/deploy/dev-pki.sh" "$work/pki" >/dev/null || die "deploy/dev-pki.sh failed"
tls() { echo "--tls_cert=$work/pki/$1.crt" "--tls_key=$work/pki/$1.key" "--tls_ca=$work/pki/ca.crt"; }

# The token issuer's key (inventory holds it) and its JWKS (every service).
"$build/bin/labshare-token" --generate_key="$work/token-signing.pem" >/dev/null || die "labshare-token --generate_key failed"
"$build/bin/labshare-token" --jwks "$work/token-signing.pem" >"$work/jwks.json" || die "labshare-token --jwks failed"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# CPU seconds (user + system) a running process has used so far.
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Server-side CPU per answered call: (CPU after - before) over the calls
# answered in warmup + measurement (qps x their seconds; the client counts
# only the measured ones).
per_call_us() { awk -v a="$1" -v b="$2" -v q="$3" -v s="$4" 'BEGIN { if (q > 0 && s > 0) printf "%.1f", (b - a) * 1e6 / (q * s); else print 0 }'; }

# ---- our stack, fresh for every round: sets $ours and $load_rc
run_ours() {
  local round="$1" dir="$work/ours-$1" rport="" rpid ok ipid inv_addr bpid bk_addr token
  mkdir -p "$dir/redis"
  for _ in 1 2 3; do
    rport="$(free_port)"
    # shellcheck disable=SC2086  # REDIS_EXTRA holds several flags
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir/redis" --save '' \
      --appendonly yes --appendfsync "$fsync" --daemonize no --hash-max-listpack-value 1024 \
      ${REDIS_EXTRA:-} >"$dir/redis.log" 2>&1 &
    rpid=$!
    ok=0
    for _ in $(seq 50); do
      redis-cli -p "$rport" ping >/dev/null 2>&1 && { ok=1; break; }
      kill -0 "$rpid" 2>/dev/null || break
      sleep 0.1
    done
    if [ $ok = 1 ]; then pids+=("$rpid"); break; fi
    kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; rport=""
  done
  [ -n "$rport" ] || { keep_logs=1; die "redis-server did not start (see $dir/redis.log)"; }

  # shellcheck disable=SC2046  # tls prints three flags
  "$build/bin/labshare-inventory" --listen=127.0.0.1:0 --redis="127.0.0.1:$rport" \
    --jwks="$work/jwks.json" --token_signing_key_file="$work/token-signing.pem" $(tls inventory) \
    >"$dir/inventory.out" 2>"$dir/inventory.err" &
  ipid=$!; pids+=("$ipid")
  inv_addr="$(wait_listening "$dir/inventory.out" "$ipid")" || { keep_logs=1; die "labshare-inventory did not start (see $dir/inventory.err)"; }

  # shellcheck disable=SC2046
  "$build/bin/labshare-booking" --listen=127.0.0.1:0 --redis="127.0.0.1:$rport" --inventory="$inv_addr" \
    --jwks="$work/jwks.json" $(tls booking) >"$dir/booking.out" 2>"$dir/booking.err" &
  bpid=$!; pids+=("$bpid")
  bk_addr="$(wait_listening "$dir/booking.out" "$bpid")" || { keep_logs=1; die "labshare-booking did not start (see $dir/booking.err)"; }

  token="$("$build/bin/labshare-token" --signing_key_file="$work/token-signing.pem" --user=bench-admin --org= \
    --roles=consortium_admin --ttl=1h)"
  [ -n "$token" ] || die "labshare-token printed nothing"

  "$load" --seed --inventory="$inv_addr" --tls_ca="$work/pki/ca.crt" --token="$token" --instruments="$instruments" \
    --buffer_minutes="$buffer_min" >"$dir/seed.out" 2>&1 || { keep_logs=1; cat "$dir/seed.out" >&2; die "seeding failed"; }

  echo "[$round] ours ($shape): booking $bk_addr, redis $rport; $instruments instruments, concurrency $conc, ${secs}s after ${warmup}s warmup; loadavg $(loadavg)" >&2
  local c_b0 c_i0 c_r0
  [ -z "${COMMANDSTATS:-}" ] || redis-cli -p "$rport" CONFIG RESETSTAT >/dev/null
  c_b0="$(cpu_of "$bpid")"; c_i0="$(cpu_of "$ipid")"; c_r0="$(cpu_of "$rpid")"
  set +e
  "$load" --target="$bk_addr" --tls_ca="$work/pki/ca.crt" --token="$token" --instruments="$instruments" --concurrency="$conc" \
    --threads="$threads" --duration="$secs" --warmup="$warmup" "${shape_flags[@]}" "${extra[@]}" \
    >"$dir/load.out" 2>"$dir/load.err"
  load_rc=$?
  set -e
  local c_b1 c_i1 c_r1 q
  c_b1="$(cpu_of "$bpid")"; c_i1="$(cpu_of "$ipid")"; c_r1="$(cpu_of "$rpid")"
  if [ -n "${COMMANDSTATS:-}" ]; then
    # Redis's own account of the round (since the seeding): calls and usec per command.
    redis-cli -p "$rport" INFO commandstats | grep '^cmdstat_' | tr -d '\r' | sed "s/^/[$round] redis commandstats: /" >&2
  fi
  ours="$(grep -m1 '^RESULT' "$dir/load.out" || true)"
  q="$(qps_of "$ours")"
  cpu_ours_server="$(per_call_us "$c_b0" "$c_b1" "$q" "$((secs + warmup))")"
  cpu_ours_inventory="$(per_call_us "$c_i0" "$c_i1" "$q" "$((secs + warmup))")"
  cpu_ours_redis="$(per_call_us "$c_r0" "$c_r1" "$q" "$((secs + warmup))")"
  if [ -s "$dir/load.err" ]; then sed 's/^/booking-load: /' "$dir/load.err" | head -20 >&2; fi
  if [ -z "$ours" ]; then keep_logs=1; die "booking-load printed no RESULT (exit $load_rc)"; fi
  [ $load_rc = 0 ] || { keep_logs=1; echo "run_booking_bench: booking-load exited $load_rc (errors above)" >&2; }
  echo "[$round] ours: $ours" >&2
  stop_all   # nothing of ours runs during the reference measurement
}

# ---- the reference: sets $theirs
run_reference() {
  local round="$1" rdir rport gport rpid spid
  echo "[$round] reference: perf-server + perf-client $conc $secs $fsync; loadavg $(loadavg)" >&2
  # The steps of the reference's run.sh with the same binaries and flags,
  # except that Redis must answer before perf-server starts: run.sh starts
  # them together and perf-server aborts when its Redis is late.
  rdir="$(mktemp -d)"; rport="$(free_port)"; gport="$(free_port)"
  redis-server --port "$rport" --bind 127.0.0.1 --dir "$rdir" --save '' \
    --appendonly yes --appendfsync "$fsync" --daemonize no >"$rdir/redis.log" 2>&1 &
  rpid=$!
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$ref_out/perf-server" --mode=callback --redis=pipe --pipe_threads=1 \
    --port="$gport" --redis_port="$rport" >"$rdir/server.log" 2>&1 &
  spid=$!
  sleep 1
  local c_s0 c_r0 c_s1 c_r1 q
  c_s0="$(cpu_of "$spid")"; c_r0="$(cpu_of "$rpid")"
  theirs="$("$ref_out/perf-client" --target="127.0.0.1:$gport" --method=book --concurrency="$conc" \
    --threads=1 --duration="$secs" --warmup=2 2>"$work/ref-run.err" | grep -m1 '^RESULT' || true)"
  c_s1="$(cpu_of "$spid")"; c_r1="$(cpu_of "$rpid")"
  q="$(qps_of "$theirs")"
  cpu_ref_server="$(per_call_us "$c_s0" "$c_s1" "$q" "$((secs + 2))")"
  cpu_ref_redis="$(per_call_us "$c_r0" "$c_r1" "$q" "$((secs + 2))")"
  kill "$spid" "$rpid" 2>/dev/null; wait "$spid" "$rpid" 2>/dev/null || true
  rm -rf "$rdir"
  [ -n "$theirs" ] || die "the reference printed no RESULT: $(tail -c 300 "$work/ref-run.err")"
  echo "[$round] reference: $theirs" >&2
}

qps_of() { grep -o ' qps=[0-9.]*' <<<" ${1#RESULT}" | head -1 | cut -d= -f2; }

# ---- rounds: ours, then the reference, REPEAT times (alternating evens out drifting machine load)
field_of() { grep -o " $2=[0-9.]*" <<<" ${1#RESULT}" | head -1 | cut -d= -f2; }
sum() { awk -v a="$1" -v b="$2" -v c="${3:-0}" -v d="${4:-0}" 'BEGIN { printf "%.1f", a + b + c + d }'; }
rc=0
q_ours_all=(); q_ref_all=(); p99_ours_all=(); p99_ref_all=(); cpu_ours_all=(); cpu_ref_all=()
for round in $(seq "$repeat"); do
  run_ours "$round"
  [ "$load_rc" = 0 ] || rc=1
  run_reference "$round"
  q_ours_all+=("$(qps_of "$ours")"); q_ref_all+=("$(qps_of "$theirs")")
  p99_ours_all+=("$(field_of "$ours" p99_us)"); p99_ref_all+=("$(field_of "$theirs" p99_us)")
  # CPU per booking, every process: client + server (+ inventory) + Redis.
  c_ours="$(sum "$(field_of "$ours" client_cpu_us_per_rpc)" "$cpu_ours_server" "$cpu_ours_inventory" "$cpu_ours_redis")"
  c_ref="$(sum "$(field_of "$theirs" client_cpu_us_per_rpc)" "$cpu_ref_server" "$cpu_ref_redis")"
  cpu_ours_all+=("$c_ours"); cpu_ref_all+=("$c_ref")
  echo "[$round] cpu per call (us): ours client $(field_of "$ours" client_cpu_us_per_rpc) + booking $cpu_ours_server + inventory $cpu_ours_inventory + redis $cpu_ours_redis = $c_ours; reference client $(field_of "$theirs" client_cpu_us_per_rpc) + server $cpu_ref_server + redis $cpu_ref_redis = $c_ref" >&2
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
q_ours="$(median "${q_ours_all[@]}")"
q_ref="$(median "${q_ref_all[@]}")"
echo "ours:      $ours"
echo "reference: $theirs"
if [ "$repeat" -gt 1 ]; then
  echo "rounds: ours qps ${q_ours_all[*]}; reference qps ${q_ref_all[*]}; medians $q_ours / $q_ref"
fi
awk -v a="$q_ours" -v b="$q_ref" 'BEGIN { if (b > 0) printf "ratio ours/reference qps: %.3f (%s / %s)\n", a / b, a, b; else print "ratio: reference qps is 0" }'
p_ours="$(median "${p99_ours_all[@]}")"; p_ref="$(median "${p99_ref_all[@]}")"
c_ours="$(median "${cpu_ours_all[@]}")"; c_ref="$(median "${cpu_ref_all[@]}")"
awk -v a="$p_ours" -v b="$p_ref" 'BEGIN { if (b > 0) printf "ratio ours/reference p99: %.2f (%s / %s us)\n", a / b, a, b }'
awk -v a="$c_ours" -v b="$c_ref" 'BEGIN { if (b > 0) printf "ratio ours/reference cpu per call: %.2f (%s / %s us, all processes)\n", a / b, a, b }'
exit $rc
