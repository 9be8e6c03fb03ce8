#!/bin/bash
# deploy/backup.sh: a consistent snapshot of a running LabShare Redis.
#
#   deploy/backup.sh --dir=DIR [--redis=H:P | --host=H --port=P] [--user=U] [--password_file=F]
#                    [--sentinels=H:P[,H:P...] --sentinel_master=NAME]
#                    [--keep=N] [--timeout=SECONDS] [-- REDIS_CLI_ARGS...]
#
# Every flag also reads an environment variable (the flag wins):
#   --dir            LABSHARE_BACKUP_DIR       where the snapshots go (created, mode 0700)
#   --host, --port   REDIS_HOST, REDIS_PORT    default 127.0.0.1:6379 (--redis=H:P sets
#                                              both, as the services' --redis)
#   --user           REDIS_USER                default admin (deploy/redis-acl.sh: the
#                                              only user allowed SYNC)
#   --password_file  REDIS_PASSWORD_FILE       the user's password (first line); or
#                                              set REDISCLI_AUTH yourself
#   --sentinels      REDIS_SENTINELS           ask these Sentinels for the master
#   --sentinel_master REDIS_SENTINEL_MASTER    (default labshare); --host/--port
#                                              are then ignored
#   --keep           LABSHARE_BACKUP_KEEP      how many snapshots to keep, default 14
#   --timeout        LABSHARE_BACKUP_TIMEOUT   seconds for the transfer, default 1800
# Arguments after "--" go to redis-cli as they are (e.g. --tls --cacert F).
#
# How: `redis-cli --rdb` asks Redis for a full synchronisation, as a replica
# would: Redis forks and streams the data set as it was at that instant (one
# point in time across every key: ledgers, calendars, outboxes, consumer
# groups, the audit chain). Nothing is read from Redis's disk, so it works
# from any host that reaches the port, the Redis volume is not needed, and
# the AOF settings do not matter. Redis waits repl-diskless-sync-delay
# (5 s by default) before it starts the stream, so a snapshot takes at
# least that long.
#
# The file is checked (redis-check-rdb: structure, checksum, key count),
# written under a temporary name, flushed to disk, then renamed to
#   DIR/labshare-YYYYMMDDTHHMMSSZ.rdb          (UTC time of the start)
#   DIR/labshare-YYYYMMDDTHHMMSSZ.rdb.sha256   (`sha256sum -c` format)
# (the .sha256 last: a snapshot without it is incomplete and deploy/restore.sh
# refuses it). Then all but the newest N complete snapshots are deleted.
# Prints one line "snapshot FILE bytes=... keys=... sha256=... seconds=...".
# Exit status: 0 done, 1 failed (the reason on stderr; nothing is left
# behind and no older snapshot is deleted), 2 bad arguments.
#
# The snapshot holds Redis's data only. The secrets (deploy/make-secrets.sh:
# the Redis ACL file and passwords, the token and audit signing keys, the
# certificates) are not in it: keep them backed up separately.
set -euo pipefail
umask 077

die() { echo "backup.sh: $*" >&2; exit 1; }
usage() { echo "backup.sh: $*" >&2; sed -n '4,6p' "$0" >&2; exit 2; }

dir="${LABSHARE_BACKUP_DIR:-}"
host="${REDIS_HOST:-127.0.0.1}"
port="${REDIS_PORT:-6379}"
user="${REDIS_USER:-admin}"
password_file="${REDIS_PASSWORD_FILE:-}"
sentinels="${REDIS_SENTINELS:-}"
sentinel_master="${REDIS_SENTINEL_MASTER:-labshare}"
keep="${LABSHARE_BACKUP_KEEP:-14}"
timeout_s="${LABSHARE_BACKUP_TIMEOUT:-1800}"
cli_extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir=*) dir="${1#*=}" ;;
    --redis=*) host="${1#*=}"; port="${host##*:}"; host="${host%:*}" ;;
    --host=*) host="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    --user=*) user="${1#*=}" ;;
    --password_file=*) password_file="${1#*=}" ;;
    --sentinels=*) sentinels="${1#*=}" ;;
    --sentinel_master=*) sentinel_master="${1#*=}" ;;
    --keep=*) keep="${1#*=}" ;;
    --timeout=*) timeout_s="${1#*=}" ;;
    --) shift; cli_extra=("$@"); break ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) usage "unknown argument: $1" ;;
  esac
  shift
done
[ -n "$dir" ] || usage "--dir (or LABSHARE_BACKUP_DIR) is required"
[[ "$keep" =~ ^[1-9][0-9]*$ ]] || usage "--keep must be a positive number, got '$keep'"
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || usage "--timeout must be a positive number of seconds, got '$timeout_s'"
[[ "$port" =~ ^[0-9]+$ ]] || usage "--port must be a number, got '$port'"
for tool in redis-cli sha256sum timeout; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: redis-tools, coreutils)"
done

if [ -n "$password_file" ]; then
  [ -r "$password_file" ] || die "cannot read the password file $password_file"
  REDISCLI_AUTH="$(head -n1 "$password_file")"
  export REDISCLI_AUTH  # not on the command line: ps would show it
