#!/bin/bash
# The Kubernetes Redis start scripts (deploy/k8s/base/redis/redis-start.sh
# and sentinel-start.sh), run as they are on this machine: three Redis
# nodes and three sentinels on free loopback ports (the name "localhost"
# stands for the pods' DNS names), with the ACL of deploy/redis-acl.sh.
# Checks: redis-0 starts as master with two online replicas (as the ACL
# user replication), every node with appendfsync always,
# min-replicas-to-write 1 and maxmemory 60 % of REDIS_MEMORY_LIMIT (noeviction); the sentinels (ACL user sentinel) find each
# other; a service user writes and WAITs for a replica; kill -9 of the
# master promotes a replica (prints the seconds until the sentinels name
# it and until a write succeeds), the acknowledged key is on it; the old
# master, started again by its script, asks the sentinels and comes back as
# a replica of the new one; no node logged an ACL refusal.
# usage: tests/deploy/redis_ha_scripts_test.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
scripts="$root/deploy/k8s/base/redis"
work="$(mktemp -d /tmp/labshare-redis-ha-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -5 "$f"; done; exit 1; }

bash "$root/deploy/redis-acl.sh" "$work/acl" >/dev/null
mkdir -p "$work/sentinel-secret"
cp "$work/acl/sentinel.password" "$work/sentinel-secret/"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -a rp sp np
for i in 0 1 2; do rp[$i]=$(free_port); sp[$i]=$(free_port); done
nodes="localhost:${rp[0]} localhost:${rp[1]} localhost:${rp[2]}"
sentinels="localhost:${sp[0]} localhost:${sp[1]} localhost:${sp[2]}"

