#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <functional>
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
// server pays one write(2) per batch of lines instead of one per line, and
// the writer is woken once per batch, not per line: it takes what is
// pending, writes it, then lets lines gather for up to kGather (or until
// kWakeBytes are waiting) before the next write. An idle writer is woken by
// the first line. Errors are written before LogJson returns; whatever is
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
      pending_ += line;
      if (!now) {
        if (!writer_started_) {
          writer_started_ = true;
          std::thread([this] { Run(); }).detach();
        }
        if (writer_idle_ || pending_.size() >= kWakeBytes) ready_.notify_one();
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
  static constexpr size_t kWakeBytes = 64 * 1024;
  static constexpr std::chrono::milliseconds kGather{20};

  void Run() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        writer_idle_ = true;
        ready_.wait(lock, [this] { return !pending_.empty(); });
        writer_idle_ = false;
      }
      Flush();
      // Let the next lines gather (a timed wait, not ordering: lines are
      // written in the order they were appended either way).
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait_for(lock, kGather, [this] { return pending_.size() >= kWakeBytes; });
    }
  }

  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::string pending_;          // guarded by mu_
  bool writer_started_ = false;  // guarded by mu_
  bool writer_idle_ = false;     // guarded by mu_: waiting for the first line
};

// "YYYY-MM-DDTHH:MM:SS" of the current second, formatted once per second
// per thread; the milliseconds are appended by hand.
void AppendTimestamp(std::string* out) {
  struct Cache {
    int64_t second = INT64_MIN;
    std::string text;
  };
  thread_local Cache cache;
  const int64_t ms = absl::ToUnixMillis(absl::Now());
  const int64_t second = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  if (second != cache.second) {
    cache.second = second;
    cache.text = absl::FormatTime("%Y-%m-%dT%H:%M:%S", absl::FromUnixSeconds(second), absl::UTCTimeZone());
  }
  const int m = static_cast<int>(ms - second * 1000);
  const char frac[5] = {'.', static_cast<char>('0' + m / 100), static_cast<char>('0' + m / 10 % 10),
                        static_cast<char>('0' + m % 10), 'Z'};
  out->append(cache.text);
  out->append(frac, sizeof(frac));
}

}  // namespace

void AppendJsonEscaped(std::string* out, absl::string_view s) {
  size_t plain = 0;  // a run of bytes that need no escaping is appended at once
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(s.data() + plain, i - plain);
    plain = i + 1;
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default: *out += absl::StrFormat("\\u%04x", c);
    }
  }
  out->append(s.data() + plain, s.size() - plain);
}

std::string JsonEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  AppendJsonEscaped(&out, s);
  return out;
}

void SetQuietLogging(bool quiet) { g_quiet.store(quiet); }

void LogJson(absl::string_view level, absl::string_view msg, const LogFields& fields) {
  if (g_quiet.load() && level != "error") return;
  std::string line;
  line.reserve(128 + 48 * fields.size());
  line += "{\"ts\":\"";
  AppendTimestamp(&line);
  line += "\",\"level\":\"";
  AppendJsonEscaped(&line, level);
  line += "\",\"msg\":\"";
  AppendJsonEscaped(&line, msg);
  line += '"';
  for (const auto& [k, v] : fields) {
    line += ",\"";
    AppendJsonEscaped(&line, k);
    line += "\":\"";
    AppendJsonEscaped(&line, v);
    line += '"';
  }
  line += "}\n";
  Sink::Get().Append(line, level == "error");
}

void FlushLogs() { Sink::Get().Flush(); }

bool LogSampler::Keep(absl::string_view key, bool ok, absl::Duration latency) {
  if (!ok || latency >= slow_ || every_ <= 1) return true;
  auto& counter = counters_[std::hash<std::string_view>()(std::string_view(key.data(), key.size())) % counters_.size()];
  return counter.fetch_add(1, std::memory_order_relaxed) % static_cast<uint64_t>(every_) == 0;
}

}  // namespace labshare
