#include "services/cli/format.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/currency.h"
#include "common/grpc_status.h"
#include "common/time_zone.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "google/rpc/error_details.pb.h"

namespace labshare::cli {

namespace pb = google::protobuf;

// ------------------------------------------------------------ display width

namespace {

struct Range {
  char32_t first, last;
};

// Zero columns: C0/C1 controls, combining marks (Mn, Me) of the common
// scripts, Hangul medial vowels and final consonants, zero-width and
// format characters (Cf), variation selectors and tags.
constexpr Range kZeroWidth[] = {
    {0x0000, 0x001F},   {0x007F, 0x009F},   {0x0300, 0x036F},   {0x0483, 0x0489},   {0x0591, 0x05BD},
    {0x05BF, 0x05BF},   {0x05C1, 0x05C2},   {0x05C4, 0x05C5},   {0x05C7, 0x05C7},   {0x0600, 0x0605},
    {0x0610, 0x061A},   {0x061C, 0x061C},   {0x064B, 0x065F},   {0x0670, 0x0670},   {0x06D6, 0x06DD},
    {0x06DF, 0x06E4},   {0x06E7, 0x06E8},   {0x06EA, 0x06ED},   {0x0900, 0x0902},   {0x093A, 0x093A},
    {0x093C, 0x093C},   {0x0941, 0x0948},   {0x094D, 0x094D},   {0x0951, 0x0957},   {0x0962, 0x0963},
    {0x0E31, 0x0E31},   {0x0E34, 0x0E3A},   {0x0E47, 0x0E4E},   {0x1160, 0x11FF},   {0x1AB0, 0x1AFF},
    {0x1DC0, 0x1DFF},   {0x200B, 0x200F},   {0x202A, 0x202E},   {0x2060, 0x2064},   {0x20D0, 0x20F0},
    {0x302A, 0x302D},   {0x3099, 0x309A},   {0xFE00, 0xFE0F},   {0xFE20, 0xFE2F},   {0xFEFF, 0xFEFF},
    {0xE0001, 0xE0001}, {0xE0020, 0xE007F}, {0xE0100, 0xE01EF},
};

// Two columns: East Asian Wide (W) and Fullwidth (F) of Unicode 14, with
// the emoji blocks counted whole.
constexpr Range kWide[] = {
    {0x1100, 0x115F},   {0x231A, 0x231B},   {0x2329, 0x232A},   {0x23E9, 0x23EC},   {0x23F0, 0x23F0},
    {0x23F3, 0x23F3},   {0x25FD, 0x25FE},   {0x2614, 0x2615},   {0x2648, 0x2653},   {0x267F, 0x267F},
    {0x2693, 0x2693},   {0x26A1, 0x26A1},   {0x26AA, 0x26AB},   {0x26BD, 0x26BE},   {0x26C4, 0x26C5},
    {0x26CE, 0x26CE},   {0x26D4, 0x26D4},   {0x26EA, 0x26EA},   {0x26F2, 0x26F3},   {0x26F5, 0x26F5},
    {0x26FA, 0x26FA},   {0x26FD, 0x26FD},   {0x2705, 0x2705},   {0x270A, 0x270B},   {0x2728, 0x2728},
    {0x274C, 0x274C},   {0x274E, 0x274E},   {0x2753, 0x2755},   {0x2757, 0x2757},   {0x2795, 0x2797},
    {0x27B0, 0x27B0},   {0x27BF, 0x27BF},   {0x2B1B, 0x2B1C},   {0x2B50, 0x2B50},   {0x2B55, 0x2B55},
    {0x2E80, 0x303E},   {0x3041, 0x33FF},   {0x3400, 0x4DBF},   {0x4E00, 0x9FFF},   {0xA000, 0xA4CF},
    {0xA960, 0xA97F},   {0xAC00, 0xD7A3},   {0xF900, 0xFAFF},   {0xFE10, 0xFE19},   {0xFE30, 0xFE6F},
    {0xFF00, 0xFF60},   {0xFFE0, 0xFFE6},   {0x16FE0, 0x18D08}, {0x1AFF0, 0x1B2FF}, {0x1F004, 0x1F004},
    {0x1F0CF, 0x1F0CF}, {0x1F18E, 0x1F18E}, {0x1F191, 0x1F19A}, {0x1F200, 0x1F2FF}, {0x1F300, 0x1F64F},
    {0x1F680, 0x1F6FF}, {0x1F7E0, 0x1F7F0}, {0x1F900, 0x1F9FF}, {0x1FA70, 0x1FAFF}, {0x20000, 0x2FFFD},
    {0x30000, 0x3FFFD},
};

template <size_t N>
bool InRanges(const Range (&ranges)[N], char32_t c) {
  size_t lo = 0, hi = N;  // binary search over sorted, disjoint ranges
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (c < ranges[mid].first) {
      hi = mid;
    } else if (c > ranges[mid].last) {
      lo = mid + 1;
    } else {
      return true;
    }
  }
  return false;
}

}  // namespace

