#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace labshare {
namespace {

std::atomic<bool> g_quiet{false};

void WriteAll(const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(STDERR_FILENO, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere to log to
    done += static_cast<size_t>(n);
  }
}

// Lines are appended under a lock and written by one thread, so a busy
// server pays one write(2) per batch of lines instead of one per line (an
// RPC log line per call is otherwise a syscall per call). Errors are written
// before LogJson returns; the rest follows within one write, and whatever is
// buffered is written at exit.
class Sink {
 public:
  static Sink& Get() {
    static Sink* sink = [] {
      auto* s = new Sink;  // never destroyed: threads may log during exit
      std::atexit([] { Get().Flush(); });
      return s;
    }();
    return *sink;
  }

  void Append(const std::string& line, bool now) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      const bool was_empty = pending_.empty();
      pending_ += line;
      if (!now) {
        if (!writer_started_) {
          writer_started_ = true;
          std::thread([this] { Run(); }).detach();
        }
        if (was_empty) ready_.notify_one();
        return;
      }
    }
    Flush();
  }

  // Writes everything appended so far. write_mu_ keeps batches in order;
  // appenders only ever wait for a swap, never for a write.
  void Flush() {
    std::lock_guard<std::mutex> writing(write_mu_);
    std::string out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      out.swap(pending_);
    }
    if (!out.empty()) WriteAll(out);
  }

 private:
  void Run() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [this] { return !pending_.empty(); });
      }
      Flush();
    }
  }

  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::string pending_;  // guarded by mu_
  bool writer_started_ = false;  // guarded by mu_
};

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
  Sink::Get().Append(line, level == "error");
}

void FlushLogs() { Sink::Get().Flush(); }

}  // namespace labshare
