#!/bin/bash
# End to end: Redis and the four services as separate processes (the local
# launcher, on free loopback ports, in demo time), the demo consortium, and
# the demo scenario through the labshare client; asserts the month's invoice
# amounts, the settlement and the utilisation figures.
#
# usage: tests/e2e/demo_test.sh BUILD_DIR   (BUILD_DIR/bin holds the binaries)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
read -r base redis_port < <(python3 - <<'PY'
import socket
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
# four consecutive free ports for the services (and their +100 metrics ports)
import random
while True:
    b = random.randint(20000, 40000)
    ok = True
    for p in [b, b + 1, b + 2, b + 3, b + 100, b + 101, b + 102, b + 103]:
        s = socket.socket()
        try: s.bind(("127.0.0.1", p))
        except OSError: ok = False
        finally: s.close()
    if ok: break
print(b, free())
PY
)
LABSHARE_BUILD_DIR="$build" LABSHARE_NO_BUILD=1 LABSHARE_BASE_PORT="$base" LABSHARE_REDIS_PORT="$redis_port" \
LABSHARE_DATA_DIR="$work/data" LABSHARE_CLOCK_FILE="$work/clock" \
  "$root/deploy/run-local.sh" --fresh --then "$root/deploy/demo-scenario.sh" > "$work/out" 2>&1 || {
  echo "the demo failed:"; cat "$work/out"
  for f in "$work"/data/*.log; do echo "--- $f"; tail -20 "$f"; done
  exit 1
}
cat "$work/out"
fail=0
expect() {  # key value
  local got
  got="$(grep "^RESULT $1=" "$work/out" | head -1 | cut -d= -f2-)"
  if [ "$got" != "$2" ]; then echo "FAIL $1: expected '$2', got '$got'"; fail=1; else echo "ok   $1=$2"; fi
}
# NanoCraft (SME, 50 % voucher): on-site 2 h x 480.00 = 960.00 (voucher 480.00), missed fee
# 50 % x 480.00 = 240.00 (120.00), its half of 1 h joint research at 300.00 = 150.00 (75.00),
# AFM lease 8 days x 1800.00 = 14400.00 (7200.00) and the deposit 110000.00:
# 125750.00 - 7875.00 = 117875.00.
expect invoice_nanocraft 11787500
# BioTek: 4 samples x 175.00 + staff 300.00 + consumables 50.00.
expect invoice_biotek 105000
# ZJU owes NanoCraft its deposit back.
expect invoice_zju 11000000
# Net: NanoCraft pays ZJU 117875.00 - 110000.00; BioTek pays SJTU.
expect transfers "0 organizations/biotek organizations/sjtu 105000;1 organizations/nanocraft organizations/zju 787500;"
expect settlement_state CLEARED
# sem-1 in March: 1.5 h on site + 1 h joint research; 3 bookings; income
# 960.00 + 240.00 + 150.00 (the owner's half is in kind).
expect sem1_effective_seconds 9000
expect sem1_bookings 3
expect sem1_service_income 135000
expect audit VERIFIED
exit $fail
