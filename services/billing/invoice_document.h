// Invoice documents (billing.proto GetInvoiceDocument): an issued invoice as
// CSV (RFC 4180, UTF-8, CRLF) or PDF (A4, cairo + pango, Noto Sans CJK).
// Pure functions of the stored Invoice: everything printed (parties with
// their fapiao details, lines, tax, totals) was copied onto it at issue, so
// the document never changes while the invoice's state does not; a VOID
// invoice is marked VOID. Dates are printed in the consortium time zone.
#ifndef LABSHARE_SERVICES_BILLING_INVOICE_DOCUMENT_H_
#define LABSHARE_SERVICES_BILLING_INVOICE_DOCUMENT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "labshare/billing/v1/billing.pb.h"

namespace labshare::billing {

// "1234.56" for 123456 minor units of CNY (two decimals; JPY, KRW and other
// zero-decimal currencies none); "-0.05" for -5. No thousands separators.
std::string FormatAmount(int64_t minor, absl::string_view currency);
// "6%" for 600 bps, "6.5%" for 650, "0%" for 0.
std::string FormatTaxRate(int32_t bps);
// "2.5" for 2500 milli-units, "12" for 12000.
std::string FormatQuantity(int64_t milli);
// One CSV field quoted as RFC 4180 requires (only when it contains a comma,
// a quote, CR or LF; quotes doubled). A text cell (`numeric` false) that
// begins with =, +, -, @, tab or CR is prefixed with an apostrophe, so a
// spreadsheet shows it as text and never runs it as a formula ("-100" too);
// a numeric cell (an amount, quantity or rate the document wrote) that is a
// plain number ("-12.34", "6%") stays a number.
std::string CsvField(absl::string_view value, bool numeric = false);

// What a charge is, in the words invoices print (Charge.description when
// billing prices it): fee kind, mode, instrument and service time in `zone`,
// e.g. "仪器机时 Instrument time · 现场使用 on site · tem · 2025-03-02 09:00–11:00".
std::string ChargeText(v1::FeeKind fee_kind, labshare::type::v1::SharingMode mode, const std::string& instrument,
                       const labshare::type::v1::Interval* service_interval, absl::TimeZone zone);

std::string InvoiceCsv(const v1::Invoice& invoice, absl::TimeZone zone);
// INTERNAL (DOCUMENT_RENDER_FAILED) when cairo fails.
absl::StatusOr<std::string> InvoicePdf(const v1::Invoice& invoice, absl::TimeZone zone);

}  // namespace labshare::billing

#endif  // LABSHARE_SERVICES_BILLING_INVOICE_DOCUMENT_H_
