# The demo month's expected results, checked against the RESULT lines of
# deploy/demo-scenario.sh in $out. Sourced by the end-to-end tests; sets $fail.
fail=0
expect() {  # key value
  local got
  got="$(grep "^RESULT $1=" "$out" | head -1 | cut -d= -f2-)"
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
