#!/bin/bash
# The rest of the demo consortium, after labshare-demo-seed: an SME subsidy
# pool (billing) and a joint-research project (booking), through the client.
# Idempotent (request ids), so a restart is harmless.
# Needs LABSHARE_BIN, a consortium admin's token in LABSHARE_TOKEN and the
# client's settings (LABSHARE_CONFIG: addresses, CA; or the LABSHARE_<FLAG>
# variables). Runs with bash, GNU date and the client alone, as the service
# image has them: no python3, jq or node (tests/deploy/validate_deploy.sh
# runs it with nothing else on PATH).
set -euo pipefail
build_bin="${LABSHARE_BIN:?}"
: "${LABSHARE_TOKEN:?a consortium admin token}"
cli() { "$build_bin/labshare" "$@" >/dev/null; }
cli billing CreateSubsidyPool --subsidy_pool_id=sme-voucher --request_id=demo-pool \
  --subsidy_pool.display_name="SME innovation voucher" --subsidy_pool.funder_display_name="Provincial S&T Department" \
  --subsidy_pool.currency_code=CNY --subsidy_pool.percentage_bps=5000 --subsidy_pool.eligibility.size_classes=SME \
  --subsidy_pool.cap_per_organization="20000.00 CNY" --subsidy_pool.cap_period_kind=MONTHLY
cli billing TopUpSubsidyPool subsidyPools/sme-voucher --amount="100000.00 CNY" --request_id=demo-pool-funds

# The project runs 92 days from the SEM's creation (the services' clock, not
# this machine's): its create_time from the client's JSON (one field per
# line; the outermost one is the instrument's), always UTC ("...Z").
instrument="$("$build_bin/labshare" inventory GetInstrument instruments/sem-1 --json)"
start="" depth=""
while IFS= read -r line; do
  if [[ $line =~ ^([[:space:]]*)\"create_time\":[[:space:]]*\"([^\"]+)\" ]] &&
     { [ -z "$depth" ] || [ "${#BASH_REMATCH[1]}" -lt "$depth" ]; }; then
    depth="${#BASH_REMATCH[1]}" start="${BASH_REMATCH[2]}"
  fi
done <<< "$instrument"
[[ $start =~ ^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?Z$ ]] ||
  { echo "demo-extras.sh: instruments/sem-1 has no create_time I can read: '$start'" >&2; exit 1; }
whole="${BASH_REMATCH[1]}" fraction="${BASH_REMATCH[2]}"
end="$(date -u -d "@$(( $(date -u -d "${whole}Z" +%s) + 92 * 86400 ))" +%Y-%m-%dT%H:%M:%S)${fraction}Z"
read -r -d '' request <<JSON || true
{"project_id": "prj-demo", "request_id": "demo-project", "project": {
  "title": "Wide-bandgap thin films", "cost_share_template": "CUSTOM",
  "participants": [{"organization": "organizations/zju", "share_bps": 5000},
                   {"organization": "organizations/nanocraft", "share_bps": 5000}],
  "period": {"start_time": "$start", "end_time": "$end"},
  "instrument_budgets": [{"instrument": "instruments/sem-1", "budget": "72000s"}]}}
JSON
cli booking CreateProject --request="$request"
echo "demo extras: subsidy pool sme-voucher (100000.00 CNY), project prj-demo (zju + nanocraft)"
