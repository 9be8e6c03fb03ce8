#!/bin/bash
# The demo scenario with every process on its own network host: Redis and
# each of the four services in a network namespace of their own, joined by
# veth pairs to a bridge on a private test subnet that this test creates
# (and removes). The services talk to Redis and to inventory over those
# addresses, and the client and the OpenID provider (this shell's root
# namespace, on the bridge) reach them over the bridge; nothing listens on
# loopback, so TLS is required: every service has its certificate (SPIFFE
# URI SAN and its address) from deploy/make-secrets.sh, Redis its ACL users
# (plaintext on the test subnet: the Redis client has no TLS), and the demo
# personas sign in with labshare login.
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

export LABSHARE_CLOCK_FILE="$work/clock"
echo 2027-03-01T08:00:00+08:00 > "$LABSHARE_CLOCK_FILE"
mkdir -p "$work/data"
sans=("IP:$net.1")
for h in "${hosts[@]}"; do sans+=("IP:${addr[$h]}"); done
secrets="$work/secrets"
pki="$secrets/pki"
LABSHARE_BIN="$bin" "$root/deploy/make-secrets.sh" "$secrets" "${sans[@]}"
# The test runs as root: the processes get keys only they could read anyway.

ip netns exec "$id-redis" redis-server --bind "${addr[redis]}" --port 6379 --save '' --appendonly no \
  --protected-mode no --aclfile "$secrets/redis/users.acl" > "$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Ready to accept" "$work/redis.log" && break; sleep 0.1; done

[ -d "$root/deploy/oidc/node_modules" ] || (cd "$root/deploy/oidc" && npm ci --no-audit --no-fund --silent)
node "$root/deploy/oidc/server.mjs" --listen="$net.1:0" --accounts="$root/deploy/oidc/demo-accounts.json" \
  --tls_cert="$pki/oidc.crt" --tls_key="$pki/oidc.key" > "$work/oidc.out" 2> "$work/oidc.log" &
pids+=($!)
for _ in $(seq 300); do grep -q "^listening on" "$work/oidc.out" 2>/dev/null && break; sleep 0.1; done
issuer="$(sed -n 's/^listening on //p' "$work/oidc.out")"
[ -n "$issuer" ] || { echo "the OpenID provider did not start"; cat "$work/oidc.log"; exit 1; }

start() {  # host port [flags]
  local h=$1 port=$2; shift 2
  ip netns exec "$id-$h" "$bin/labshare-$h" --listen="${addr[$h]}:$port" \
    --tls_cert="$pki/$h.crt" --tls_key="$pki/$h.key" --tls_ca="$pki/ca.crt" --jwks="$secrets/jwks.json" \
    --redis="${addr[redis]}:6379" --redis_user="$h" --redis_password_file="$secrets/redis/$h.password" \
    --clock_file="$LABSHARE_CLOCK_FILE" "$@" > "$work/$h.out" 2> "$work/$h.log" &
  pids+=($!)
}
start inventory 50051 --token_signing_key_file="$secrets/token-signing.pem" --oidc_issuer="$issuer" \
  --oidc_ca_file="$pki/ca.crt"
start booking 50052 --inventory="${addr[inventory]}:50051" --sweep_interval=1s --inventory_cache_ttl=0s
start billing 50053 --inventory="${addr[inventory]}:50051" --lease_period_interval=1s
start usage 50054 --audit_signing_key_file="$secrets/audit-signing.pem"
for h in inventory booking billing usage; do
  for _ in $(seq 300); do grep -q "^listening on" "$work/$h.out" 2>/dev/null && break; sleep 0.1; done
  echo "$h in netns $id-$h: $(head -1 "$work/$h.out")"
  grep -q "listening on ${addr[$h]}:" "$work/$h.out" || { echo "$h did not start"; cat "$work/$h.log"; exit 1; }
done
# Each port speaks TLS with the service's own certified identity.
for h in inventory booking billing usage; do
  port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$work/$h.out" | head -1)
  echo | timeout 10 openssl s_client -connect "${addr[$h]}:$port" -CAfile "$pki/ca.crt" -verify_return_error \
    > "$work/$h.tls" 2>&1 || true
  openssl x509 -noout -ext subjectAltName < "$work/$h.tls" 2>/dev/null | grep -q "URI:spiffe://labshare/$h" ||
    { echo "$h: no TLS with its certificate on ${addr[$h]}:$port"; cat "$work/$h.tls"; exit 1; }
done
cat > "$work/labshare.conf" <<CONF
inventory = ${addr[inventory]}:50051
booking = ${addr[booking]}:50052
billing = ${addr[billing]}:50053
usage = ${addr[usage]}:50054
tls_ca = $pki/ca.crt
issuer = $issuer
oidc_ca_file = $pki/ca.crt
CONF
export LABSHARE_CONFIG="$work/labshare.conf" LABSHARE_TLS_CA="$pki/ca.crt" LABSHARE_ISSUER="$issuer"
# Booking is ready once its Redis and inventory (its dependency) answer.
ready=0
for _ in $(seq 100); do
  if "$bin/labshare" health "${addr[booking]}:50052" > "$work/health.out" 2>&1; then ready=1; break; fi
  sleep 0.1
done
cat "$work/health.out"
[ $ready = 1 ] || { echo "booking did not become ready"; exit 1; }
# Bootstrap (as run-local.sh): the demo data with a short-lived admin token
# minted from the signing key; the personas then sign in.
export LABSHARE_TOKEN="$("$bin/labshare-token" --signing_key_file="$secrets/token-signing.pem" \
  --user=admin --org=zju --roles=consortium_admin --ttl=10m)"
"$bin/labshare-demo-seed" --inventory="${addr[inventory]}:50051" --tls_ca="$pki/ca.crt" \
  --clock_file="$LABSHARE_CLOCK_FILE"
LABSHARE_BIN="$bin" LABSHARE_DATA_DIR="$work/data" "$root/deploy/demo-extras.sh"
unset LABSHARE_TOKEN
out="$work/out"
if ! LABSHARE_BIN="$bin" "$root/deploy/demo-scenario.sh" > "$out" 2>&1; then
  cat "$out"
  for h in inventory booking billing usage; do echo "--- $h"; tail -20 "$work/$h.log"; done
  echo "--- oidc"; tail -20 "$work/oidc.log"
  exit 1
fi
cat "$out"
source "$here/expect_demo.sh"
exit $fail
