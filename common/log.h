// JSON-lines logging to stderr. One object per line; safe across threads.
// Fields are strings; callers pass ids, never secrets or tokens.
#ifndef LABSHARE_COMMON_LOG_H_
#define LABSHARE_COMMON_LOG_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

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

}  // namespace labshare

#endif  // LABSHARE_COMMON_LOG_H_
