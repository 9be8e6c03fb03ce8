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
# The invoice PDFs (pdftotext) show the ledger's totals and the Chinese
# names of the fapiao details. NanoCraft's tax: 6 % in the on-site 960.00
# (54.34) and the missed fee 240.00 (13.58), less the voucher's halves
# (-27.17, -6.79); joint research, the lease and the deposit state none.
expect invoice_pdf_nanocraft 11787500
expect invoice_pdf_biotek 105000
expect invoice_pdf_zju 11000000
expect invoice_pdf_tax_nanocraft 33.96
# BioTek's technical service takes the 6 % of sjtu's catalogue line: 39.62
# in the samples' 700.00, 16.98 in the staff time's 300.00, 2.83 in the
# consumables' 50.00.
expect invoice_pdf_tax_biotek 59.43
expect invoice_pdf_payer_nanocraft 纳米工坊材料科技（杭州）有限公司
expect invoice_pdf_payee_nanocraft 浙江大学
# Net: NanoCraft pays ZJU 117875.00 - 110000.00; BioTek pays SJTU.
expect transfers "0 organizations/biotek organizations/sjtu 105000;1 organizations/nanocraft organizations/zju 787500;"
expect settlement_state CLEARED
# sem-1 in March: 1.5 h on site + 1 h joint research; 3 bookings; income
# 960.00 + 240.00 + 150.00 (the owner's half is in kind).
expect sem1_effective_seconds 9000
expect sem1_bookings 3
expect sem1_service_income 135000
expect audit VERIFIED
