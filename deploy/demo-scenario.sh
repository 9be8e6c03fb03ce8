#!/bin/bash
# The demo month (March 2027, Asia/Shanghai), driven through the labshare
# command-line client against a running platform in demo time:
#
#   LABSHARE_CLOCK_FILE=/tmp/labshare-clock deploy/run-local.sh --fresh --then deploy/demo-scenario.sh
#
# One booking in each sharing mode with check-in/out, a missed booking, a
# technical-service order, a lease, then month-end invoicing, settlement (and
# its payment) and the utilisation report. It moves the demo clock
# (LABSHARE_CLOCK_FILE) forward and prints the results; the last lines are
# "RESULT key=value" pairs that tests/e2e/demo_test.sh checks.
#
# Everything goes over TLS, and every persona is a person signed in at the
# OpenID provider: each runs `labshare login` (device flow) with its own
# XDG_CONFIG_HOME, and deploy/oidc/approve-device.mjs plays that person at
# the browser (the provider's real login and consent pages; the demo
# passwords are demo-<username>). LabShare takes the roles from inventory.
# Needs: LABSHARE_BIN (the binaries), LABSHARE_CONFIG (the client's
# settings: addresses, tls_ca), LABSHARE_TLS_CA and LABSHARE_ISSUER
# (run-local sets them all); python3, node and curl on PATH (a development
# machine: deploy/install-deps.sh; the service image has none of them).
set -euo pipefail
for tool in python3 node curl; do
  command -v "$tool" >/dev/null || { echo "demo-scenario.sh needs $tool (deploy/install-deps.sh installs it)" >&2; exit 1; }
done
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${LABSHARE_BIN:?set LABSHARE_BIN to the directory of the binaries}"
clock="${LABSHARE_CLOCK_FILE:?the demo needs LABSHARE_CLOCK_FILE (demo time)}"
issuer="${LABSHARE_ISSUER:?the issuer URL of the OpenID provider}"
ca="${LABSHARE_TLS_CA:?the CA file of the platform certificates}"
unset LABSHARE_TOKEN LABSHARE_TOKEN_FILE
homes="$(mktemp -d)"
trap 'rm -rf "$homes"' EXIT

# Signs a persona in: `labshare login` waits for the person; the person
# (approve-device.mjs) enters the code shown and signs in.
signin() {  # username
  local who=$1 code="" pid
  mkdir -p "$homes/$who"
  XDG_CONFIG_HOME="$homes/$who" "$bin/labshare" login > "$homes/$who.login" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    code="$(sed -n 's/.*shows the code: \([A-Z0-9-]*\).*/\1/p' "$homes/$who.login" 2>/dev/null || true)"
    [ -n "$code" ] && break
    sleep 0.1
  done
  [ -n "$code" ] || { echo "no user code from labshare login ($who):"; cat "$homes/$who.login"; return 1; }
  node "$root/deploy/oidc/approve-device.mjs" --issuer="$issuer" --ca="$ca" --user_code="$code" \
    --login="$who@example.org" --password="demo-$who" >/dev/null
  wait "$pid" || { echo "labshare login ($who):"; cat "$homes/$who.login"; return 1; }
}
echo "### 0. Everyone signs in at the consortium's OpenID provider ($issuer)"
admin=admin auditor=auditor liwei=li-wei chen=chen-jing wang=wang-fang zhao=zhao-lei
people=("$admin" "$auditor" "$liwei" "$chen" "$wang" "$zhao")
signing=()
for who in "${people[@]}"; do signin "$who" & signing+=($!); done  # all at once: each login polls
for p in "${signing[@]}"; do wait "$p"; done
for who in "${people[@]}"; do
  echo "signed in: $(XDG_CONFIG_HOME="$homes/$who" "$bin/labshare" whoami | tr '\n' ' ')"
done

