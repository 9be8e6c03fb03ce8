#!/bin/bash
# deploy/restore.sh: a snapshot of deploy/backup.sh into a Redis data
# directory, ready for redis-server.
#
#   deploy/restore.sh [--force] [--no_aof] [--timeout=SECONDS] SNAPSHOT.rdb TARGET_DIR
#
# 1. Checks SNAPSHOT.rdb against SNAPSHOT.rdb.sha256 (written beside it by
#    backup.sh) and reads it whole with redis-check-rdb; refuses it on any
#    mismatch or error.
# 2. Refuses a TARGET_DIR that exists and is not empty (a live data
#    directory!) unless --force: then its contents are moved aside into
#    TARGET_DIR/before-restore-<UTC time>/ (same volume, nothing deleted;
#    Redis ignores the folder; remove it once the restore is checked).
# 3. Writes TARGET_DIR/dump.rdb (temporary name, flushed, renamed).
# 4. Unless --no_aof: turns it into the append-only file every LabShare
#    deployment runs with (appendonly yes). This step is needed: Redis 7
#    started with appendonly yes and no AOF in its directory starts EMPTY
#    and ignores dump.rdb. A private redis-server (unix socket in a temporary
#    directory, no TCP port, no users) loads dump.rdb, CONFIG SET appendonly
#    yes rewrites it as TARGET_DIR/appendonlydir (RDB preamble, default
#    appendfilename), and it shuts down. The key count is printed.
#    --no_aof leaves only dump.rdb, for a Redis run with appendonly no.
#
# Then start Redis on TARGET_DIR with the deployment's usual flags, e.g.
#   redis-server --dir TARGET_DIR --appendonly yes --appendfsync always \
#     --aclfile SECRETS/redis/users.acl ...
# (the ACL file and the other secrets are not in the snapshot). Run it as the
# user Redis runs as (or chown -R TARGET_DIR to it afterwards), with every
# LabShare service stopped or pointed at the restored Redis only. Exit
# status: 0 restored, 1 failed (reason on stderr), 2 bad arguments.
set -euo pipefail
umask 077
unset REDISCLI_AUTH  # the private redis-server below has no users

die() { echo "restore.sh: $*" >&2; exit 1; }
usage() { echo "restore.sh: $*" >&2; sed -n '5p' "$0" >&2; exit 2; }

force=0 aof=1 timeout_s=1800
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --no_aof) aof=0 ;;
    --timeout=*) timeout_s="${1#*=}" ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    -*) usage "unknown flag: $1" ;;
    *) args+=("$1") ;;
  esac
  shift
done
[ ${#args[@]} -eq 2 ] || usage "expected SNAPSHOT.rdb TARGET_DIR"
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || usage "--timeout must be a positive number of seconds"
snapshot="${args[0]}" target="${args[1]%/}"
[ -n "$target" ] || usage "TARGET_DIR is empty"
start_ns="$(date +%s%N)"

# 1. The snapshot itself.
[ -f "$snapshot" ] || die "no snapshot file $snapshot"
[ -f "$snapshot.sha256" ] || die "no checksum file $snapshot.sha256: an incomplete snapshot (backup.sh writes it last)"
want="$(cut -d' ' -f1 "$snapshot.sha256" | head -n1)"
[[ "$want" =~ ^[0-9a-f]{64}$ ]] || die "$snapshot.sha256 does not hold a SHA-256"
got="$(sha256sum "$snapshot" | cut -d' ' -f1)"
[ "$got" = "$want" ] || die "checksum mismatch: $snapshot is $got, $snapshot.sha256 says $want; not restoring"
for tool in redis-server redis-cli redis-check-rdb; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: redis-server, redis-tools)"
done
check="$(redis-check-rdb "$snapshot" 2>&1)" || die "redis-check-rdb rejects $snapshot: $(echo "$check" | grep -E 'ERROR|additional info' | tr '\n' ' ')"
keys="$(echo "$check" | sed -n 's/^\[info\] \([0-9]*\) keys read$/\1/p')"

# 2. The target.
if [ -e "$target" ] && [ ! -d "$target" ]; then die "$target exists and is not a directory"; fi
if [ -d "$target" ] && [ -n "$(ls -A "$target")" ]; then
  [ "$force" = 1 ] || die "$target is not empty (a live data directory?); stop Redis and pass --force to move its contents aside"
  aside="$target/before-restore-$(date -u +%Y%m%dT%H%M%SZ)"
  [ ! -e "$aside" ] || die "$aside already exists"
  mkdir "$aside"
  for f in "$target"/* "$target"/.[!.]* "$target"/..?*; do
    [ -e "$f" ] || continue
    case "$(basename "$f")" in before-restore-*) continue ;; esac  # earlier restores' folders stay
    mv "$f" "$aside/" || die "cannot move $f to $aside"
  done
  echo "restore.sh: the previous contents of $target are in $aside"
fi
mkdir -p "$target"

# 3. dump.rdb.
cp "$snapshot" "$target/.dump.rdb.restore"
sync "$target/.dump.rdb.restore"
mv "$target/.dump.rdb.restore" "$target/dump.rdb"
sync "$target"

# 4. The append-only file.
loaded="$keys"
if [ "$aof" = 1 ]; then
  sock_dir="$(mktemp -d)"
  pid=""
  stop_private() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$sock_dir"
  }
  trap stop_private EXIT
  sock="$sock_dir/redis.sock"
  redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$(cd "$target" && pwd)" \
    --dbfilename dump.rdb --appendonly no --save '' --daemonize no --logfile "$sock_dir/redis.log" &
  pid=$!
  cli() { redis-cli -s "$sock" "$@"; }
  deadline=$(( $(date +%s) + timeout_s ))
  # PING answers PONG once the data set is loaded (LOADING before).
  until [ "$(cli ping 2>/dev/null)" = PONG ]; do
    kill -0 "$pid" 2>/dev/null || die "redis-server could not load $target/dump.rdb: $(tail -5 "$sock_dir/redis.log" | tr '\n' ' ')"
    [ "$(date +%s)" -lt "$deadline" ] || die "redis-server did not load $target/dump.rdb within ${timeout_s}s"
    sleep 0.1
  done
  loaded="$(cli dbsize)"
  [ "$(cli config set appendonly yes)" = OK ] || die "CONFIG SET appendonly yes failed: $(tail -5 "$sock_dir/redis.log" | tr '\n' ' ')"
  # Done when no rewrite is running or scheduled and the AOF is on.
  while :; do
    info="$(cli info persistence | tr -d '\r')"
    if echo "$info" | grep -qx "aof_enabled:1" && echo "$info" | grep -qx "aof_rewrite_in_progress:0" &&
       echo "$info" | grep -qx "aof_rewrite_scheduled:0"; then
      break
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "the AOF rewrite did not finish within ${timeout_s}s"
    sleep 0.1
  done
  echo "$info" | grep -qx "aof_last_bgrewrite_status:ok" || die "the AOF rewrite failed: $(tail -5 "$sock_dir/redis.log" | tr '\n' ' ')"
  [ -f "$target/appendonlydir/appendonly.aof.manifest" ] || die "no $target/appendonlydir/appendonly.aof.manifest after the rewrite"
  cli shutdown nosave >/dev/null 2>&1 || true
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && die "the private redis-server did not shut down"
  wait "$pid" 2>/dev/null || true
  pid=""
  sync "$target"
fi
end_ns="$(date +%s%N)"
seconds="$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
echo "restored $snapshot into $target keys=$loaded (in the file: $keys) aof=$([ "$aof" = 1 ] && echo yes || echo no) seconds=$seconds"
