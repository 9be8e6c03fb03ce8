#!/usr/bin/env bash
# deploy/redis-acl.sh DIR: the Redis ACL users of a LabShare deployment.
#
# Writes, in DIR (created with mode 0700 if missing):
#   users.acl              the ACL file (no comments allowed: generated, do not
#                          edit; rerun the script) for redis-server (`--aclfile DIR/users.acl`
#                          or `aclfile` in redis.conf); passwords appear only as
#                          SHA-256 hashes (#...). Mode 0600: redis-server must run
#                          as the file's owner (or mount it as a secret).
#   inventory.password     one password per user, 64 hex digits and a newline,
#   booking.password       mode 0600. A file that already exists is kept, so
#   billing.password       running the script again (e.g. after an upgrade that
#   usage.password         changes the command lists) rewrites users.acl
#   notify.password
#   admin.password         without changing any password. Delete a file to
#   probe.password         rotate that password, rerun, then `ACL LOAD` in
#   replication.password   Redis and restart the user's service.
#   sentinel.password
# and prints the users it wrote, one per line. Nothing else is touched.
#
# Users (the default user is off: a connection that does not AUTH can run
# nothing):
#   inventory, booking, billing, usage, notify
#       Each service, connecting with --redis_user=NAME
#       --redis_password_file=DIR/NAME.password. Its own keys (its hash tags:
#       {inventory}; {booking}, {bk:P} and {bk:ids}; {billing}; {usage} and
#       {au:K} (the audit segments);
#       {notify}) with
#       exactly the commands it runs, inside Lua scripts included. Another
#       service's outbox stream it consumes is reachable only through a
#       selector that allows the consumer-group commands and nothing else
#       (no XADD, DEL, XRANGE... on it); no other key of another service is
#       reachable. No pub/sub channels.
#       booking alone has SCAN: its start-up index migrations
#       (redis_booking_store.h) look for keys of older versions. SCAN
#       returns key names, never values; it is the only way a service user
#       learns anything about keys outside its own tags.
#   admin
#       Operators, demo tools and backups: every key and command. Keep its
#       password off the service hosts.
#   probe
#       Health checks of Redis itself (e.g. `redis-cli --user probe
#       --pass "$(cat DIR/probe.password)" ping`): PING, and ROLE (a
#       starting Redis node asks its peers which is master,
#       deploy/k8s/base/redis/redis-start.sh); no keys.
#   replication
#       Replicas connect to their master as this user (`masteruser
#       replication`, `masterauth` from replication.password): PSYNC,
#       REPLCONF, PING and nothing else, no keys (Redis docs, "ACL rules for
#       replicas"). Every node of a replicated deployment has the same
#       users.acl, so whichever node is master accepts its replicas.
#   sentinel
#       Redis Sentinel's connections to the nodes it monitors (`sentinel
#       auth-user <master> sentinel`, `sentinel auth-pass` from
#       sentinel.password): exactly the commands of the Redis docs' "ACL for
#       Sentinel" (PING, INFO, ROLE, CLIENT SETNAME/KILL, SUBSCRIBE and
#       PUBLISH on its hello channel, MULTI/EXEC, SLAVEOF/REPLICAOF, CONFIG
#       REWRITE, SCRIPT KILL), no keys. The sentinels themselves run without
#       ACL users (their port answers SENTINEL queries to anyone who reaches
#       it: keep it inside the cluster network).
#
# Every service also runs, at start and for readiness: PING, and EVAL of a
# keyless script (RedisPool::Ready); nothing else (no CLIENT SETNAME, INFO,
# CONFIG or SCRIPT LOAD: scripts are sent with EVALSHA and, on NOSCRIPT,
# EVAL). AUTH and HELLO need no permission. The client (common/redis.cc)
# itself sends, keyless: ROLE (is this node the master, after a Sentinel
# failover), WAIT (--redis_wait_replicas), CLUSTER SLOTS and ASKING (Redis
# Cluster routing); every service user has them.
#
# How the lists were found: every command name in services/ and common/
# (Command/Pipeline argv and redis.call in the Lua steps), then checked by
# MONITORing the service test suites (inventory_service, booking_service,
# booking_lists, billing_service, billing_conformance, usage_figures,
# usage_reports): every command a service sent on a key of its tags is
# allowed here (the tests' own XRANGE, DUMP, KEYS... are not), and
# tests/security/redis_acl_test.cc runs the four real processes under these
# users with an empty `ACL LOG`. A command a new version needs shows up
# there as NOPERM (and in the service's log: "redis ACL refused a command").
set -euo pipefail