int CodepointWidth(char32_t c) {
  if (c >= 0x20 && c < 0x7F) return 1;
  if (InRanges(kZeroWidth, c)) return 0;
  if (InRanges(kWide, c)) return 2;
  return 1;
}

size_t DisplayWidth(std::string_view s) {
  size_t width = 0;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    char32_t c = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    bool valid = len != 0 && i + len <= s.size();
    for (size_t k = 1; valid && k < len; ++k) {
      const auto cont = static_cast<unsigned char>(s[i + k]);
      if ((cont & 0xC0) != 0x80) valid = false;
      c = (c << 6) | (cont & 0x3F);
    }
    if (!valid) {
      width += 1;
      i += 1;
      continue;
    }
    width += static_cast<size_t>(CodepointWidth(c));
    i += len;
  }
  return width;
}

std::string RenderTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], DisplayWidth(row[i]));
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - DisplayWidth(row[i]) + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

// ------------------------------------------------------------ time zones

std::optional<NamedZone> LoadZone(const std::string& name) {
  absl::TimeZone zone;
  if (!LoadIanaTimeZone(name, &zone)) return std::nullopt;
  return NamedZone{name, zone};
}

namespace {

// The zone of a file of the zone database, or of a link to one
// ("/etc/localtime" -> "/usr/share/zoneinfo/Asia/Shanghai"): the IANA name
// after "zoneinfo/".
std::optional<NamedZone> ZoneOfFile(const std::string& path) {
  std::error_code ec;
  std::string target = std::filesystem::read_symlink(path, ec).string();
  if (ec) target = path;  // not a link: the file itself
  const size_t at = target.find("zoneinfo/");
  if (at == std::string::npos) return std::nullopt;
  std::string name = target.substr(at + 9);
  // The posix/ and right/ trees hold the same zones (right/ with leap
  // seconds, which civil times here do not count).
  for (const char* tree : {"posix/", "right/"}) {
    if (name.rfind(tree, 0) == 0) name = name.substr(std::char_traits<char>::length(tree));
  }
  return LoadZone(name);
}

}  // namespace

NamedZone CallerZone() {
  if (const char* tz = std::getenv("TZ"); tz != nullptr && tz[0] != '\0') {
    std::string name = tz;
    if (name[0] == ':') name.erase(0, 1);
    if (auto z = LoadZone(name)) return *z;
    if (name[0] == '/') {
      if (auto z = ZoneOfFile(name)) return *z;
    }
    return {"UTC", absl::UTCTimeZone()};  // what the C library makes of an unknown TZ
  }
  if (auto z = ZoneOfFile("/etc/localtime")) return *z;
  std::ifstream in("/etc/timezone");
  std::string line;
  if (std::getline(in, line)) {
    if (auto z = LoadZone(std::string(absl::StripAsciiWhitespace(line)))) return *z;
  }
  return {"UTC", absl::UTCTimeZone()};
}

std::string FormatTimeIn(absl::Time t, const absl::TimeZone& zone) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%S%Ez", t, zone);
}

// ------------------------------------------------------------ answers

namespace {

bool IsTimeType(const pb::Descriptor* d) {
  return d->full_name() == "google.protobuf.Timestamp" || d->full_name() == "labshare.type.v1.Interval";
}

bool IsLeafMessage(const pb::Descriptor* d) {
  return absl::StartsWith(d->full_name(), "google.protobuf.") || d->full_name() == "labshare.type.v1.Money" ||
         d->full_name() == "labshare.type.v1.Interval";
}

// A table column: simple, non-repeated (money, times, durations count).
bool IsSimple(const pb::FieldDescriptor* f) {
  if (f->is_repeated()) return false;
  if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) return true;
  const std::string t = f->message_type()->full_name();
  return t == "labshare.type.v1.Money" || t == "google.protobuf.Timestamp" || t == "labshare.type.v1.Interval" ||
         t == "google.protobuf.Duration";
}

