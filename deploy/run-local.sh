#!/bin/bash
# Starts the whole platform on this machine: installs what is missing,
# builds (Release), starts Redis (append-only file on) and the four
# services, loads the demo consortium, prints how to talk to it, and runs
# until Ctrl-C, then stops everything gracefully.
#
# usage: deploy/run-local.sh [--fresh] [--then COMMAND]
#   --fresh         start from empty data
#   --then COMMAND  run COMMAND (e.g. deploy/demo-scenario.sh) once the
#                   platform is up, then stop everything and exit with its code
#
# Ports: LABSHARE_BASE_PORT (default 50051) for inventory, +1 booking,
# +2 billing, +3 usage; metrics on +100..+103; Redis on LABSHARE_REDIS_PORT
# (default 56379). Data lives in LABSHARE_DATA_DIR (default deploy/.data).
# LABSHARE_BUILD_DIR: where the binaries are (default build-release, built
# here unless LABSHARE_NO_BUILD=1). LABSHARE_CLOCK_FILE: demo time; every
# service reads "now" from that file (deploy/demo-scenario.sh moves it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${LABSHARE_BUILD_DIR:-$root/build-release}"
base="${LABSHARE_BASE_PORT:-50051}"
redis_port="${LABSHARE_REDIS_PORT:-56379}"
data="${LABSHARE_DATA_DIR:-$root/deploy/.data}"
then_cmd=""
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh) rm -rf "$data" ;;
    --then) then_cmd="$2"; shift ;;
    *) echo "usage: $0 [--fresh] [--then COMMAND]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$data"

if [ "${LABSHARE_NO_BUILD:-0}" != 1 ]; then
  "$root/deploy/install-deps.sh"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLABSHARE_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" -j2 --target labshare-inventory labshare-booking labshare-billing \
    labshare-usage labshare-token labshare-demo-seed labshare
fi
clock=()
if [ -n "${LABSHARE_CLOCK_FILE:-}" ]; then
  # Demo time starts on Monday 2027-03-01, 08:00 in Shanghai.
  [ -s "$LABSHARE_CLOCK_FILE" ] || echo 2027-03-01T08:00:00+08:00 > "$LABSHARE_CLOCK_FILE"
  clock=(--clock_file="$LABSHARE_CLOCK_FILE")
fi

# The token signing key (only inventory reads it) and the JWKS every service
# verifies with: generated once, kept with the data, never in the source.
if [ ! -s "$data/token-signing.pem" ]; then
  "$build/bin/labshare-token" --generate_key="$data/token-signing.pem" >/dev/null
fi
"$build/bin/labshare-token" --jwks "$data/token-signing.pem" > "$data/jwks.json"
export LABSHARE_TOKEN_SIGNING_KEY_FILE="$data/token-signing.pem"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo "stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$data" --appendonly yes \
  --appendfsync everysec --save '' >"$data/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

start() {  # name port_offset [extra flags]
  local name=$1 off=$2; shift 2
  "$build/bin/labshare-$name" --listen="127.0.0.1:$((base + off))" \
    --redis="127.0.0.1:$redis_port" --metrics_listen="127.0.0.1:$((base + 100 + off))" --jwks="$data/jwks.json" "${clock[@]}" "$@" \
    >"$data/$name.out" 2>"$data/$name.log" &
  pids+=($!)
}
start inventory 0 --token_signing_key_file="$data/token-signing.pem"
start booking 1 --inventory="127.0.0.1:$base" ${LABSHARE_CLOCK_FILE:+--sweep_interval=1s --inventory_cache_ttl=0s}
start billing 2 --inventory="127.0.0.1:$base" ${LABSHARE_CLOCK_FILE:+--lease_period_interval=1s}
start usage 3
for name in inventory booking billing usage; do
  for _ in $(seq 100); do grep -q "^listening on" "$data/$name.out" 2>/dev/null && break; sleep 0.1; done
  echo "$name: $(head -1 "$data/$name.out")  (logs: $data/$name.log)"
done

"$build/bin/labshare-demo-seed" --inventory="127.0.0.1:$base" --token_signing_key_file="$data/token-signing.pem" "${clock[@]}"
admin_token="$("$build/bin/labshare-token" --signing_key_file="$data/token-signing.pem" --user=admin --org=zju \
  --roles=consortium_admin --ttl=1h)"
export LABSHARE_INVENTORY="127.0.0.1:$base" LABSHARE_BOOKING="127.0.0.1:$((base + 1))"
export LABSHARE_BILLING="127.0.0.1:$((base + 2))" LABSHARE_USAGE="127.0.0.1:$((base + 3))"
LABSHARE_BIN="$build/bin" LABSHARE_DATA_DIR="$data" "$root/deploy/demo-extras.sh"
if [ -n "$then_cmd" ]; then
  set +e
  LABSHARE_BIN="$build/bin" bash -c "$then_cmd"
  rc=$?
  exit $rc
fi
cat <<MSG

LabShare is running. Redis on 127.0.0.1:$redis_port (append-only file in $data).
An admin token (1 h; people sign in with \`labshare login\`):  export TOKEN=$admin_token
Try the client (addresses come from the environment, see README):
  export LABSHARE_INVENTORY=127.0.0.1:$base LABSHARE_BOOKING=127.0.0.1:$((base + 1)) \\
         LABSHARE_BILLING=127.0.0.1:$((base + 2)) LABSHARE_USAGE=127.0.0.1:$((base + 3)) LABSHARE_TOKEN=\$TOKEN
  $build/bin/labshare inventory ListInstruments
Every service serves gRPC reflection and health. Metrics: http://127.0.0.1:$((base + 100))/metrics
Press Ctrl-C to stop.
MSG
wait "${pids[1]}"
