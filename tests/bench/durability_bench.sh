#!/bin/bash
# What durability costs: CreateBooking throughput with Redis AOF `everysec`,
# `always`, and `always` + WAIT for one replica (the Sentinel deployment:
# 1 master + 2 replicas + 3 sentinels, min-replicas-to-write 1, services
# with --redis_sentinels and --redis_wait_replicas=1), side by side in one run
# on one machine, and the ratios.
#
# usage: tests/bench/durability_bench.sh [BUILD_DIR] [CONCURRENCY] [SECONDS] [-- booking-load flags...]
#   BUILD_DIR    default $BUILD_DIR or build-release (relative to the current
#                directory, else to the repository root): bin/labshare-inventory,
#                bin/labshare-booking, bin/labshare-token and tests/booking-load
#                (or bin/booking-load). Use a Release build.
#   CONCURRENCY  calls in flight, default $CONCURRENCY or 64
#   SECONDS      measured seconds, default $DURATION or 10 (after a 2 s warmup)
# Environment: MODES (default "everysec always always+wait"), REPEAT (1:
#   rounds of all modes in turn; the ratios are of the medians), SHAPE
#   (sparse, the default: 200 instruments, nearly every request books, so
#   every call writes; reference: the perf-reference key space), WARMUP (2),
#   INSTRUMENTS, THREADS (1).
#
# Each mode gets a fresh stack: its Redis (or the Sentinel setup), one
# labshare-inventory and ONE labshare-booking over mutual TLS (certificates
# from deploy/dev-pki.sh: booking calls inventory as the service its
# certificate names), seeded with booking-load --seed, then booking-load (TLS,
# a consortium_admin token). Every process it starts is stopped on exit.
# Prints one RESULT line per mode and round, then the table and the ratios.
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
modes="${MODES:-everysec always always+wait}"
repeat="${REPEAT:-1}"
threads="${THREADS:-1}"
shape="${SHAPE:-sparse}"
case "$shape" in
  reference) instruments="${INSTRUMENTS:-1000}"; shape_flags=(--slots=1000 --slot_minutes=15 --dur_slots=3) ;;
  sparse) instruments="${INSTRUMENTS:-200}"; shape_flags=() ;;
  *) echo "durability_bench: SHAPE must be sparse or reference" >&2; exit 2 ;;
esac

die() { echo "durability_bench: $*" >&2; exit 1; }

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
if ! grep -qs '^CMAKE_BUILD_TYPE:STRING=Release$' "$build/CMakeCache.txt"; then
  echo "durability_bench: warning: $build is not a Release build" >&2
fi
command -v redis-server >/dev/null || die "redis-server not on PATH"
command -v redis-cli >/dev/null || die "redis-cli not on PATH"
for m in $modes; do
  case "$m" in everysec|always|always+wait) ;; *) die "unknown mode '$m' (everysec, always, always+wait)" ;; esac
done

work="$(mktemp -d /tmp/durability-bench.XXXXXX)"
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  stop_all
  if [ "${keep_logs:-0}" = 1 ]; then echo "durability_bench: logs kept in $work" >&2
  else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

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

