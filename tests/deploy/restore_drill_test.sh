#!/bin/bash
# The restore drill: a backup of the running platform, restored into a fresh
# Redis, serves exactly the same books.
#
# 1. The platform runs (deploy/run-local.sh on free loopback ports, demo time,
#    TLS, Redis with ACL users) and plays the demo month
#    (deploy/demo-scenario.sh).
# 2. Once every outbox consumer group has caught up, the real client
#    (`labshare --json`, in batches: `labshare batch`, one process and one
#    connection per service for a group of calls) records every balance,
#    statement, invoice, charge, posting, payment, deposit, settlement,
#    income report, usage figure, query, sharing matrix, idle/under-shared
#    list, the whole audit trail, bookings, leases, orders and the
#    inventory: one file per call, every page.
# 3. deploy/backup.sh takes a snapshot of the running Redis (as user admin);
#    the recording is taken again and must not have moved.
# 4. deploy/restore.sh restores the snapshot into a new data directory; a new
#    redis-server (new free port, same ACL file, AOF always) starts on it and
#    five new service processes (the notifier included) (new ports) on that Redis. Every outbox
#    consumer group in the restored Redis is caught up.
# 5. The same recording against the restored services must be equal byte for
#    byte (a diff is printed otherwise). Then the annual report, its CSV, the
#    audit-chain verification and the audit-trail export up to the recorded
#    head (these calls append to the audit trail, so they come after the
#    reads) are compared the same way, and on the restored data the whole
#    chain verifies: VerifyAuditChain VERIFIED and deploy/verify_audit.py
#    with the usage service's public key (head signature valid).
# Also: backup.sh keeps the newest --keep snapshots and fails cleanly on a
# wrong password; restore.sh refuses a tampered snapshot and a non-empty
# target without --force, and --force moves the old contents aside; the
# CronJob in deploy/k8s runs this backup.sh.
# Prints the time the backup and the restore took and the snapshot's size,
# and when the platform ran and each step began.
#
# usage: tests/deploy/restore_drill_test.sh BUILD_DIR   (BUILD_DIR/bin holds the binaries)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ "${1:-}" != --inner ]; then
  build="$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # The CronJob runs a copy of deploy/backup.sh (kustomize reads no file
  # outside deploy/k8s/base): it must be this one.
  # (the ConfigMap's last key, a literal block indented by 4 spaces).
  if ! sed -n '/^  backup.sh: |$/,$p' "$root/deploy/k8s/base/backup-cronjob.yaml" | tail -n +2 | sed 's/^    //' |
       cmp -s - "$root/deploy/backup.sh"; then
    echo "deploy/k8s/base/backup-cronjob.yaml: its copy of backup.sh differs from deploy/backup.sh (refresh it: see its header)"
    exit 1
  fi
  echo "the CronJob's backup.sh is deploy/backup.sh"
  read -r base redis_port < <(python3 "$root/tests/support/free_ports.py" 0 1 2 3 4 5 6 7 100 101 102 103 106)
  rc=0 started=$(date +%s)
  LABSHARE_BUILD_DIR="$build" LABSHARE_NO_BUILD=1 LABSHARE_BASE_PORT="$base" LABSHARE_REDIS_PORT="$redis_port" \
  LABSHARE_DATA_DIR="$work/data" LABSHARE_CLOCK_FILE="$work/clock" \
    "$root/deploy/run-local.sh" --fresh --then "bash '$here/restore_drill_test.sh' --inner '$work' $started" > "$work/out" 2>&1 || rc=$?
  cat "$work/out"
  if [ "$rc" != 0 ]; then
    echo "the restore drill failed (exit $rc); logs:"
    for f in "$work"/data/*.log "$work"/restored-run/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
    [ -f "$work/not-serving.txt" ] && cat "$work/not-serving.txt"
    exit 1
  fi
  exit 0
fi

# ---------------------------------------------------------------- inner part
# Runs inside run-local.sh --then: the platform is up; its environment
# (LABSHARE_BIN, LABSHARE_DATA_DIR, LABSHARE_CONFIG, LABSHARE_TLS_CA,
# LABSHARE_ISSUER, LABSHARE_CLOCK_FILE, LABSHARE_REDIS_PORT) is set.
work="$2"
echo "the platform runs, $(( $(date +%s) - $3 ))s after the drill started"
bin="$LABSHARE_BIN" data="$LABSHARE_DATA_DIR" redis_port="$LABSHARE_REDIS_PORT"
secrets="$data/secrets" pki="$data/secrets/pki"
orig_conf="$LABSHARE_CONFIG"
step() { echo; echo "### $* (at ${SECONDS}s of this part)"; }
fail() { echo "FAIL: $*"; exit 1; }
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
export REDISCLI_AUTH; REDISCLI_AUTH="$(head -n1 "$secrets/redis/admin.password")"
rcli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" --user admin "$@"; }

# Processes this part starts (the restored Redis and services): stopped on
# any exit, TERM then KILL after a bounded wait.
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
trap stop_all EXIT

step "1. The demo month"
"$root/deploy/demo-scenario.sh" > "$work/demo.out" 2>&1 || { cat "$work/demo.out"; fail "the demo scenario failed"; }
grep "^RESULT" "$work/demo.out"

# Every consumer group of every outbox stream has read its stream to the end
# and acknowledged everything: nothing is in flight between the services.
# One script in Redis looks at every stream (a redis-cli, a python3 and
# three redis-cli per stream took seconds a check).
caught_up_lua='
local late, cursor = {}, "0"
repeat
  local page = redis.call("SCAN", cursor, "MATCH", "*outbox*", "COUNT", 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    if redis.call("TYPE", key)["ok"] == "stream" then
      local stream, last = redis.call("XINFO", "STREAM", key), nil
      for i = 1, #stream, 2 do
        if stream[i] == "last-generated-id" then last = stream[i + 1] end
      end
      local names = {}
      for _, group in ipairs(redis.call("XINFO", "GROUPS", key)) do
        local g = {}
        for i = 1, #group, 2 do g[group[i]] = group[i + 1] end
        if g["pending"] ~= 0 or g["last-delivered-id"] ~= last then names[#names + 1] = g["name"] end
      end
      if #names > 0 then late[#late + 1] = key .. ": groups not caught up: " .. table.concat(names, " ") end
    end
  end
until cursor == "0"
if #late == 0 then return "caught up" end
return late'
caught_up() {  # port -> exit 0 when caught up; prints what is not
  local answer
  answer="$(rcli "$1" eval "$caught_up_lua" 0 2>&1)" || true
  [ "$answer" = "caught up" ] && return 0
  echo "$answer"
  return 1
}
wait_caught_up() {  # port what
  local deadline=$(( $(date +%s) + 180 ))
  until caught_up "$1" > "$work/caught_up.out"; do
    [ "$(date +%s)" -lt "$deadline" ] || { cat "$work/caught_up.out"; fail "$2: consumers did not catch up within 180s"; }
    sleep 0.5
  done
}

# A token of a consortium admin and auditor (the services take roles from
# the token), minted from the issuer's key as run-local.sh's bootstrap does.
token() {
  "$bin/labshare-token" --signing_key_file="$secrets/token-signing.pem" --user=admin --org=zju \
    --roles=consortium_admin,auditor --ttl=30m
}

# The calls go through `labshare batch`: one client process and one
# connection per service for many calls (starting a client per call, a
# sanitized binary with a TLS handshake, and a python3 per page cost most of
# the drill's time). call and raw queue a call as a line of DIR/.batch; run
# DIR makes them, in order, and stops at the first that fails (its error
# names the line).
# call DIR FILE service Method [args]: the JSON answer, every page (at most
# 1000: labshare --all_pages --max_pages=1000), into DIR/FILE; run writes the
# opaque next_page_token as "(token)".
call() {
  local dir=$1 file=$2; shift 2
  { printf '%q ' "$@" --json --all_pages --max_pages=1000 "--output=$dir/$file"; echo; } >> "$dir/.batch"
  echo "$dir/$file" >> "$dir/.paged"
}
# raw DIR FILE service Method [args]: the answer as the client prints it
# (streamed exports: the file itself; others: the text form).
raw() {
  local dir=$1 file=$2; shift 2
  { printf '%q ' "$@" "--output=$dir/$file"; echo; } >> "$dir/.batch"
}
run() {  # DIR
  local dir=$1
  "$bin/labshare" batch "$dir/.batch" > "$dir/.out" 2> "$dir/.err" ||
    fail "labshare batch failed: $(cat "$dir/.err")"
  [ ! -s "$dir/.out" ] || fail "labshare batch printed: $(cat "$dir/.out")"
  if [ -s "$dir/.paged" ]; then
    xargs -d '\n' sed -i -E 's/^ "next_page_token": ".*"(,?)$/ "next_page_token": "(token)"\1/' < "$dir/.paged"
  fi
  rm -f "$dir/.batch" "$dir/.paged" "$dir/.out" "$dir/.err"
}
names() {  # FILE FIELD: the "name"s of the list FIELD in a recorded file
  python3 -c '
import json, sys
text = open(sys.argv[1]).read()
dec, i, out = json.JSONDecoder(), 0, []
while i < len(text):
    if text[i].isspace(): i += 1; continue
    d, i = dec.raw_decode(text, i)
    out += [x["name"] for x in d.get(sys.argv[2], [])]
print("\n".join(out))' "$1" "$2"
}

year=(--interval.start_time=2027-01-01T00:00:00+08:00 --interval.end_time=2028-01-01T00:00:00+08:00)
march=(--range.start_time=2027-03-01T00:00:00+08:00 --range.end_time=2027-04-01T00:00:00+08:00)
year_range=(--range.start_time=2027-01-01T00:00:00+08:00 --range.end_time=2028-01-01T00:00:00+08:00)

# record DIR CONFIG: every read, against the services of CONFIG.
record() {
  local d=$1 o i n
  rm -rf "$d"; mkdir -p "$d"
  export LABSHARE_CONFIG=$2 LABSHARE_TOKEN; LABSHARE_TOKEN="$(token)"
  call "$d" inventory-organizations inventory ListOrganizations --page_size=50
  call "$d" inventory-instruments inventory ListInstruments --page_size=50
  call "$d" inventory-users inventory ListUsers --page_size=50
  call "$d" inventory-facilities inventory ListFacilities --page_size=50
  run "$d"
  for o in $(names "$d/inventory-organizations" organizations); do
    n=${o#organizations/}
    call "$d" "balances-$n" billing ListBalances --parent="$o" --page_size=50
    call "$d" "balances-by-counterparty-$n" billing ListBalances --parent="$o" --group_by_counterparty --page_size=50
    call "$d" "statement-$n" billing GetOrganizationStatement --organization="$o" "${year[@]}" --page_size=50
    call "$d" "invoices-$n" billing ListInvoices --payer_organization="$o" --page_size=50
    call "$d" "income-$n" billing GetOwnerIncomeReport --owner_organization="$o" "${year[@]}" --page_size=50
    call "$d" "payments-$n" billing ListPayments --organization="$o" --page_size=50
    call "$d" "postings-$n" billing ListPostings --organization="$o" --page_size=50
    raw "$d" "balances-$n.txt" billing ListBalances --parent="$o" --page_size=1000
    raw "$d" "statement-$n.txt" billing GetOrganizationStatement --organization="$o" "${year[@]}" --page_size=1000
  done
  call "$d" balances-all-organizations billing ListBalances --parent=organizations/- --page_size=50
  call "$d" balances-all-subsidy-pools billing ListBalances --parent=subsidyPools/- --page_size=50
  call "$d" subsidy-pools billing ListSubsidyPools --page_size=50
  call "$d" invoices billing ListInvoices --page_size=50
  run "$d"
  for i in $(names "$d/invoices" invoices); do
    call "$d" "invoice-${i//\//_}" billing GetInvoice "$i"
    raw "$d" "invoice-${i//\//_}.txt" billing GetInvoice "$i"
  done
  call "$d" settlements billing ListSettlements --page_size=50
  run "$d"
  for i in $(names "$d/settlements" settlements); do call "$d" "settlement-${i//\//_}" billing GetSettlement "$i"; done
  call "$d" charges billing ListCharges --page_size=50
  call "$d" postings billing ListPostings --page_size=50
  call "$d" payments billing ListPayments --page_size=50
  call "$d" deposits billing ListDeposits --page_size=50
  call "$d" figures-march usage GetUsageFigures "${march[@]}"
  call "$d" figures-2027 usage GetUsageFigures "${year_range[@]}"
  for i in $(names "$d/inventory-instruments" instruments); do
    call "$d" "figures-march-${i#instruments/}" usage GetUsageFigures "${march[@]}" --filter.instruments="$i"
    call "$d" "rates-${i#instruments/}" inventory ListRates --parent="$i" --page_size=50
  done
  raw "$d" figures-sem-1.txt usage GetUsageFigures "${march[@]}" --filter.instruments=instruments/sem-1
  for g in INSTRUMENT OWNER_ORGANIZATION FACILITY CATEGORY USER_ORGANIZATION SHARING_MODE; do
    call "$d" "query-march-$g" usage QueryUsage "${march[@]}" --group_by="DIMENSION_$g" --page_size=50
  done
  call "$d" query-2027-monthly usage QueryUsage "${year_range[@]}" --granularity=PERIOD_GRANULARITY_MONTH \
    --group_by=DIMENSION_OWNER_ORGANIZATION --page_size=50
  call "$d" sharing-matrix usage GetSharingMatrix "${march[@]}" --include_internal --split_by_mode --page_size=50
  call "$d" idle usage ListIdleInstruments "${year_range[@]}" --page_size=50
  call "$d" under-shared usage ListUnderSharedInstruments "${year_range[@]}" --page_size=50
  call "$d" thresholds usage GetThresholds thresholds
  call "$d" audit-entries usage ListAuditEntries --view=AUDIT_ENTRY_VIEW_FULL --page_size=100
  call "$d" bookings booking ListBookings --page_size=50
  call "$d" leases booking ListLeases --page_size=50
  call "$d" service-orders booking ListServiceOrders --page_size=50
  call "$d" projects booking ListProjects --page_size=50
  run "$d"
}
# reports DIR CONFIG HEAD: the calls that append to the audit trail (they
# publish AuditVerificationRun, ReportExported, ReportGenerated; each
# side's new entries have their own random event ids), over the chain up to
# HEAD, the recorded head.
reports() {
  local d=$1 head=$3
  rm -rf "$d"; mkdir -p "$d"
  export LABSHARE_CONFIG=$2 LABSHARE_TOKEN; LABSHARE_TOKEN="$(token)"
  # First, while the head is still the recorded one (the answer shows it).
  call "$d" verify-to-recorded-head usage VerifyAuditChain --start_sequence=1 --end_sequence=$((head + 1)) \
    --request_id=restore-drill-verify
  raw "$d" audit-to-recorded-head.jsonl usage ExportAuditTrail --format=AUDIT_EXPORT_FORMAT_JSONL \
    --end_sequence=$((head + 1))
  call "$d" annual-report-2027 usage GetAnnualReport --year=2027 --page_size=50
  raw "$d" annual-report-2027.csv usage ExportAnnualReportCsv --year=2027
  run "$d"
}
compare() {  # A B what
  if ! diff -r -u "$1" "$2" > "$work/diff.out"; then
    head -200 "$work/diff.out"
    fail "$3: the recordings differ (above; whole diff: $(wc -l < "$work/diff.out") lines)"
  fi
  echo "$3: equal, $(ls "$1" | wc -l) files, $(cat "$1"/* | wc -c) bytes"
}

step "2. The books of the running platform, once every consumer has caught up"
wait_caught_up "$redis_port" "the running platform"
t0=$(now)
record "$work/rec-a" "$orig_conf"
record_seconds=$(secs "$t0" "$(now)")
head="$(python3 -c '
import json, sys
text = open(sys.argv[1]).read()
dec, i, last = json.JSONDecoder(), 0, 0
while i < len(text):
    if text[i].isspace(): i += 1; continue
    d, i = dec.raw_decode(text, i)
    last = max([last] + [int(e["sequence"]) for e in d.get("entries", [])])
print(last)' "$work/rec-a/audit-entries")"
[ "$head" -gt 0 ] || fail "no audit entries recorded"
echo "recorded $(ls "$work/rec-a" | wc -l) files ($(cat "$work/rec-a"/* | wc -c) bytes) in ${record_seconds}s; audit trail head: $head"
python3 -c '
import json, sys
text = open(sys.argv[1]).read()
dec, i = json.JSONDecoder(), 0
while i < len(text):
    if text[i].isspace(): i += 1; continue
    d, i = dec.raw_decode(text, i)
    for v in d.get("invoices", []):
        print("  %s %s amount_due %s" % (v["name"], v.get("payer_organization"), v.get("amount_due", {}).get("amount_minor", "0")))
' "$work/rec-a/invoices"

step "3. backup.sh: a snapshot of the running Redis"
backups="$work/backups"
mkdir -p "$backups"
# Two older snapshots already there: --keep=2 leaves the newer one and the new.
for old in 20000101T000000Z 20000102T000000Z; do
  echo "old" > "$backups/labshare-$old.rdb"
  (cd "$backups" && sha256sum "labshare-$old.rdb" > "labshare-$old.rdb.sha256")
done
t0=$(now)
"$root/deploy/backup.sh" --dir="$backups" --host=127.0.0.1 --port="$redis_port" --user=admin \
  --password_file="$secrets/redis/admin.password" --keep=2 | tee "$work/backup.out"
t1=$(now)
backup_seconds=$(secs "$t0" "$t1")
snapshot="$(sed -n 's/^snapshot \([^ ]*\) .*/\1/p' "$work/backup.out")"
[ -f "$snapshot" ] && [ -f "$snapshot.sha256" ] || fail "backup.sh wrote no snapshot"
left="$(cd "$backups" && ls -A | tr '\n' ' ')"
[ "$left" = "labshare-20000102T000000Z.rdb labshare-20000102T000000Z.rdb.sha256 $(basename "$snapshot") $(basename "$snapshot").sha256 " ] ||
  fail "--keep=2 left: $left"
