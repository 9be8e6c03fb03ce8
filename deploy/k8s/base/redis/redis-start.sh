#!/bin/sh
# Starts one Redis node of the StatefulSet redis (deploy/k8s/base/redis.yaml):
# writes its configuration into memory (the replication password must not
# land on a volume) and runs redis-server with it.
#
# Which node is the master: the one the sentinels name (they follow
# failovers); when no sentinel answers (first start, or every sentinel
# restarted), a node that reports itself master in ROLE; when there is none
# either (first start), REDIS_INITIAL_MASTER (redis-0). Every other node
# starts as its replica; Sentinel promotes a replica when the master fails
# and repoints the others.
#
# Every node: ACL users only (users.acl, deploy/redis-acl.sh), the
# append-only file fsynced on every write (appendfsync always: a node that
# dies loses no write it acknowledged), min-replicas-to-write 1 (a master
# that no replica follows within 10 s refuses writes instead of taking ones
# a failover would drop), replication as the ACL user replication, and the
# headless Service's DNS name announced so sentinels, replicas and clients
# reach it by name.
#
# Environment (the defaults are the StatefulSet's): REDIS_ANNOUNCE (this
# node's name, HOSTNAME.redis), REDIS_PORT (6379), REDIS_NODES ("host:port"
# list of every node), REDIS_INITIAL_MASTER (host:port), REDIS_SENTINELS
# ("host:port" list), REDIS_MASTER_NAME (labshare), REDIS_SECRETS (users.acl,
# replication.password, probe.password), REDIS_CONF_DIR (written), REDIS_DATA,
# REDIS_MEMORY_LIMIT (the container's memory limit in bytes; the StatefulSet
# passes limits.memory; else the cgroup's limit is read), REDIS_MAXMEMORY_PERCENT
# (60).
#
# Memory: maxmemory is REDIS_MAXMEMORY_PERCENT of the container's limit,
# with maxmemory-policy noeviction: at that size Redis refuses writes (OOM
# error to the client, nothing evicted) instead of growing until the kernel
# kills it. The rest of the limit is headroom for what maxmemory does not
# count: the copy-on-write pages of a fork (AOF rewrite, a replica's full
# synchronisation, a backup's SYNC), replication and client output buffers,
# and the AOF rewrite buffer.
set -eu
announce="${REDIS_ANNOUNCE:-$HOSTNAME.redis}"
port="${REDIS_PORT:-6379}"
nodes="${REDIS_NODES:-redis-0.redis:6379 redis-1.redis:6379 redis-2.redis:6379}"
initial="${REDIS_INITIAL_MASTER:-redis-0.redis:6379}"
sentinels="${REDIS_SENTINELS:-redis-sentinel-0.redis-sentinel:26379 redis-sentinel-1.redis-sentinel:26379 redis-sentinel-2.redis-sentinel:26379}"
master_name="${REDIS_MASTER_NAME:-labshare}"
secrets="${REDIS_SECRETS:-/etc/redis}"
conf_dir="${REDIS_CONF_DIR:-/run/redis}"
data="${REDIS_DATA:-/data}"

# The container's memory limit: the environment, else cgroup v2, else v1
# (v1 reports a huge number when there is no limit; v2 "max").
limit="${REDIS_MEMORY_LIMIT:-}"
if [ -z "$limit" ]; then
  for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    if [ -r "$f" ]; then
      limit="$(cat "$f")"
      break
    fi
  done
fi
percent="${REDIS_MAXMEMORY_PERCENT:-60}"
maxmemory=""
case "$limit" in
  ''|*[!0-9]*) echo "no memory limit found (${limit:-none}): maxmemory not set" ;;
  *)
    if [ "${#limit}" -gt 15 ]; then
      echo "no memory limit found ($limit): maxmemory not set"
    else
      maxmemory=$(( limit / 100 * percent ))
      echo "memory limit $limit bytes: maxmemory $maxmemory ($percent %)"
    fi
    ;;
esac

master=""
for s in $sentinels; do
  # Two lines, host and port; nothing when that sentinel knows no master.
  answer="$(timeout 3 redis-cli -h "${s%:*}" -p "${s##*:}" --raw sentinel get-master-addr-by-name "$master_name" 2>/dev/null)" || continue
  host="$(echo "$answer" | sed -n 1p)"
  mport="$(echo "$answer" | sed -n 2p)"
  if [ -n "$host" ] && [ -n "$mport" ]; then
    master="$host:$mport"
    echo "sentinel $s: the master is $master"
    break
  fi
done
if [ -z "$master" ]; then
  for n in $nodes; do
    [ "$n" = "$announce:$port" ] && continue
    role="$(REDISCLI_AUTH="$(cat "$secrets/probe.password")" timeout 3 redis-cli --no-auth-warning --user probe \
      -h "${n%:*}" -p "${n##*:}" --raw role 2>/dev/null | sed -n 1p)" || continue
    if [ "$role" = master ]; then
      master="$n"
      echo "no sentinel answered; $n reports itself master"
      break
    fi
  done
fi
if [ -z "$master" ]; then
  master="$initial"
  echo "no sentinel or node names a master: $master is the first"
fi

umask 077
mkdir -p "$conf_dir"
conf="$conf_dir/redis.conf"
{
  echo "port $port"
  echo "dir $data"
  echo "aclfile $secrets/users.acl"
  echo "appendonly yes"
  echo "appendfsync always"
  echo 'save ""'
  # Booking documents live in listpack hashes of up to 1 KB values
  # (docs/storage-layout-17.md).
  echo "hash-max-listpack-value 1024"
  if [ -n "$maxmemory" ]; then
    echo "maxmemory $maxmemory"
  fi
  echo "maxmemory-policy noeviction"
  echo "min-replicas-to-write 1"
  echo "min-replicas-max-lag 10"
  echo "replica-announce-ip $announce"
  echo "masteruser replication"
  echo "masterauth $(cat "$secrets/replication.password")"
  if [ "$master" != "$announce:$port" ]; then
    echo "replicaof ${master%:*} ${master##*:}"
  fi
} > "$conf"
exec redis-server "$conf"
