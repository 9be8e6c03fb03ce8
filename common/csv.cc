#include "common/csv.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace labshare {

bool IsCsvNumber(absl::string_view v) {
  if (!v.empty() && v.front() == '-') v.remove_prefix(1);
  return !v.empty() &&
         std::all_of(v.begin(), v.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.' || c == '%'; });
}

std::string CsvCell(absl::string_view raw, bool numeric) {
  std::string guarded;
  if (!raw.empty() && std::strchr("=+-@\t\r", raw.front()) != nullptr && !(numeric && IsCsvNumber(raw))) {
    guarded = absl::StrCat("'", raw);
    raw = guarded;
  }
  if (raw.find_first_of(",\"\r\n") == absl::string_view::npos) return std::string(raw);
  std::string out = "\"";
  for (char c : raw) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace labshare