start_node() {  # index
  local i=$1
  mkdir -p "$work/data$i"
  REDIS_MEMORY_LIMIT=4294967296 REDIS_ANNOUNCE=localhost REDIS_PORT=${rp[$i]} REDIS_NODES="$nodes" REDIS_INITIAL_MASTER="localhost:${rp[0]}" \
    REDIS_SENTINELS="$sentinels" REDIS_SECRETS="$work/acl" REDIS_CONF_DIR="$work/conf$i" REDIS_DATA="$work/data$i" \
    sh "$scripts/redis-start.sh" >>"$work/redis$i.log" 2>&1 &
  np[$i]=$!
  pids+=($!)
}
start_sentinel() {  # index
  local i=$1
  SENTINEL_ANNOUNCE=localhost SENTINEL_PORT=${sp[$i]} SENTINEL_PEERS="$sentinels" REDIS_NODES="$nodes" \
    REDIS_INITIAL_MASTER="localhost:${rp[0]}" SENTINEL_SECRETS="$work/sentinel-secret" \
    SENTINEL_CONF_DIR="$work/sentinel$i" SENTINEL_DOWN_AFTER_MS="${LABSHARE_HA_DOWN_AFTER_MS:-1000}" SENTINEL_FAILOVER_TIMEOUT_MS=2000 \
    sh "$scripts/sentinel-start.sh" >>"$work/sentinel$i.log" 2>&1 &
  pids+=($!)
}
as() {  # user port args...: redis-cli as an ACL user
  REDISCLI_AUTH="$(cat "$work/acl/$1.password")" redis-cli --no-auth-warning --user "$1" -p "$2" "${@:3}"
}
wait_until() {  # condition what: polls every 0.1 s, 30 s at most
  for _ in $(seq 300); do
    if eval "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$2"
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
master_port() { redis-cli -p "${sp[$1]}" sentinel get-master-addr-by-name labshare 2>/dev/null | tail -1; }

for i in 0 1 2; do start_node "$i"; done
for i in 0 1 2; do start_sentinel "$i"; done
wait_until '[ "$(as admin ${rp[0]} info replication | grep -c "^slave[0-9]:ip=localhost,.*state=online")" = 2 ]' \
  "redis-0 with two online replicas"
for i in 0 1 2; do
  [ "$(as admin "${rp[$i]}" config get appendfsync | tail -1)" = always ] || fail "node $i: appendfsync"
  [ "$(as admin "${rp[$i]}" config get min-replicas-to-write | tail -1)" = 1 ] || fail "node $i: min-replicas-to-write"
  [ "$(as admin "${rp[$i]}" config get masteruser | tail -1)" = replication ] || fail "node $i: masteruser"
  # 60 % of the 4 GiB limit: Redis refuses writes before the kernel kills it.
  [ "$(as admin "${rp[$i]}" config get maxmemory | tail -1)" = 2576980320 ] || fail "node $i: maxmemory"
  [ "$(as admin "${rp[$i]}" config get maxmemory-policy | tail -1)" = noeviction ] || fail "node $i: maxmemory-policy"
done
echo "redis-0 master, 2 replicas online; every node appendfsync always, min-replicas-to-write 1, masteruser replication," \
  "maxmemory 60 % of the memory limit, noeviction"
for i in 0 1 2; do
  wait_until "[ \"\$(redis-cli -p ${sp[$i]} sentinel master labshare | sed -n '/^num-other-sentinels\$/{n;p}')\" = 2 ]" \
    "sentinel $i sees the two others"
  [ "$(master_port "$i")" = "${rp[0]}" ] || fail "sentinel $i: master"
  # Both replicas known from the start (known-replica), not only once the
  # master's INFO names them: a replica unknown at a failover is never
  # repointed, and the new master (min-replicas-to-write 1) takes no write.
  [ "$(redis-cli -p "${sp[$i]}" sentinel replicas labshare | grep -cx 'localhost:[0-9]*')" = 2 ] \
    || fail "sentinel $i knows both replicas"
done
echo "3 sentinels, each sees 2 others, knows both replicas and names redis-0 the master"
[ "$(as booking "${rp[0]}" set '{bk:1}:acknowledged' yes)" = OK ] || fail "booking: SET"
[ "$(as booking "${rp[0]}" wait 1 5000)" -ge 1 ] || fail "booking: WAIT 1"
[ "$(as booking "${rp[0]}" role | head -1)" = master ] || fail "booking: ROLE"
echo "booking: SET, WAIT 1 (a replica has it), ROLE: ok"

t0=$(now_ms)
kill -9 "${np[0]}"
wait_until '[ -n "$(master_port 1)" ] && [ "$(master_port 1)" != "${rp[0]}" ]' "a replica promoted"
t1=$(now_ms)
new="$(master_port 1)"
for i in 0 2; do wait_until '[ "$(master_port '"$i"')" = "$new" ]' "sentinel $i names the new master"; done
wait_until '[ "$(as booking "$new" set "{bk:1}:after" yes)" = OK ]' "a write on the new master"
t2=$(now_ms)
[ "$(as booking "$new" get '{bk:1}:acknowledged')" = yes ] || fail "the acknowledged key on the new master"
echo "kill -9 of the master: sentinels named the new master after $(( (t1 - t0) / 1000 )).$(printf %03d $(( (t1 - t0) % 1000 ))) s," \
  "writes succeed again after $(( (t2 - t0) / 1000 )).$(printf %03d $(( (t2 - t0) % 1000 ))) s (down-after ${LABSHARE_HA_DOWN_AFTER_MS:-1000} ms); acknowledged key kept"

start_node 0
wait_until '[ "$(as probe ${rp[0]} role | head -1)" = slave ]' "the old master back as a replica"
[ "$(as probe "${rp[0]}" role | sed -n 3p)" = "$new" ] || fail "the old master replicates the new one"
grep -q "the master is localhost:$new" "$work/redis0.log" || fail "redis-start.sh asked the sentinels"
wait_until '[ "$(as admin ${rp[0]} get "{bk:1}:after")" = yes ]' "the old master caught up"
echo "the old master restarted by redis-start.sh: replica of the new master (asked the sentinels), caught up"

for i in 0 1 2; do
  log="$(as admin "${rp[$i]}" acl log)"
  [ -z "$log" ] || fail "node $i: ACL LOG not empty: $log"
done
echo "ACL LOG empty on every node (replication and sentinel users suffice)"
echo "1 passed, 0 failed"