at() { echo "$1" > "$clock.next" && mv "$clock.next" "$clock"; echo; echo "== $1"; }  # atomic
ls_() { local who=$1; shift; XDG_CONFIG_HOME="$homes/$who" "$bin/labshare" "$@"; }
# The JSON answer of a call, and one field of it (python3 path expression).
js() { local who=$1; shift; XDG_CONFIG_HOME="$homes/$who" "$bin/labshare" --json "$@"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# Waits (bounded) until a command's output contains a string.
until_has() {
  local want=$1; shift
  for _ in $(seq 100); do
    if "$@" 2>/dev/null | grep -q "$want"; then return 0; fi
    sleep 0.2
  done
  echo "timed out waiting for: $want" >&2
  return 1
}
iv() { echo "{\"start_time\":\"$1\",\"end_time\":\"$2\"}"; }

echo "### 1. On-site: Li Wei (NanoCraft, an SME) on the field-emission SEM"
at 2027-03-01T09:00:00+08:00
ls_ "$liwei" booking CreateBooking --booking_id=demo-onsite --request_id=demo-onsite \
  --booking.instrument=instruments/sem-1 --booking.mode=ON_SITE \
  --booking.reserved_interval="$(iv 2027-03-02T09:00:00+08:00 2027-03-02T11:00:00+08:00)" | grep -E "^(name|state):"
ls_ "$liwei" booking CreateBooking --booking_id=demo-missed --request_id=demo-missed \
  --booking.instrument=instruments/sem-1 --booking.mode=ON_SITE \
  --booking.reserved_interval="$(iv 2027-03-03T14:00:00+08:00 2027-03-03T15:00:00+08:00)" | grep -E "^(name|state):"
at 2027-03-02T09:00:00+08:00
ls_ "$liwei" booking CheckIn bookings/demo-onsite | grep -E "^state:"
at 2027-03-02T10:30:00+08:00
ls_ "$liwei" booking CheckOut bookings/demo-onsite | grep -E "^(state|session)"

echo "### 2. Missed: nobody came to the 14:00 slot"
at 2027-03-03T15:00:00+08:00
until_has "state: MISSED" ls_ "$liwei" booking GetBooking bookings/demo-missed
echo "bookings/demo-missed is MISSED (the sweep decided it)"

echo "### 3. Joint research: project prj-demo (ZJU and NanoCraft, half each)"
at 2027-03-03T16:00:00+08:00
ls_ "$liwei" booking CreateBooking --booking_id=demo-joint --request_id=demo-joint \
  --booking.instrument=instruments/sem-1 --booking.mode=JOINT_RESEARCH --booking.project=projects/prj-demo \
  --booking.reserved_interval="$(iv 2027-03-04T09:00:00+08:00 2027-03-04T10:00:00+08:00)" | grep -E "^(name|state):"
at 2027-03-04T09:00:00+08:00
ls_ "$liwei" booking CheckIn bookings/demo-joint >/dev/null
at 2027-03-04T10:00:00+08:00
ls_ "$liwei" booking CheckOut bookings/demo-joint | grep -E "^state:"

echo "### 4. Technical service: BioTek sends 4 samples to the SJTU confocal"
order=$(js "$chen" booking CreateServiceOrder --request_id=demo-order \
  --service_order.instrument=instruments/confocal --service_order.service_entry_id=analysis \
  --service_order.sample_count=4 --service_order.sample_description="fixed cell cultures" | field 'd["name"]')
etag=$(js "$zhao" booking IssueQuote "$order" --request_id=demo-quote \
  --quote.per_sample_fee="175.00 CNY" --quote.staff_time_fee="300.00 CNY" --quote.consumables="50.00 CNY" \
  --quote.valid_until=2027-03-31T00:00:00+08:00 | field 'd["quote"]["quote_etag"]')
ls_ "$chen" booking AcceptQuote "$order" --quote_etag="$etag" --request_id=demo-accept | grep -E "^state:"
ls_ "$zhao" booking ReceiveSamples "$order" --received_sample_count=4 --request_id=demo-samples | grep -E "^state:"
ls_ "$zhao" booking ScheduleService "$order" --request_id=demo-schedule \
  --interval="$(iv 2027-03-05T09:00:00+08:00 2027-03-05T11:00:00+08:00)" | grep -E "^state:"
at 2027-03-05T09:00:00+08:00
ls_ "$zhao" booking StartService "$order" --request_id=demo-start | grep -E "^state:"
at 2027-03-05T11:00:00+08:00
ls_ "$zhao" booking DeliverReport "$order" --request_id=demo-report --report.uri=https://files.example.org/demo.pdf \
  --report.sha256=9f2c5d8e1b3a4c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d \
  --report.summary="4 samples imaged" | grep -E "^state:"
ls_ "$chen" booking AcceptReport "$order" --request_id=demo-report-ok | grep -E "^state:"

echo "### 5. Lease: NanoCraft takes the ZJU AFM home for a week"
at 2027-03-05T12:00:00+08:00
lease=$(js "$liwei" booking RequestLease --request_id=demo-lease \
  --lease.instrument=instruments/afm-1 --lease.purpose="in-line film inspection" \
  --lease.term="$(iv 2027-03-08T09:00:00+08:00 2027-03-16T09:00:00+08:00)" | field 'd["name"]')
ls_ "$wang" booking ApproveLease "$lease" --request_id=demo-lease-ok --contract.rate_basis=DAILY \
  --contract.rate="1800.00 CNY" --contract.deposit="110000.00 CNY" | grep -E "^state:"
at 2027-03-08T09:00:00+08:00
ls_ "$wang" booking RecordHandover "$lease" --condition_notes="calibrated, tip new" --request_id=demo-handover | grep -E "^state:"
at 2027-03-15T09:00:00+08:00
ls_ "$wang" booking RecordReturn "$lease" --condition_notes="as handed over" --request_id=demo-return | grep -E "^state:"
ls_ "$wang" booking CloseLease "$lease" --request_id=demo-close | grep -E "^state:"

# Billing posts at the time it consumes an event: let it catch up before
# the clock jumps to April.
until_has "DEPOSIT_RELEASE" ls_ "$admin" billing ListPostings --organization=organizations/zju --kind=DEPOSIT_RELEASE

echo "### 6. Month end: invoices, settlement, payment"
at 2027-04-01T10:00:00+08:00
for payer in nanocraft biotek zju; do
  ls_ "$admin" billing IssueInvoice --payer_organization=organizations/$payer --period=2027-03 \
    --request_id=demo-invoice-$payer > "/tmp/labshare-demo-invoice-$payer.txt"
  grep -E "^(number|amount_due):" "/tmp/labshare-demo-invoice-$payer.txt" | sed "s/^/  $payer /"
done
ls_ "$admin" billing ListInvoices --period=2027-03
settlement=$(js "$admin" billing ComputeSettlement --period=2027-03 --request_id=demo-settle | field 'd["name"]')
ls_ "$admin" billing GetSettlement "$settlement" | grep -E "^transfers|^gross_total|^transfer_total"
transfers=$(js "$admin" billing GetSettlement "$settlement" |
  field '"\n".join("%d %s %s %s" % (t.get("index", 0), t["from_organization"], t["to_organization"], t["amount"]["amount_minor"]) for t in d["transfers"])')
while read -r index from to amount; do
  [ -n "$index" ] || continue
  ls_ "$admin" billing RecordPayment --request_id="demo-pay-$index" --payment.payer="$from" --payment.payee="$to" \
    --payment.amount="$(printf '%d.%02d CNY' $((amount / 100)) $((amount % 100)))" \
    --payment.settlement="$settlement" --payment.transfer_index="$index" >/dev/null
  echo "  paid transfer $index: $from -> $to $amount"
done <<< "$transfers"
ls_ "$admin" billing GetSettlement "$settlement" | grep -E "^state:"

echo "### 7. The March utilisation report"
march="--range.start_time=2027-03-01T00:00:00+08:00 --range.end_time=2027-04-01T00:00:00+08:00"
until_has "effective_seconds" ls_ "$auditor" usage GetUsageFigures $march --filter.instruments=instruments/sem-1
ls_ "$auditor" usage GetUsageFigures $march --filter.instruments=instruments/sem-1 |
  grep -E "^figures\.(effective_seconds|external_seconds|available_seconds|bookings|missed_bookings|service_income|in_kind_contribution|utilization.basis_points|sharing_rate.basis_points):"
ls_ "$auditor" usage QueryUsage $march --group_by=DIMENSION_OWNER_ORGANIZATION | head -8
ls_ "$auditor" usage VerifyAuditChain | grep -E "^(result|entries_checked)"

if [ -n "${LABSHARE_CONSOLE_URL:-}" ]; then
  echo "### 8. A member firm's script: the HTTP API of the console with the signed-in token"
  api_answer=$(curl -sS --fail-with-body -H "Authorization: Bearer $(XDG_CONFIG_HOME="$homes/$liwei" "$bin/labshare" token)" \
    -H 'Content-Type: application/json' -d '{"name":"bookings/demo-onsite"}' \
    "$LABSHARE_CONSOLE_URL/labshare.booking.v1.BookingService/GetBooking")
  echo "$api_answer" | head -c 300; echo
  echo "RESULT http_api_booking_state=$(echo "$api_answer" | field 'd["state"]')"
  refused=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d '{"name":"bookings/demo-onsite"}' \
    "$LABSHARE_CONSOLE_URL/labshare.booking.v1.BookingService/GetBooking")
  echo "RESULT http_api_without_token=$refused"
