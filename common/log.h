// JSON-lines logging to stderr. One object per line; safe across threads.
// Fields are strings; callers pass ids, never secrets or tokens.
#ifndef LABSHARE_COMMON_LOG_H_
#define LABSHARE_COMMON_LOG_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace labshare {

using LogFields = std::vector<std::pair<std::string, std::string>>;

// Writes {"ts":...,"level":level,"msg":msg, fields...}. The timestamp is
// the wall clock: logs are not domain logic. "error" lines are on stderr
// when this returns; other lines are written by a background thread in
// batches (promptly, and at exit at the latest); FlushLogs() forces them out.
void LogJson(absl::string_view level, absl::string_view msg, const LogFields& fields = {});
inline void LogInfo(absl::string_view msg, const LogFields& f = {}) { LogJson("info", msg, f); }
inline void LogWarning(absl::string_view msg, const LogFields& f = {}) { LogJson("warn", msg, f); }
inline void LogError(absl::string_view msg, const LogFields& f = {}) { LogJson("error", msg, f); }

void FlushLogs();

// JSON string escaping (quotes not included).
std::string JsonEscape(absl::string_view s);
void AppendJsonEscaped(std::string* out, absl::string_view s);

// Silences logging below "error" (tests that drive many failing calls).
void SetQuietLogging(bool quiet);

// Which calls an access log keeps (common/server.cc, --access_log_sample):
// every failed call, every call that took at least `slow`, and of each
// key's (method's) other calls the 1st, the (every+1)-th, the (2*every+1)-th...
// A counter, not chance: exact and reproducible. every <= 1 keeps all.
// Keys share 64 counters by hash: two methods on one counter are sampled
// together, still 1 in `every` between them. Thread-safe, lock-free.
class LogSampler {
 public:
  LogSampler(int every, absl::Duration slow) : every_(every < 1 ? 1 : every), slow_(slow) {}
  bool Keep(absl::string_view key, bool ok, absl::Duration latency);
  int every() const { return every_; }

 private:
  const int every_;
  const absl::Duration slow_;
  std::array<std::atomic<uint64_t>, 64> counters_{};
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_LOG_H_