usage() {
  echo "usage: $0 DIR   (writes DIR/users.acl and DIR/<user>.password, see the header)" >&2
  exit 2
}
[[ $# -eq 1 && -n "$1" && "$1" != -* ]] || usage
dir="$1"

umask 077
mkdir -p "$dir"

# Commands every service runs: readiness (PING, EVAL of a keyless script),
# Lua steps (EVALSHA, EVAL on NOSCRIPT), its page-token key (SET NX, GET) and
# common/doc_store.cc (documents, idempotency records, indexes; ZCARD for an
# index guard, e.g. inventory's facility instruments).
base="ping eval evalsha get set type hmget hget hset expire rpush lrange zadd zrem zrange zcard xadd"
# The client's own: Sentinel (ROLE), WAIT for replicas, Redis Cluster routing.
base+=" role wait cluster|slots asking"
# Consumer-group commands (common/events.cc EventConsumer): XREADGROUP,
# XACK, XGROUP CREATE; a Lua step (EVALSHA, EVAL on NOSCRIPT) that scans the
# pending list (XPENDING) and claims the entries due for a retry (XCLAIM),
# and one that parks an entry that can never be applied (XPENDING, TIME,
# XADD to the parking stream <stream>:parked:<group>, XACK); the consumer
# metrics (XPENDING, TIME, XLEN of the parking stream).
consumer="xgroup|create xreadgroup xack xpending xclaim evalsha eval"
# On a parking stream of its own group (never on the outbox itself): XADD
# (parking) and XLEN (the metrics). A selector of its own, since a
# selector's commands apply to all its keys.
parking="xadd xlen"
# <!-- helper B: issue 17 -->
# Outbox retention and lag metrics on a service's own outbox
# (common/outbox_trim.cc OutboxMaintenance: TIME (the safety window on
# Redis's clock), XINFO GROUPS, XPENDING, XRANGE and XTRIM MINID in one Lua
# step; XLEN, EXISTS, XINFO GROUPS and XRANGE for the figures).
outbox="time xinfo|groups xpending xtrim xlen exists xrange"
# <!-- /helper B -->

declare -A keys cmds selector parked
keys[inventory]="~{inventory}*"
# DEL and EXISTS: the identity service's refresh tokens and revocations.
cmds[inventory]="$base llen del exists $outbox"
selector[inventory]=""
parked[inventory]=""

keys[booking]="~{booking}* ~{bk:*}*"
cmds[booking]="$base del exists hdel hgetall hincrby sadd smembers scan zcard zcount zrank \
zrangebyscore zrevrangebyscore zrangebylex zrevrangebylex $outbox"
# ZMSCORE: re-filing an instrument without a listing-operator record asks
# which organisations' "org" listing indexes hold its entries
# (booking_lists.h RefileOperator).
cmds[booking]+=" zmscore"
# ZSCAN: a calendar step looks for an entry that is not where its document
# says it starts (a window placed again, an id without a known start), and
# HGETALL folds an older version's calendar into one sorted set
# (redis_booking_store.h keys::Calendar).
cmds[booking]+=" zscan"
# SISMEMBER: a window whose cancellation was applied is never blocked again
# ({bk:P}:mwoff); ZREMRANGEBYSCORE: inventory's changes of an instrument
# kept 30 days ({bk:P}:ichanges, BookingStore::RecordInstrumentChange).
cmds[booking]+=" sismember zremrangebyscore"
# Its own partitions' outboxes {bk:P}:outbox, consumer group "booking-uses":
# each check-out's qualification use delivered to inventory until it takes
# it (services/booking/session_uses.h).
cmds[booking]+=" $consumer"
# Inventory's outbox: the maintenance-window consumer (group) and the cache
# watcher (XREAD, XREVRANGE).
# The parking stream of its group on it (see $parking).
selector[booking]="(~{inventory}:outbox ~{inventory}:outbox:parked:booking resetchannels -@all $consumer xread xrevrange)"
parked[booking]="(~{inventory}:outbox:parked:booking resetchannels -@all $parking)"

keys[billing]="~{billing}*"
cmds[billing]="$base hexists hgetall hincrby $outbox"
# The booking partitions' outboxes {bk:P}:outbox and billing's parking
# streams on them (e.g. an unreadable BookingEvent, CORRUPT_EVENT).
selector[billing]="(~{bk:*}:outbox ~{bk:*}:outbox:parked:billing resetchannels -@all $consumer)"
parked[billing]="(~{bk:*}:outbox:parked:billing resetchannels -@all $parking)"

# The audit trail's segments k >= 1 live under {au:<k>} (services/usage/audit_chain.h).
keys[usage]="~{usage}* ~{au:*}*"
cmds[usage]="$base $consumer exists hdel hexists hgetall hincrby hvals mget sadd sunion \
zrangebyscore zrevrangebyscore $outbox"
# [helper C, issue 17] The report aggregates (services/usage/usage_aggregates.*):
# HKEYS, DEL, SMEMBERS (their rebuild from the counters and sets); HSETNX (an
# instrument not known yet, recorded once).
cmds[usage]+=" hkeys del smembers hsetnx"
# The chunked rebuild of a stale period (usage_aggregates.cc): UNLINK (the
# old aggregates, freed in the background), SSCAN (a served set a chunk at
# a time), LPOP / LLEN (the pending members past a step's budget), HLEN.
cmds[usage]+=" unlink sscan lpop llen hlen"
# Every other service's outbox (its own, {usage}:outbox, is under {usage}).
# Its parking streams on them ({usage}:outbox:parked:usage is under {usage}).
usage_parked="~{inventory}:outbox:parked:usage ~{booking}:outbox:parked:usage ~{bk:*}:outbox:parked:usage \
~{billing}:outbox:parked:usage ~{notify}:outbox:parked:usage"
selector[usage]="(~{inventory}:outbox ~{booking}:outbox ~{bk:*}:outbox ~{billing}:outbox ~{notify}:outbox $usage_parked \
resetchannels -@all $consumer)"
parked[usage]="($usage_parked resetchannels -@all $parking)"

# --- notify (labshare-notify: mail, webhooks, calendar feeds; issue 16)
keys[notify]="~{notify}*"
# Mail (services/notify/notify_mail_queue.cc): the queue, schedules,
# digests and settings, in Lua steps and plain reads; its own outbox.
# Webhooks (webhook_manager.cc): endpoints, deliveries, the due set
# (ZCARD for the per-organisation limit). Feeds (feed_projection.cc):
# entries and their per-user and per-instrument indexes.
cmds[notify]="$base $consumer exists del hdel hexists hgetall hincrby zcard zscore zrangebyscore \
zrevrangebyscore $outbox"
# Every other service's outbox (its own, {notify}:outbox, is under {notify}).
# Its modules' parking streams on them (notify-mail, notify-webhooks,
# notify-feeds; {notify}:outbox's are under {notify}).
notify_parked="~{inventory}:outbox:parked:notify-* ~{booking}:outbox:parked:notify-* ~{bk:*}:outbox:parked:notify-* \
~{billing}:outbox:parked:notify-* ~{usage}:outbox:parked:notify-*"
selector[notify]="(~{inventory}:outbox ~{booking}:outbox ~{bk:*}:outbox ~{billing}:outbox ~{usage}:outbox $notify_parked \
resetchannels -@all $consumer)"
parked[notify]="($notify_parked resetchannels -@all $parking)"

users=(inventory booking billing usage notify admin probe replication sentinel)

password_hash() {
  local file="$1/$2.password"
  if [[ ! -s "$file" ]]; then
    # 256 bits; hex so it survives any config syntax and shell quoting.
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file.tmp"
    echo >>"$file.tmp"
    chmod 600 "$file.tmp"
    mv "$file.tmp" "$file"
  fi
  chmod 600 "$file"
  local pw
  pw="$(head -n1 "$file")"
  [[ -n "$pw" ]] || { echo "$file: empty password" >&2; exit 1; }
  printf '%s' "$pw" | sha256sum | cut -d' ' -f1
}

plus() {  # "a b|c" -> "+a +b|c"
  local out="" c
  for c in $1; do out+=" +$c"; done
  echo "${out# }"
}

tmp="$dir/users.acl.tmp"
{
  echo "user default off resetpass resetkeys resetchannels -@all"
  for u in inventory booking billing usage notify; do
    h="$(password_hash "$dir" "$u")"
    line="user $u on resetpass #$h resetkeys ${keys[$u]} resetchannels -@all $(plus "${cmds[$u]}")"
    for sel in "${selector[$u]}" "${parked[$u]}"; do
      [[ -n "$sel" ]] || continue
      # "(... -@all xgroup|create ...)" -> "(... -@all +xgroup|create ...)"
      inner="${sel#*-@all }"
      inner="${inner%)}"
      line+=" ${sel%%-@all*}-@all $(plus "$inner"))"
    done
    echo "$line"
  done
  echo "user admin on resetpass #$(password_hash "$dir" admin) ~* &* +@all"
  echo "user probe on resetpass #$(password_hash "$dir" probe) resetkeys resetchannels -@all +ping +role"
  echo "user replication on resetpass #$(password_hash "$dir" replication) resetkeys resetchannels -@all" \
    "+psync +replconf +ping"
  echo "user sentinel on resetpass #$(password_hash "$dir" sentinel) resetkeys resetchannels &__sentinel__:hello" \
    "-@all +multi +exec +slaveof +replicaof +ping +info +role +subscribe +publish +config|rewrite" \
    "+client|setname +client|kill +script|kill"
} >"$tmp"
chmod 600 "$tmp"
mv "$tmp" "$dir/users.acl"
printf '%s\n' "${users[@]}"
