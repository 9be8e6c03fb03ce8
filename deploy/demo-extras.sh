#!/bin/bash
# The rest of the demo consortium, after labshare-demo-seed: an SME subsidy
# pool (billing) and a joint-research project (booking), through the client.
# Idempotent (request ids), so a restart is harmless.
# Needs LABSHARE_BIN, LABSHARE_DATA_DIR, a consortium admin's token in
# LABSHARE_TOKEN and the client's settings (LABSHARE_CONFIG: addresses, CA).
set -euo pipefail
build_bin="${LABSHARE_BIN:?}"
data="${LABSHARE_DATA_DIR:?}"
: "${LABSHARE_TOKEN:?a consortium admin token}"
cli() { "$build_bin/labshare" "$@" >/dev/null; }
cli billing CreateSubsidyPool --subsidy_pool_id=sme-voucher --request_id=demo-pool \
  --subsidy_pool.display_name="SME innovation voucher" --subsidy_pool.funder_display_name="Provincial S&T Department" \
  --subsidy_pool.currency_code=CNY --subsidy_pool.percentage_bps=5000 --subsidy_pool.eligibility.size_classes=SME \
  --subsidy_pool.cap_per_organization="20000.00 CNY" --subsidy_pool.cap_period_kind=MONTHLY
cli billing TopUpSubsidyPool subsidyPools/sme-voucher --amount="100000.00 CNY" --request_id=demo-pool-funds
now="$("$build_bin/labshare" inventory GetInstrument instruments/sem-1 --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["create_time"])')"
python3 - "$now" > "$data/project.json" <<'PY'
import datetime, json, sys
start = datetime.datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00"))
end = start + datetime.timedelta(days=92)
print(json.dumps({"project_id": "prj-demo", "request_id": "demo-project", "project": {
  "title": "Wide-bandgap thin films", "cost_share_template": "CUSTOM",
  "participants": [{"organization": "organizations/zju", "share_bps": 5000},
                   {"organization": "organizations/nanocraft", "share_bps": 5000}],
  "period": {"start_time": start.isoformat(), "end_time": end.isoformat()},
  "instrument_budgets": [{"instrument": "instruments/sem-1", "budget": "72000s"}]}}))
PY
cli booking CreateProject --request_file="$data/project.json"
echo "demo extras: subsidy pool sme-voucher (100000.00 CNY), project prj-demo (zju + nanocraft)"