echo "--keep=2: the newest two snapshots are left ($left)"
(cd "$backups" && sha256sum -c --quiet "$(basename "$snapshot").sha256") || fail "the snapshot does not match its .sha256"
bytes="$(stat -c %s "$snapshot")"
keys="$(sed -n 's/.* keys=\([0-9]*\) .*/\1/p' "$work/backup.out")"
# A wrong password: exit 1, a message, nothing written.
echo wrong > "$work/wrong.password"
if "$root/deploy/backup.sh" --dir="$backups" --port="$redis_port" --password_file="$work/wrong.password" 2> "$work/bad.err"; then
  fail "backup.sh succeeded with a wrong password"
fi
grep -q "WRONGPASS\|failed" "$work/bad.err" || fail "backup.sh with a wrong password said: $(cat "$work/bad.err")"
[ "$(cd "$backups" && ls -A | tr '\n' ' ')" = "$left" ] || fail "backup.sh left files after a failure: $(ls -A "$backups")"
echo "a wrong password: exit 1, \"$(head -c 150 "$work/bad.err")...\", nothing written"

record "$work/rec-a3" "$orig_conf"
compare "$work/rec-a" "$work/rec-a3" "the running platform before and after the snapshot"

step "4. restore.sh into a new data directory, a new Redis and new services on it"
# A tampered copy is refused.
mkdir -p "$work/tampered"
cp "$snapshot" "$snapshot.sha256" "$work/tampered/"
printf 'X' | dd of="$work/tampered/$(basename "$snapshot")" bs=1 seek=100 conv=notrunc status=none
if "$root/deploy/restore.sh" "$work/tampered/$(basename "$snapshot")" "$work/tampered-target" 2> "$work/bad.err"; then
  fail "restore.sh accepted a tampered snapshot"