void PrintFieldsAt(const pb::Message& m, const std::string& prefix, int depth, const absl::TimeZone& zone,
                   std::ostream& out) {
  std::vector<const pb::FieldDescriptor*> fields;
  m.GetReflection()->ListFields(m, &fields);
  for (const auto* f : fields) {
    const std::string name = prefix + f->name();
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !IsLeafMessage(f->message_type()) && depth < 3) {
      if (f->is_repeated()) {
        for (int i = 0; i < m.GetReflection()->FieldSize(m, f); ++i) {
          PrintFieldsAt(m.GetReflection()->GetRepeatedMessage(m, f, i), absl::StrCat(name, "[", i, "]."), depth + 1,
                        zone, out);
        }
      } else {
        PrintFieldsAt(m.GetReflection()->GetMessage(m, f), name + ".", depth + 1, zone, out);
      }
      continue;
    }
    if (f->is_repeated()) {
      std::vector<std::string> vs;
      for (int i = 0; i < m.GetReflection()->FieldSize(m, f); ++i) vs.push_back(Scalar(m, f, i, zone));
      out << name << ": " << absl::StrJoin(vs, ", ") << "\n";
    } else {
      out << name << ": " << Scalar(m, f, 0, zone) << "\n";
    }
  }
}

}  // namespace

std::string Scalar(const pb::Message& m, const pb::FieldDescriptor* f, int index, const absl::TimeZone& zone) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      if (f->type() == pb::FieldDescriptor::TYPE_BYTES) {
        static const char* hex = "0123456789abcdef";
        std::string out;
        for (unsigned char c : s) {
          out += hex[c >> 4];
          out += hex[c & 15];
        }
        return out;
      }
      return s;
    }
    case pb::FieldDescriptor::CPPTYPE_INT32: return std::to_string(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case pb::FieldDescriptor::CPPTYPE_INT64: return std::to_string(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_UINT32: return std::to_string(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case pb::FieldDescriptor::CPPTYPE_UINT64: return std::to_string(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case pb::FieldDescriptor::CPPTYPE_BOOL: return (rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false";
    case pb::FieldDescriptor::CPPTYPE_DOUBLE: return absl::StrCat(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case pb::FieldDescriptor::CPPTYPE_FLOAT: return absl::StrCat(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case pb::FieldDescriptor::CPPTYPE_ENUM: return (rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name();
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
      const pb::Message& sub = rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f);
      const std::string type = sub.GetDescriptor()->full_name();
      const pb::Reflection* sr = sub.GetReflection();
      const pb::Descriptor* d = sub.GetDescriptor();
      if (type == "google.protobuf.Timestamp") {
        const absl::Time t = absl::FromUnixSeconds(sr->GetInt64(sub, d->FindFieldByName("seconds"))) +
                             absl::Nanoseconds(sr->GetInt32(sub, d->FindFieldByName("nanos")));
        return FormatTimeIn(t, zone);
      }
      if (type == "google.protobuf.Duration") {
        return absl::FormatDuration(absl::Seconds(sr->GetInt64(sub, d->FindFieldByName("seconds"))) +
                                    absl::Nanoseconds(sr->GetInt32(sub, d->FindFieldByName("nanos"))));
      }
      if (type == "labshare.type.v1.Money") {
        return FormatMoney(sr->GetInt64(sub, d->FindFieldByName("amount_minor")),
                           sr->GetString(sub, d->FindFieldByName("currency_code")));
      }
      if (type == "labshare.type.v1.Interval") {
        return absl::StrCat(Scalar(sub, d->FindFieldByName("start_time"), 0, zone), " .. ",
                            Scalar(sub, d->FindFieldByName("end_time"), 0, zone));
      }
      std::string json;
      pb::util::JsonPrintOptions o;
      o.preserve_proto_field_names = true;
      (void)pb::util::MessageToJsonString(sub, &json, o);
      return json;
    }
  }
  return "";
}

void PrintFields(const pb::Message& m, const PrintOptions& options, std::ostream& out) {
  PrintFieldsAt(m, "", 0, options.caller_zone.zone, out);
}

bool PrintTable(const pb::Message& m, const PrintOptions& options, std::ostream& out) {
  const pb::Descriptor* d = m.GetDescriptor();
  const pb::FieldDescriptor* list = nullptr;
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->is_repeated() && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (list != nullptr) return false;
      list = f;
    }
  }
  if (list == nullptr) return false;
  const pb::Reflection* r = m.GetReflection();
  const int n = r->FieldSize(m, list);
  using Column = std::vector<const pb::FieldDescriptor*>;  // a path
  std::vector<Column> candidates;
  const pb::Descriptor* item = list->message_type();
  for (int i = 0; i < item->field_count(); ++i) {
    const auto* f = item->field(i);
    if (IsSimple(f)) {
      candidates.push_back({f});
    } else if (!f->is_repeated() && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      for (int k = 0; k < f->message_type()->field_count(); ++k) {
        if (IsSimple(f->message_type()->field(k))) candidates.push_back({f, f->message_type()->field(k)});
      }
    }
  }
  auto leaf = [&](const pb::Message& row, const Column& c) -> const pb::Message* {
    const pb::Message* at = &row;
    for (size_t i = 0; i + 1 < c.size(); ++i) {
      if (!at->GetReflection()->HasField(*at, c[i])) return nullptr;
      at = &at->GetReflection()->GetMessage(*at, c[i]);
    }
    return at->GetReflection()->HasField(*at, c.back()) ? at : nullptr;
  };
  auto is_time = [](const Column& c) {
    return c.back()->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && IsTimeType(c.back()->message_type());
  };
  std::vector<Column> cols;
  bool has_time = false;
  for (const auto& c : candidates) {
    bool used = false;
    for (int k = 0; k < n && !used; ++k) used = leaf(r->GetRepeatedMessage(m, list, k), c) != nullptr;
    if (used && cols.size() < 10) {
      cols.push_back(c);
      has_time = has_time || is_time(c);
    }
  }
  // Each row's zone: asked only when the table shows times.
  std::vector<NamedZone> zones;
  std::set<std::string> zone_names;
  for (int k = 0; k < n && has_time; ++k) {
    std::optional<NamedZone> z;
    if (options.row_zone) z = options.row_zone(r->GetRepeatedMessage(m, list, k));
    zones.push_back(z ? *z : options.caller_zone);
    zone_names.insert(zones.back().name);
  }
  const bool mixed = zone_names.size() > 1;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header;
  for (const auto& c : cols) {
    std::vector<std::string> names;
    for (const auto* f : c) names.push_back(f->name());
    std::string h = absl::AsciiStrToUpper(absl::StrJoin(names, "."));
    if (is_time(c) && zone_names.size() == 1) absl::StrAppend(&h, " (", *zone_names.begin(), ")");
    header.push_back(h);
  }
  if (mixed) header.push_back("ZONE");
  rows.push_back(header);
  for (int k = 0; k < n; ++k) {
    const pb::Message& it = r->GetRepeatedMessage(m, list, k);
    const absl::TimeZone zone = has_time ? zones[static_cast<size_t>(k)].zone : options.caller_zone.zone;
    std::vector<std::string> row;
    for (const auto& c : cols) {
      const pb::Message* at = leaf(it, c);
      row.push_back(at ? Scalar(*at, c.back(), 0, zone) : "");
    }
    if (mixed) row.push_back(zones[static_cast<size_t>(k)].name);
    rows.push_back(row);
  }
  out << RenderTable(rows);
  out << "(" << n << (n == 1 ? " row" : " rows") << ")\n";
  // The other fields (next_page_token, totals, ...).
  std::vector<const pb::FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const auto* f : fields) {
    if (f == list) continue;
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated() && !IsSimple(f)) {
      PrintFieldsAt(r->GetMessage(m, f), f->name() + ".", 1, options.caller_zone.zone, out);
    } else if (!f->is_repeated()) {
      out << f->name() << ": " << Scalar(m, f, 0, options.caller_zone.zone) << "\n";
    }
  }
  return true;
}

