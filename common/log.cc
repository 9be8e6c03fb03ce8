#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace labshare {
namespace {
std::mutex& LogMutex() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::atomic<bool> g_quiet{false};
}  // namespace

std::string JsonEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (unsigned char c : s) {
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
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void SetQuietLogging(bool quiet) { g_quiet.store(quiet); }

void LogJson(absl::string_view level, absl::string_view msg, const LogFields& fields) {
  if (g_quiet.load() && level != "error") return;
  std::string line = absl::StrCat(
      "{\"ts\":\"", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      "\",\"level\":\"", JsonEscape(level), "\",\"msg\":\"", JsonEscape(msg), "\"");
  for (const auto& [k, v] : fields) {
    absl::StrAppend(&line, ",\"", JsonEscape(k), "\":\"", JsonEscape(v), "\"");
  }
  line += "}\n";
  std::lock_guard<std::mutex> lock(LogMutex());
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace labshare