fi
grep -q "checksum mismatch" "$work/bad.err" || fail "restore.sh on a tampered snapshot said: $(cat "$work/bad.err")"
[ ! -e "$work/tampered-target" ] || fail "restore.sh wrote into the target of a tampered snapshot"
echo "a tampered snapshot: refused ($(head -c 120 "$work/bad.err")...)"
restored="$work/restored"
t0=$(now)
"$root/deploy/restore.sh" "$snapshot" "$restored" | tee "$work/restore.out"
t1=$(now)
restore_seconds=$(secs "$t0" "$t1")
if "$root/deploy/restore.sh" "$snapshot" "$restored" 2> "$work/bad.err"; then fail "restore.sh wrote into a non-empty directory"; fi
grep -q "not empty" "$work/bad.err" || fail "restore.sh into a non-empty directory said: $(cat "$work/bad.err")"
echo "a non-empty target without --force: refused"
mkdir -p "$work/forced" && echo old > "$work/forced/dump.rdb"
"$root/deploy/restore.sh" --force --no_aof "$snapshot" "$work/forced" > /dev/null
cmp -s "$snapshot" "$work/forced/dump.rdb" && [ "$(cat "$work"/forced/before-restore-*/dump.rdb)" = old ] ||
  fail "restore.sh --force: $(find "$work/forced" | tr '\n' ' ')"