// ------------------------------------------------------------ errors

std::string CodeName(int code) {
  static const char* kCodes[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                 "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kCodes[code] : "UNKNOWN";
}

std::string JsonQuote(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string StatusJson(const grpc::Status& status, int exit_code) {
  const google::rpc::Status rpc = ToRpcStatus(status);
  std::string reason, domain;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::vector<std::string> violations;
  std::optional<absl::Duration> retry;
  for (const auto& any : rpc.details()) {
    google::rpc::ErrorInfo info;
    google::rpc::BadRequest bad;
    google::rpc::RetryInfo retry_info;
    if (any.UnpackTo(&info)) {
      if (!reason.empty()) continue;  // the first ErrorInfo
      reason = info.reason();
      domain = info.domain();
      metadata.assign(info.metadata().begin(), info.metadata().end());
      std::sort(metadata.begin(), metadata.end());
    } else if (any.UnpackTo(&bad)) {
      for (const auto& v : bad.field_violations()) {
        violations.push_back(absl::StrCat("{\"field\":", JsonQuote(v.field()),
                                          ",\"description\":", JsonQuote(v.description()), "}"));
      }
    } else if (any.UnpackTo(&retry_info)) {
      retry = absl::Seconds(retry_info.retry_delay().seconds()) + absl::Nanoseconds(retry_info.retry_delay().nanos());
    }
  }
  std::vector<std::string> md;
  for (const auto& [k, v] : metadata) md.push_back(absl::StrCat(JsonQuote(k), ":", JsonQuote(v)));
  const int code = static_cast<int>(status.error_code());
  std::string out = absl::StrCat("{\"code\":", JsonQuote(CodeName(code)), ",\"code_number\":", code,
                                 ",\"reason\":", JsonQuote(reason), ",\"domain\":", JsonQuote(domain),
                                 ",\"message\":", JsonQuote(status.error_message()), ",\"metadata\":{",
                                 absl::StrJoin(md, ","), "},\"field_violations\":[", absl::StrJoin(violations, ","),
                                 "]");
  if (retry) absl::StrAppend(&out, ",\"retry_delay\":", JsonQuote(absl::FormatDuration(*retry)));
  absl::StrAppend(&out, ",\"exit_code\":", exit_code, "}");
  return out;
}

std::string LocalErrorJson(const std::string& code, const std::string& message, int exit_code) {
  return absl::StrCat("{\"code\":", JsonQuote(code), ",\"reason\":\"\",\"domain\":\"labshare-cli\",\"message\":",
                      JsonQuote(message), ",\"metadata\":{},\"field_violations\":[],\"exit_code\":", exit_code, "}");
}

// ------------------------------------------------------------ files

const pb::FieldDescriptor* RawContentField(const pb::Descriptor* d) {
  for (const char* name : {"content", "data", "chunk", "csv"}) {
    const pb::FieldDescriptor* f = d->FindFieldByName(name);
    if (f != nullptr && f->type() == pb::FieldDescriptor::TYPE_BYTES && !f->is_repeated()) return f;
  }
  return nullptr;
}

bool OtherOneofMemberSet(const pb::Message& m, const pb::FieldDescriptor* raw) {
  const pb::OneofDescriptor* o = raw->containing_oneof();
  if (o == nullptr) return false;
  const pb::FieldDescriptor* set = m.GetReflection()->GetOneofFieldDescriptor(m, o);
  return set != nullptr && set != raw;
}

// ------------------------------------------------------------ money

std::string FormatMoney(int64_t amount_minor, const std::string& currency) {
  const int digits = CurrencyMinorDigits(currency);
  // |INT64_MIN| does not fit in int64_t: work in unsigned.
  const uint64_t a = amount_minor < 0 ? 0 - static_cast<uint64_t>(amount_minor) : static_cast<uint64_t>(amount_minor);
  uint64_t scale = 1;
  for (int i = 0; i < digits; ++i) scale *= 10;
  std::string out = absl::StrCat(amount_minor < 0 ? "-" : "", a / scale);
  if (digits > 0) {
    std::string frac = std::to_string(a % scale);
    absl::StrAppend(&out, ".", std::string(static_cast<size_t>(digits) - frac.size(), '0'), frac);
  }
  return absl::StrCat(out, " ", currency);
}

bool ParseMoney(std::string_view text, int64_t* amount_minor, std::string* currency, std::string* error) {
  std::vector<std::string> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size())), ' ', absl::SkipEmpty());
  if (parts.empty() || parts.size() > 2) {
    *error = "money like \"500.00 CNY\"";
    return false;
  }
  *currency = parts.size() == 2 ? parts[1] : "CNY";
  const int digits = CurrencyMinorDigits(*currency);
  absl::string_view n = parts[0];
  const bool negative = absl::ConsumePrefix(&n, "-");
  const size_t dot = n.find('.');
  const absl::string_view whole = n.substr(0, dot);
  const absl::string_view frac = dot == absl::string_view::npos ? absl::string_view() : n.substr(dot + 1);
  auto all_digits = [](absl::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!all_digits(whole) || (dot != absl::string_view::npos && !all_digits(frac))) {
    *error = "money like \"500.00 CNY\"";
    return false;
  }
  if (frac.size() > static_cast<size_t>(digits)) {
    *error = digits == 0 ? absl::StrCat(*currency, " has no minor unit: a whole amount like \"500 ", *currency, "\"")
                         : absl::StrCat(*currency, " has ", digits, digits == 1 ? " decimal" : " decimals",
                                        ", not ", frac.size());
    return false;
  }
  // whole * 10^digits + frac (padded to the currency's digits), exactly.
  uint64_t value = 0;
  const std::string scaled = absl::StrCat(whole, frac, std::string(static_cast<size_t>(digits) - frac.size(), '0'));
  if (!absl::SimpleAtoi(scaled, &value) || value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    *error = "the amount does not fit in 64-bit minor units";
    return false;
  }
  *amount_minor = negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
  return true;
}

}  // namespace labshare::cli
