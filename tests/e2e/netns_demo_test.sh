#!/bin/bash
# The demo scenario with every process on its own network host: Redis and
# each of the four services in a network namespace of their own, joined by
# veth pairs to a bridge on a private test subnet that this test creates
# (and removes). The services talk to Redis and to inventory over those
# addresses, and the client (this shell, in the root namespace) reaches
# them over the bridge; nothing listens on loopback.
#
# usage: tests/e2e/netns_demo_test.sh BUILD_DIR   (needs root: ip netns)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)"
bin="$build/bin"
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
  echo "needs root and iproute2 (ip netns)"; exit 1
fi

id="ls$$"                       # names unique to this run
net="10.213.$(( $$ % 200 + 20 ))"  # a private /24 of our own for this run
bridge="${id}br"
work="$(mktemp -d)"
hosts=(redis inventory booking billing usage)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for h in "${hosts[@]}"; do ip netns delete "$id-$h" 2>/dev/null || true; done
  ip link delete "$bridge" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
declare -A addr
n=10
for h in "${hosts[@]}"; do
  ns="$id-$h"
  ip netns add "$ns"
  ip link add "${id}${n}a" type veth peer name "${id}${n}b"
  ip link set "${id}${n}b" netns "$ns"
  ip link set "${id}${n}a" master "$bridge" up
  ip -n "$ns" addr add "$net.$n/24" dev "${id}${n}b"
  ip -n "$ns" link set "${id}${n}b" up
  ip -n "$ns" link set lo up
  addr[$h]="$net.$n"
  n=$((n + 1))
done

export LABSHARE_TOKEN_SIGNING_KEY_FILE="$work/token-signing.pem"
"$bin/labshare-token" --generate_key="$LABSHARE_TOKEN_SIGNING_KEY_FILE" >/dev/null
"$bin/labshare-token" --jwks "$LABSHARE_TOKEN_SIGNING_KEY_FILE" > "$work/jwks.json"
export LABSHARE_CLOCK_FILE="$work/clock"
echo 2027-03-01T08:00:00+08:00 > "$LABSHARE_CLOCK_FILE"
mkdir -p "$work/data"

ip netns exec "$id-redis" redis-server --bind "${addr[redis]}" --port 6379 --save '' --appendonly no \
  --protected-mode no > "$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -h "${addr[redis]}" ping >/dev/null 2>&1 && break; sleep 0.1; done

start() {  # host port [flags]
  local h=$1 port=$2; shift 2
  ip netns exec "$id-$h" "$bin/labshare-$h" --listen="${addr[$h]}:$port" --redis="${addr[redis]}:6379" \
    --clock_file="$LABSHARE_CLOCK_FILE" --jwks="$work/jwks.json" "$@" > "$work/$h.out" 2> "$work/$h.log" &
  pids+=($!)
}
start inventory 50051 --token_signing_key_file="$LABSHARE_TOKEN_SIGNING_KEY_FILE"
start booking 50052 --inventory="${addr[inventory]}:50051" --sweep_interval=1s --inventory_cache_ttl=0s
start billing 50053 --inventory="${addr[inventory]}:50051" --lease_period_interval=1s
start usage 50054
for h in inventory booking billing usage; do
  for _ in $(seq 300); do grep -q "^listening on" "$work/$h.out" 2>/dev/null && break; sleep 0.1; done
  echo "$h in netns $id-$h: $(head -1 "$work/$h.out")"
  grep -q "listening on ${addr[$h]}:" "$work/$h.out" || { echo "$h did not start"; cat "$work/$h.log"; exit 1; }
done
export LABSHARE_INVENTORY="${addr[inventory]}:50051" LABSHARE_BOOKING="${addr[booking]}:50052"
export LABSHARE_BILLING="${addr[billing]}:50053" LABSHARE_USAGE="${addr[usage]}:50054"
"$bin/labshare" health "$LABSHARE_BOOKING"
"$bin/labshare-demo-seed" --inventory="$LABSHARE_INVENTORY" --clock_file="$LABSHARE_CLOCK_FILE" \
  --token_signing_key_file="$LABSHARE_TOKEN_SIGNING_KEY_FILE"
LABSHARE_BIN="$bin" LABSHARE_DATA_DIR="$work/data" "$root/deploy/demo-extras.sh"
out="$work/out"
if ! LABSHARE_BIN="$bin" "$root/deploy/demo-scenario.sh" > "$out" 2>&1; then
  cat "$out"
  for h in inventory booking billing usage; do echo "--- $h"; tail -20 "$work/$h.log"; done
  exit 1
fi
cat "$out"
source "$here/expect_demo.sh"
exit $fail