echo "--force: the old contents moved into $(basename "$work"/forced/before-restore-*)/, the snapshot in place"

run2="$work/restored-run"
mkdir -p "$run2"
read -r base2 redis2 < <(python3 "$root/tests/support/free_ports.py" 0 1 2 3 6 7 100 101 102 103 106)
t0=$(now)
redis-server --port "$redis2" --bind 127.0.0.1 --dir "$restored" --aclfile "$secrets/redis/users.acl" \
  --appendonly yes --appendfsync always --save '' > "$run2/redis.log" 2>&1 &
pids+=($!)
deadline=$(( $(date +%s) + 120 ))
until [ "$(rcli "$redis2" ping 2>/dev/null)" = PONG ]; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$run2/redis.log"; fail "the restored Redis exited"; }
  [ "$(date +%s)" -lt "$deadline" ] || fail "the restored Redis did not answer within 120s"
  sleep 0.1
done
keys2="$(rcli "$redis2" dbsize)"
[ "$keys2" = "$keys" ] || fail "the restored Redis has $keys2 keys, the snapshot $keys"
echo "restored Redis on 127.0.0.1:$redis2: $keys2 keys (loaded from $(ls "$restored/appendonlydir" | tr '\n' ' '))"
caught_up "$redis2" || fail "the snapshot holds outbox entries not yet consumed"

