#!/bin/bash
# How long deploy/backup.sh and deploy/restore.sh take on a data set of some
# size: a redis-server (ACL users, AOF always, as deployed) on a free
# loopback port filled with N booking-like documents (a hash of ~600 bytes in
# a {bk:P} partition, its payload hex digits, a calendar entry in a sorted set, an outbox entry),
# then a snapshot, a restore into a fresh directory, and a redis-server
# started on it. Prints the numbers; asserts only that the key counts match.
#
# usage: tests/bench/backup_bench.sh [N]   (default 500000; ~1 GB of memory per million)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-500000}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
"$root/deploy/redis-acl.sh" "$work/acl" >/dev/null
export REDISCLI_AUTH; REDISCLI_AUTH="$(head -n1 "$work/acl/admin.password")"
start_redis() {  # port dir
  mkdir -p "$2"
  redis-server --port "$1" --bind 127.0.0.1 --dir "$2" --aclfile "$work/acl/users.acl" \
    --appendonly yes --appendfsync always --save '' --hash-max-listpack-value 1024 > "$2.log" 2>&1 &
  pids+=($!)
  local deadline=$(( $(date +%s) + 600 ))
  until [ "$(redis-cli -p "$1" --user admin ping 2>/dev/null)" = PONG ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { cat "$2.log"; echo "redis on $1 did not start"; exit 1; }
    sleep 0.1
  done
}
p1="$(free_port)"
start_redis "$p1" "$work/live"
t0=$(now)
fill='
local base, count = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = base, base + count - 1 do
  local p = i % 16
  local id = "b" .. i
  -- 400 bytes that compress about as well as hex digits do (RDB uses LZF).
  local h = redis.sha1hex(id)
  local pad = h .. redis.sha1hex(h .. "1") .. redis.sha1hex(h .. "2") .. redis.sha1hex(h .. "3") ..
    redis.sha1hex(h .. "4") .. redis.sha1hex(h .. "5") .. redis.sha1hex(h .. "6") .. redis.sha1hex(h .. "7") ..
    redis.sha1hex(h .. "8") .. redis.sha1hex(h .. "9")
  redis.call("HSET", "{bk:" .. p .. "}:doc:" .. id, "v", "7", "instrument", "instruments/i" .. (i % 200),
    "payer", "organizations/o" .. (i % 50), "state", "COMPLETED", "data", pad)
  redis.call("ZADD", "{bk:" .. p .. "}:cl:i" .. (i % 200), i * 900, id .. "!900 ")
  redis.call("XADD", "{bk:" .. p .. "}:outbox", "*", "type", "BookingChanged", "id", id)
end
return count'
batch=20000
for ((b = 0; b < n; b += batch)); do
  c=$(( n - b < batch ? n - b : batch ))
  redis-cli -p "$p1" --user admin eval "$fill" 0 "$b" "$c" >/dev/null
done
t1=$(now)
keys="$(redis-cli -p "$p1" --user admin dbsize)"
mem="$(redis-cli -p "$p1" --user admin info memory | tr -d '\r' | sed -n 's/^used_memory_human://p')"
echo "filled: $n bookings, $keys keys, used_memory $mem, $(secs "$t0" "$t1")s"

t0=$(now)
"$root/deploy/backup.sh" --dir="$work/backups" --port="$p1" --password_file="$work/acl/admin.password" --keep=1
t1=$(now)
snap="$(ls "$work"/backups/labshare-*.rdb)"
echo "backup: $(secs "$t0" "$t1")s, $(stat -c %s "$snap") bytes"
t0=$(now)
"$root/deploy/restore.sh" "$snap" "$work/restored"
t1=$(now)
echo "restore (checksum, check, AOF): $(secs "$t0" "$t1")s"
p2="$(free_port)"
t0=$(now)
start_redis "$p2" "$work/restored"
t1=$(now)
keys2="$(redis-cli -p "$p2" --user admin dbsize)"
echo "restored redis-server answering: $(secs "$t0" "$t1")s, $keys2 keys"
[ "$keys2" = "$keys" ] || { echo "key counts differ: $keys live, $keys2 restored"; exit 1; }
echo "RESULT bookings=$n keys=$keys snapshot_bytes=$(stat -c %s "$snap")"
