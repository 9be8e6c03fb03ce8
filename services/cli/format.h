// How the labshare client shows things to people: display width of UTF-8
// text (Chinese names line up in tables), times in a named time zone, answers
// as tables or "field: value" lines, and errors as one JSON object.
#ifndef LABSHARE_SERVICES_CLI_FORMAT_H_
#define LABSHARE_SERVICES_CLI_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/time/time.h"
#include "google/protobuf/message.h"

namespace labshare::cli {

// ------------------------------------------------------------ display width

// Terminal columns of one code point (a small wcwidth): 2 for East Asian
// Wide and Fullwidth characters (CJK ideographs, kana, Hangul syllables,
// fullwidth forms, CJK punctuation, the emoji blocks), 0 for combining marks,
// zero-width and format characters and C0/C1 controls, else 1.
int CodepointWidth(char32_t c);

// Columns of UTF-8 text; a byte that is not valid UTF-8 counts as 1.
size_t DisplayWidth(std::string_view utf8);

// Rows of cells, each column padded by display width, two spaces between
// columns, no trailing spaces; one "\n"-terminated line per row.
std::string RenderTable(const std::vector<std::vector<std::string>>& rows);

// ------------------------------------------------------------ time zones

struct NamedZone {
  std::string name;  // IANA name, e.g. "Asia/Shanghai"
  absl::TimeZone zone;
};

// The caller's zone: $TZ (an IANA name or the path of a zone database file,
// optionally with a leading ':'; anything else is UTC), else the system zone
// (/etc/localtime's link target, /etc/timezone), else UTC.
NamedZone CallerZone();

// An IANA zone by name (LoadIanaTimeZone); nullopt when it is none.
std::optional<NamedZone> LoadZone(const std::string& name);

// RFC 3339 with the zone's offset: "2027-03-02T09:00:00+08:00".
std::string FormatTimeIn(absl::Time t, const absl::TimeZone& zone);

// ------------------------------------------------------------ answers

struct PrintOptions {
  // Times outside tables, and in tables of rows not bound to an instrument.
  NamedZone caller_zone;
  // The zone of a table row bound to an instrument (its facility's), or
  // nullopt for the caller's zone. May be empty.
  std::function<std::optional<NamedZone>(const google::protobuf::Message& row)> row_zone;
};

// One field's value as text (index for repeated fields).
std::string Scalar(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f, int index,
                   const absl::TimeZone& zone);

// "field: value" lines (sub-messages as "a.b: value"), times in the caller's zone.
void PrintFields(const google::protobuf::Message& m, const PrintOptions& options, std::ostream& out);

// A list answer (one repeated message field) as a table: the simple fields
// of its items and, one level down, those of their sub-messages, the columns
// some row sets, at most 10; then "(N rows)" and the answer's other fields.
// Time columns name their zone in the header ("START_TIME (Asia/Shanghai)");
// when rows are in different zones a ZONE column names each row's. False
// (nothing printed) when the answer is not a list.
bool PrintTable(const google::protobuf::Message& m, const PrintOptions& options, std::ostream& out);

// ------------------------------------------------------------ files

// The field of an answer that is a file or a piece of one, which the client
// writes to stdout as it is (without --json): a non-repeated bytes field
// named content, data, chunk or csv (InvoiceDocument.content,
// CsvChunk.data, ExportAuditTrailResponse.data, ExportUsageResponse.csv);
// nullptr when the type has none. Other bytes fields (hashes, signatures)
// print as hex.
const google::protobuf::FieldDescriptor* RawContentField(const google::protobuf::Descriptor* d);

// Whether m has another member of raw's oneof set: then m is no piece of the
// file (ExportUsageResponse.rows) and prints as an answer.
bool OtherOneofMemberSet(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* raw);

// ------------------------------------------------------------ money

// Minor units as a decimal amount with the currency's ISO 4217 digits
// (common/currency.h): 150000 CNY -> "1500.00 CNY", 1500 JPY -> "1500 JPY",
// 1500 KWD -> "1.500 KWD", -5 CNY -> "-0.05 CNY".
std::string FormatMoney(int64_t amount_minor, const std::string& currency);

// "AMOUNT [CURRENCY]" (CNY when none) in major units -> minor units: "500 CNY"
// and "500.00 CNY" are 50000, "1.5 KWD" 1500, "1500 JPY" 1500; a leading "-"
// is kept. More decimals than the currency has ("500.001 CNY", "1.5 JPY"),
// anything but digits and one ".", or more than 64 bits is refused (false,
// *error says why).
bool ParseMoney(std::string_view text, int64_t* amount_minor, std::string* currency, std::string* error);

// ------------------------------------------------------------ errors

// A failed call as one line of JSON:
// {"code":"NOT_FOUND","code_number":5,"reason":"BOOKING_NOT_FOUND","domain":"booking.labshare",
//  "message":"...","metadata":{...},"field_violations":[{"field":"...","description":"..."}],
//  "retry_delay":"1.5s","exit_code":15}
// (retry_delay only with a google.rpc.RetryInfo).
std::string StatusJson(const grpc::Status& status, int exit_code);

// A local failure of the client (bad flag, unreadable file) the same way:
// code "USAGE" (exit 2) or "LOCAL" (exit 3), reason "".
std::string LocalErrorJson(const std::string& code, const std::string& message, int exit_code);

// The name of a gRPC status code ("NOT_FOUND").
std::string CodeName(int code);

// A JSON string literal.
std::string JsonQuote(std::string_view s);

}  // namespace labshare::cli

#endif  // LABSHARE_SERVICES_CLI_FORMAT_H_