clock=(--clock_file="$LABSHARE_CLOCK_FILE")
declare -A svc_pid svc_name
start() {  # name port_offset [extra flags] (as run-local.sh starts them)
  local name=$1 off=$2; shift 2
  "$bin/labshare-$name" --listen="127.0.0.1:$((base2 + off))" --metrics_listen="127.0.0.1:$((base2 + 100 + off))" \
    --tls_cert="$pki/$name.crt" --tls_key="$pki/$name.key" --tls_ca="$pki/ca.crt" --jwks="$secrets/jwks.json" \
    --redis="127.0.0.1:$redis2" --redis_user="$name" --redis_password_file="$secrets/redis/$name.password" \
    "${clock[@]}" "$@" > "$run2/$name.out" 2> "$run2/$name.log" &
  pids+=($!)
  svc_pid[$off]=$! svc_name[$off]=$name
}
start inventory 0 --token_signing_key_file="$secrets/token-signing.pem" \
  --oidc_issuer="$LABSHARE_ISSUER" --oidc_ca_file="$pki/ca.crt"
start booking 1 --inventory="127.0.0.1:$base2" --sweep_interval=1s --inventory_cache_ttl=0s
start billing 2 --inventory="127.0.0.1:$base2" --lease_period_interval=1s
start usage 3 --audit_signing_key_file="$secrets/audit-signing.pem"
# The notifier too: its consumer groups are part of the restored state. Its
# relay (base2 + 7) takes no connection: mails wait for their retries.
start notify 6 --inventory="127.0.0.1:$base2" --smtp="127.0.0.1:$((base2 + 7))" \
  --console_url="http://127.0.0.1:$((base2 + 5))" --webhook_secret_key_file="$secrets/webhook-secret.key"