# redis-server on a free port in $1 (dir) with more flags; prints the port.
# Appends the pid to $pids (so it runs in this shell: call as `start_redis ... >file`).
start_redis() {
  local dir="$1"; shift
  local port pid ok
  mkdir -p "$dir"
  for _ in 1 2 3; do
    port="$(free_port)"
    redis-server "$@" --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --daemonize no \
      >>"$dir/redis.log" 2>&1 &
    pid=$!
    ok=0
    for _ in $(seq 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && { ok=1; break; }
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if [ $ok = 1 ]; then pids+=("$pid"); started_port="$port"; return 0; fi
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  done
  keep_logs=1; die "redis-server did not start (see $dir/redis.log)"
}

# Waits until every sentinel sees the master, both replicas and the other
# sentinels (bounded).
wait_sentinels() {
  local mport="$1"; shift
  local s info
  for _ in $(seq 600); do
    local all=1
    for s in "$@"; do
      info="$(redis-cli -p "$s" sentinel master labshare 2>/dev/null | paste -sd' ' || true)"
      [[ " $info " == *" port $mport "* && " $info " == *" flags master "* && " $info " == *" num-slaves 2 "* \
        && " $info " == *" num-other-sentinels 2 "* ]] || { all=0; break; }
    done
    if [ $all = 1 ] && [ "$(redis-cli -p "$mport" info replication | grep -c 'state=online')" -ge 2 ]; then return 0; fi
    sleep 0.1
  done
  keep_logs=1; die "the Sentinel setup did not settle (see $work)"
}

"$repo/deploy/dev-pki.sh" "$work/pki" >/dev/null || die "deploy/dev-pki.sh failed"
tls() { echo "--tls_cert=$work/pki/$1.crt" "--tls_key=$work/pki/$1.key" "--tls_ca=$work/pki/ca.crt"; }
"$build/bin/labshare-token" --generate_key="$work/token-signing.pem" >/dev/null || die "labshare-token --generate_key failed"
"$build/bin/labshare-token" --jwks "$work/token-signing.pem" >"$work/jwks.json" || die "labshare-token --jwks failed"

# One measurement: sets $result.
run_mode() {
  local mode="$1" round="$2" dir="$work/$1-$2" redis_flags=() ipid bpid inv_addr bk_addr token
  mkdir -p "$dir"
  case "$mode" in
    everysec|always)
      start_redis "$dir/redis" --appendonly yes --appendfsync "$mode"
      redis_flags=(--redis="127.0.0.1:$started_port")
      ;;
    always+wait)
      local node=(--appendonly yes --appendfsync always --min-replicas-to-write 1 --min-replicas-max-lag 10
                  --repl-diskless-sync-delay 0)
      local mport sports=() i conf
      start_redis "$dir/master" "${node[@]}"; mport="$started_port"
      for i in 1 2; do start_redis "$dir/replica-$i" "${node[@]}" --replicaof 127.0.0.1 "$mport"; done
      for i in 1 2 3; do
        mkdir -p "$dir/sentinel-$i"
        conf="$dir/sentinel-$i/sentinel.conf"
        printf 'sentinel monitor labshare 127.0.0.1 %s 2\nsentinel down-after-milliseconds labshare 5000\nsentinel failover-timeout labshare 10000\n' \
          "$mport" >"$conf"
        start_redis "$dir/sentinel-$i" "$conf" --sentinel
        sports+=("$started_port")
      done
      wait_sentinels "$mport" "${sports[@]}"
      redis_flags=(--redis_sentinels="127.0.0.1:${sports[0]},127.0.0.1:${sports[1]},127.0.0.1:${sports[2]}"
                   --redis_sentinel_master=labshare --redis_wait_replicas=1)
      ;;
  esac

  # shellcheck disable=SC2046  # tls prints three flags
  "$build/bin/labshare-inventory" --listen=127.0.0.1:0 "${redis_flags[@]}" $(tls inventory) \
    --jwks="$work/jwks.json" --token_signing_key_file="$work/token-signing.pem" \
    >"$dir/inventory.out" 2>"$dir/inventory.err" &
  ipid=$!; pids+=("$ipid")
  inv_addr="$(wait_listening "$dir/inventory.out" "$ipid")" || { keep_logs=1; die "labshare-inventory did not start (see $dir/inventory.err)"; }
  # shellcheck disable=SC2046
  "$build/bin/labshare-booking" --listen=127.0.0.1:0 "${redis_flags[@]}" --inventory="$inv_addr" $(tls booking) \
    --jwks="$work/jwks.json" >"$dir/booking.out" 2>"$dir/booking.err" &
  bpid=$!; pids+=("$bpid")
  bk_addr="$(wait_listening "$dir/booking.out" "$bpid")" || { keep_logs=1; die "labshare-booking did not start (see $dir/booking.err)"; }

  token="$("$build/bin/labshare-token" --signing_key_file="$work/token-signing.pem" --user=bench-admin --org= \
    --roles=consortium_admin --ttl=1h)"
  "$load" --seed --inventory="$inv_addr" --tls_ca="$work/pki/ca.crt" --token="$token" --instruments="$instruments" \
    >"$dir/seed.out" 2>&1 || { keep_logs=1; cat "$dir/seed.out" >&2; die "seeding failed ($mode)"; }

  echo "[$round] $mode: concurrency $conc, ${secs}s after ${warmup}s warmup; loadavg $(loadavg)" >&2
  set +e
  "$load" --target="$bk_addr" --tls_ca="$work/pki/ca.crt" --token="$token" --instruments="$instruments" --concurrency="$conc" \
    --threads="$threads" --duration="$secs" --warmup="$warmup" "${shape_flags[@]}" "${extra[@]}" \
    >"$dir/load.out" 2>"$dir/load.err"
  local rc=$?
  set -e
  result="$(grep -m1 '^RESULT' "$dir/load.out" || true)"
  if [ -s "$dir/load.err" ]; then sed 's/^/booking-load: /' "$dir/load.err" | head -5 >&2; fi
  [ -n "$result" ] || { keep_logs=1; die "booking-load printed no RESULT ($mode, exit $rc)"; }
  [ $rc = 0 ] || { keep_logs=1; bench_rc=1; echo "durability_bench: booking-load exited $rc ($mode)" >&2; }
  echo "[$round] $mode: $result" >&2
  stop_all
}

qps_of() { grep -o ' qps=[0-9.]*' <<<" ${1#RESULT}" | head -1 | cut -d= -f2; }
field_of() { grep -o " $2=[0-9.]*" <<<" ${1#RESULT}" | head -1 | cut -d= -f2; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

bench_rc=0
declare -A qps p50 p99
for round in $(seq "$repeat"); do
  for m in $modes; do
    run_mode "$m" "$round"
    qps[$m]="${qps[$m]:-} $(qps_of "$result")"
    p50[$m]="${p50[$m]:-} $(field_of "$result" p50_us)"
    p99[$m]="${p99[$m]:-} $(field_of "$result" p99_us)"
  done
done

echo "CreateBooking, one booking replica, concurrency $conc, ${secs}s, shape $shape, $repeat round(s); loadavg $(loadavg)"
printf '%-12s %10s %10s %10s  %s\n' mode qps p50_us p99_us "rounds (qps)"
declare -A med
for m in $modes; do
  # shellcheck disable=SC2086  # word lists
  med[$m]="$(median ${qps[$m]})"
  # shellcheck disable=SC2086
  printf '%-12s %10s %10s %10s  %s\n' "$m" "${med[$m]}" "$(median ${p50[$m]})" "$(median ${p99[$m]})" "${qps[$m]# }"
done
ratio() {
  [ -n "${med[$1]:-}" ] && [ -n "${med[$2]:-}" ] || return 0
  awk -v a="${med[$1]}" -v b="${med[$2]}" -v n="$1/$2" 'BEGIN { if (b > 0) printf "ratio %s qps: %.3f (%s / %s)\n", n, a / b, a, b }'
}
ratio always everysec
ratio always+wait everysec
ratio always+wait always
exit $bench_rc