fi

echo
invoice() { js "$admin" billing ListInvoices --period=2027-03 --payer_organization=organizations/$1 |
  field 'd["invoices"][0]["amount_due"]["amount_minor"]'; }
sem=$(js "$auditor" usage GetUsageFigures $march --filter.instruments=instruments/sem-1)
echo "RESULT invoice_nanocraft=$(invoice nanocraft)"
echo "RESULT invoice_biotek=$(invoice biotek)"
echo "RESULT invoice_zju=$(invoice zju)"
# The month's invoice documents (billing GetInvoiceDocument, PDF with the
# fapiao details copied at issue), saved and read back with pdftotext.
docs="${LABSHARE_DATA_DIR:-$root/deploy/.data}/invoices"
mkdir -p "$docs"
for payer in nanocraft biotek zju; do
  name=$(js "$admin" billing ListInvoices --period=2027-03 --payer_organization=organizations/$payer | field 'd["invoices"][0]["name"]')
  js "$admin" billing GetInvoiceDocument "$name" --format=PDF |
    python3 -c 'import base64, json, sys; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["content"]))' \
    > "$docs/$payer.pdf"
  pdftotext -enc UTF-8 -layout "$docs/$payer.pdf" "$docs/$payer.txt"
  # "应付总额 Amount due   117875.00 CNY" -> 11787500 minor units
  echo "RESULT invoice_pdf_$payer=$(sed -n 's/.*Amount due *\(-\{0,1\}[0-9]*\)\.\([0-9][0-9]\) CNY.*/\1\2/p' "$docs/$payer.txt" | head -1 | sed 's/^\(-\{0,1\}\)0*\([0-9]\)/\1\2/')"
  echo "RESULT invoice_pdf_tax_$payer=$(sed -n 's/.*of which tax *\(-\{0,1\}[0-9]*\.[0-9][0-9]\) CNY.*/\1/p' "$docs/$payer.txt" | head -1)"
done
echo "  invoice PDFs: $docs/{nanocraft,biotek,zju}.pdf"
echo "RESULT invoice_pdf_payer_nanocraft=$(grep -o '纳米工坊材料科技（杭州）有限公司' "$docs/nanocraft.txt" | head -1)"
echo "RESULT invoice_pdf_payee_nanocraft=$(grep -o '浙江大学' "$docs/nanocraft.txt" | head -1)"
echo "RESULT settlement_state=$(js "$admin" billing GetSettlement "$settlement" | field 'd["state"]')"
echo "RESULT transfers=$(echo "$transfers" | tr '\n' ';')"
echo "RESULT sem1_effective_seconds=$(echo "$sem" | field 'd["figures"].get("effective_seconds", "0")')"
echo "RESULT sem1_bookings=$(echo "$sem" | field 'd["figures"].get("bookings", "0")')"
echo "RESULT sem1_service_income=$(echo "$sem" | field 'd["figures"]["service_income"].get("amount_minor", "0")')"
echo "RESULT audit=$(js "$auditor" usage VerifyAuditChain | field 'd["result"]')"