for off in 0 1 2 3 6; do
  deadline=$(( $(date +%s) + 180 ))
  until "$bin/labshare" --tls_ca="$pki/ca.crt" health "127.0.0.1:$((base2 + off))" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      # Its whole log, printed last by the outer part (the end of a long
      # output is what CI shows).
      name="${svc_name[$off]}" state="still running"
      kill -0 "${svc_pid[$off]}" 2>/dev/null || { wait "${svc_pid[$off]}" && state="exited (0)" || state="exited ($?)"; }
      { echo "--- the restored $name (port $((base2 + off)), $state): $run2/$name.log"; tail -n 200 "$run2/$name.log"
        echo "--- its standard output"; cat "$run2/$name.out"; } > "$work/not-serving.txt"
      fail "the restored $name on port $((base2 + off)) is not serving after 180s ($state)"
    fi
    sleep 0.2
  done
done
t1=$(now)
up_seconds=$(secs "$t0" "$t1")
cat > "$run2/labshare.conf" <<CONF
inventory = 127.0.0.1:$base2
booking = 127.0.0.1:$((base2 + 1))
billing = 127.0.0.1:$((base2 + 2))
usage = 127.0.0.1:$((base2 + 3))
tls_ca = $pki/ca.crt
CONF
echo "restored services on 127.0.0.1:$base2..$((base2 + 3)), serving ${up_seconds}s after Redis started"

