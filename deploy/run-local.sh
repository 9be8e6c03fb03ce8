#!/bin/bash
# Starts the whole platform on this machine: installs what is missing,
# builds (Release), starts Redis (append-only file on) and the four
# services, loads the demo consortium, prints how to talk to it, and runs
# until Ctrl-C, then stops everything gracefully.
#
# Ports: LABSHARE_BASE_PORT (default 50051) for inventory, +1 booking,
# +2 billing, +3 usage; metrics on +100..+103; Redis on LABSHARE_REDIS_PORT
# (default 56379). Data lives in deploy/.data (removed with --fresh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${LABSHARE_BUILD_DIR:-$root/build-release}"
base="${LABSHARE_BASE_PORT:-50051}"
redis_port="${LABSHARE_REDIS_PORT:-56379}"
data="$root/deploy/.data"
[ "${1:-}" = "--fresh" ] && rm -rf "$data"
mkdir -p "$data"

"$root/deploy/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLABSHARE_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target labshare-inventory labshare-booking labshare-billing \
  labshare-usage labshare-token labshare-demo-seed

# The signing key: generated once, kept with the data, never in the source.
if [ ! -s "$data/token.key" ]; then
  (umask 077; "$build/bin/labshare-token" --generate_key > "$data/token.key")
fi
export LABSHARE_TOKEN_KEY="$(cat "$data/token.key")"

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
    --redis="127.0.0.1:$redis_port" --metrics_listen="127.0.0.1:$((base + 100 + off))" "$@" \
    >"$data/$name.out" 2>"$data/$name.log" &
  pids+=($!)
}
start inventory 0
start booking 1 --inventory="127.0.0.1:$base"
start billing 2 --inventory="127.0.0.1:$base"
start usage 3
for name in inventory booking billing usage; do
  for _ in $(seq 100); do grep -q "^listening on" "$data/$name.out" 2>/dev/null && break; sleep 0.1; done
  echo "$name: $(head -1 "$data/$name.out")  (logs: $data/$name.log)"
done

"$build/bin/labshare-demo-seed" --inventory="127.0.0.1:$base"
admin_token="$("$build/bin/labshare-token" --user=admin --org=zju --roles=consortium_admin --ttl=24h)"
cat <<MSG

LabShare is running. Redis on 127.0.0.1:$redis_port (append-only file in $data).
An admin token (24 h):  export TOKEN=$admin_token
Every service serves gRPC reflection and health, so any reflection-aware gRPC
client can call it with the header 'authorization: Bearer \$TOKEN'.
Metrics: http://127.0.0.1:$((base + 100))/metrics
Press Ctrl-C to stop.
MSG
wait "${pids[1]}"
