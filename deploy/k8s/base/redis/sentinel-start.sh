#!/bin/sh
# Starts one Redis Sentinel of the StatefulSet redis-sentinel
# (deploy/k8s/base/redis.yaml). Sentinel rewrites its configuration file,
# so it lives in a writable emptyDir; a restarted sentinel starts from the
# master its peers know (they followed any failover), else from the node
# that reports itself master in ROLE, else REDIS_INITIAL_MASTER.
#
# It watches the master named REDIS_MASTER_NAME (labshare) with a quorum of
# 2 of the 3 sentinels, connects to the Redis nodes as the ACL user sentinel
# (deploy/redis-acl.sh; password from sentinel.password), resolves and
# announces host names (the headless Services' DNS names: pod IPs change on
# every restart), and answers the services' SENTINEL queries on its port
# without ACL (keep that port inside the cluster network).
#
# Environment (the defaults are the StatefulSet's): SENTINEL_ANNOUNCE
# (HOSTNAME.redis-sentinel), SENTINEL_PORT (26379), SENTINEL_PEERS
# ("host:port" of every sentinel), REDIS_NODES, REDIS_INITIAL_MASTER,
# REDIS_MASTER_NAME, SENTINEL_SECRETS (sentinel.password), SENTINEL_CONF_DIR
# (written), SENTINEL_DOWN_AFTER_MS (5000), SENTINEL_FAILOVER_TIMEOUT_MS
# (10000: a failed attempt is retried after twice that).
set -eu
announce="${SENTINEL_ANNOUNCE:-$HOSTNAME.redis-sentinel}"
port="${SENTINEL_PORT:-26379}"
peers="${SENTINEL_PEERS:-redis-sentinel-0.redis-sentinel:26379 redis-sentinel-1.redis-sentinel:26379 redis-sentinel-2.redis-sentinel:26379}"
nodes="${REDIS_NODES:-redis-0.redis:6379 redis-1.redis:6379 redis-2.redis:6379}"
initial="${REDIS_INITIAL_MASTER:-redis-0.redis:6379}"
master_name="${REDIS_MASTER_NAME:-labshare}"
secrets="${SENTINEL_SECRETS:-/etc/redis-sentinel}"
conf_dir="${SENTINEL_CONF_DIR:-/run/sentinel}"
password="$(cat "$secrets/sentinel.password")"

master=""
for s in $peers; do
  [ "$s" = "$announce:$port" ] && continue
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
    role="$(REDISCLI_AUTH="$password" timeout 3 redis-cli --no-auth-warning --user sentinel \
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
  echo "no sentinel or node names a master: monitoring $master"
fi

umask 077
mkdir -p "$conf_dir"
conf="$conf_dir/sentinel.conf"
{
  echo "port $port"
  echo "dir $conf_dir"
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip $announce"
  echo "sentinel announce-port $port"
  echo "sentinel monitor $master_name ${master%:*} ${master##*:} 2"
  # Every other node as a replica from the start: a sentinel otherwise
  # learns replicas from the master's INFO (every 10 s), and a replica it
  # has not learnt of when the master dies is never repointed.
  for n in $nodes; do
    [ "$n" = "$master" ] || echo "sentinel known-replica $master_name ${n%:*} ${n##*:}"
  done
  echo "sentinel auth-user $master_name sentinel"
  echo "sentinel auth-pass $master_name $password"
  echo "sentinel down-after-milliseconds $master_name ${SENTINEL_DOWN_AFTER_MS:-5000}"
  echo "sentinel failover-timeout $master_name ${SENTINEL_FAILOVER_TIMEOUT_MS:-10000}"
  echo "sentinel parallel-syncs $master_name 1"
} > "$conf"
exec redis-server "$conf" --sentinel