step "5. The books of the restored platform"
record "$work/rec-b" "$run2/labshare.conf"
compare "$work/rec-a" "$work/rec-b" "the running platform and the restored one"
reports "$work/rep-a" "$orig_conf" "$head"
reports "$work/rep-b" "$run2/labshare.conf" "$head"
compare "$work/rep-a" "$work/rep-b" "annual report, its CSV, audit verification and export up to $head"
grep -q '"result": "VERIFIED"' "$work/rep-b/verify-to-recorded-head" || fail "restored: $(cat "$work/rep-b/verify-to-recorded-head")"
python3 "$root/deploy/verify_audit.py" "$work/rep-b/audit-to-recorded-head.jsonl" || fail "verify_audit.py rejects the restored export"

step "6. The whole audit chain of the restored data"
export LABSHARE_CONFIG="$run2/labshare.conf" LABSHARE_TOKEN; LABSHARE_TOKEN="$(token)"
wait_caught_up "$redis2" "the restored platform"  # the reports' own entries are appended
"$bin/labshare" --json usage VerifyAuditChain --request_id=restore-drill-verify-all > "$work/verify-all.json"
python3 - "$work/verify-all.json" "$head" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["result"] == "VERIFIED", d
assert int(d["entries_checked"]) >= int(sys.argv[2]), d
assert d["head"].get("signature"), d
print("VerifyAuditChain on the restored data: %s, %s entries, head %s signed (key %s)"
      % (d["result"], d["entries_checked"], d["head"]["sequence"], d["head"]["key_id"][:16]))
PY
"$bin/labshare" usage ExportAuditTrail --format=AUDIT_EXPORT_FORMAT_JSONL > "$work/audit-all.jsonl" ||
  fail "ExportAuditTrail on the restored data failed"
openssl pkey -in "$secrets/audit-signing.pem" -pubout -out "$work/audit.pub.pem" 2>/dev/null
python3 "$root/deploy/verify_audit.py" "$work/audit-all.jsonl" --public_key="$work/audit.pub.pem" ||
  fail "verify_audit.py rejects the restored audit trail"

step "Result"
echo "RESULT snapshot_bytes=$bytes"
echo "RESULT snapshot_keys=$keys"
echo "RESULT backup_seconds=$backup_seconds"
echo "RESULT restore_seconds=$restore_seconds"
echo "RESULT restored_platform_serving_seconds=$up_seconds"
echo "RESULT compared_files=$(( $(ls "$work/rec-a" | wc -l) + $(ls "$work/rep-a" | wc -l) ))"
echo "RESULT audit_head_compared=$head"
echo "restore drill: PASS"
