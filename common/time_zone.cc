#include "common/time_zone.h"

#include <string>

#include "absl/strings/str_split.h"

namespace labshare {

bool LoadIanaTimeZone(absl::string_view name, absl::TimeZone* zone) {
  if (name.empty() || name.size() > 64) return false;
  bool first = true;
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    // No empty, "." or ".." component, none starting with '-' (tz's own
    // rule for names), only the characters names are made of.
    if (part.empty() || part.front() == '-' || part.front() == '.') return false;
    for (char c : part) {
      const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                      c == '-' || c == '+';
      if (!ok) return false;
    }
    if (first && (part == "posix" || part == "right" || part == "Fixed")) return false;
    first = false;
  }
  if (name == "localtime" || name == "posixrules" || name == "Factory") return false;
  return absl::LoadTimeZone(std::string(name), zone);
}

}  // namespace labshare