fi
auth=()
[ -n "$user" ] && auth=(--user "$user")

# Sentinel: the current master's address.
if [ -n "$sentinels" ]; then
  found=""
  IFS=',' read -r -a list <<< "$sentinels"
  for s in "${list[@]}"; do
    # Sentinels run without ACL users in our deployments: no AUTH.
    if reply="$(env -u REDISCLI_AUTH timeout 10 redis-cli -h "${s%:*}" -p "${s##*:}" "${cli_extra[@]}" \
        SENTINEL get-master-addr-by-name "$sentinel_master" 2>/dev/null)" && [ "$(echo "$reply" | wc -l)" -eq 2 ]; then
      host="$(echo "$reply" | sed -n 1p)"
      port="$(echo "$reply" | sed -n 2p)"
      found="$s"
      break
    fi
  done
  [ -n "$found" ] || die "no Sentinel of $sentinels knows the master '$sentinel_master'"
fi

mkdir -p "$dir" || die "cannot create $dir"
[ -w "$dir" ] || die "$dir is not writable"
start_ns="$(date +%s%N)"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
name="labshare-$stamp.rdb"
final="$dir/$name"
if [ -e "$final" ] || [ -e "$final.sha256" ]; then
  die "$final already exists (two backups in the same second?)"
fi
tmp="$dir/.$name.partial.$$"
log="$dir/.$name.log.$$"
cleanup() { rm -f "$tmp" "$tmp.sha256" "$log"; }
trap cleanup EXIT
trap 'exit 143' TERM INT  # a stopped job (Kubernetes sends SIGTERM) still cleans up
# Leftovers of runs killed outright (SIGKILL, OOM), older than any transfer
# may take: they would fill the volume, and no later run would remove them.
find "$dir" -maxdepth 1 -type f \( -name '.labshare-*.rdb.partial.*' -o -name '.labshare-*.rdb.log.*' \) \
  -mmin +$(( timeout_s / 60 + 1 )) -delete 2>/dev/null || true

rc=0
timeout "$timeout_s" redis-cli -h "$host" -p "$port" "${auth[@]}" "${cli_extra[@]}" --rdb "$tmp" >"$log" 2>&1 || rc=$?
if [ "$rc" = 124 ]; then
  die "redis-cli --rdb from $host:$port took more than ${timeout_s}s (--timeout): $(tr '\n' ' ' < "$log")"
elif [ "$rc" != 0 ]; then
  die "redis-cli --rdb from $host:$port as user '$user' failed: $(tr '\n' ' ' < "$log")"
fi
grep -q "Transfer finished with success" "$log" || die "redis-cli --rdb from $host:$port did not finish: $(tr '\n' ' ' < "$log")"
[ -s "$tmp" ] || die "redis-cli --rdb from $host:$port wrote an empty file"

# The file must be a whole RDB: redis-check-rdb reads every key and the
# checksum (Debian: redis-tools; the redis image has it).
if command -v redis-check-rdb >/dev/null; then
  if ! redis-check-rdb "$tmp" >"$log" 2>&1 || ! grep -q "RDB looks OK" "$log"; then
    die "the snapshot from $host:$port is not a valid RDB file: $(grep -E 'ERROR|additional info' "$log" | tr '\n' ' ')"
  fi
  keys="$(sed -n 's/^\[info\] \([0-9]*\) keys read$/\1/p' "$log")"
else
  [ "$(head -c 5 "$tmp")" = REDIS ] || die "the snapshot from $host:$port does not start with the RDB header"
  keys="unknown (redis-check-rdb not installed)"
fi

bytes="$(stat -c %s "$tmp")"
sum="$(sha256sum "$tmp" | cut -d' ' -f1)"
echo "$sum  $name" > "$tmp.sha256"
sync "$tmp" "$tmp.sha256" || die "cannot flush $tmp to disk"
mv "$tmp" "$final" || die "cannot rename the snapshot to $final"
mv "$tmp.sha256" "$final.sha256" || { rm -f "$final"; die "cannot write $final.sha256"; }
sync "$dir" || die "cannot flush $dir to disk"

# Keep the newest N complete snapshots (names sort by time).
# A .rdb without its .sha256 is incomplete (another run's, or damaged):
# neither counted nor deleted.
complete=()
for f in $(cd "$dir" && ls -1 | grep -E '^labshare-[0-9]{8}T[0-9]{6}Z\.rdb$' | sort); do
  if [ -e "$dir/$f.sha256" ]; then complete+=("$f"); fi
done
n=${#complete[@]}
if [ "$n" -gt "$keep" ]; then
  for old in "${complete[@]:0:n-keep}"; do
    rm -f "$dir/$old" "$dir/$old.sha256" || die "cannot delete the old snapshot $dir/$old"
  done
fi
end_ns="$(date +%s%N)"
seconds="$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
echo "snapshot $final bytes=$bytes keys=$keys sha256=$sum seconds=$seconds"
