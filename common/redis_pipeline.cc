#include "common/redis_pipeline.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/log.h"

namespace labshare {
namespace {

struct ContextDeleter {
  void operator()(redisContext* c) const {
    if (c != nullptr) redisFree(c);
  }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

absl::Status Unavailable() { return StorageUnavailable(); }

Context Connect(const RedisOptions& o) {
  Context c(redisConnectWithTimeout(o.host.c_str(), o.port, absl::ToTimeval(o.connect_timeout)));
  if (c == nullptr || c->err != 0 ||
      redisSetTimeout(c.get(), absl::ToTimeval(o.command_timeout)) != REDIS_OK) {
    LogWarning("redis pipeline connect failed",
               {{"address", absl::StrCat(o.host, ":", o.port)},
                {"error", c != nullptr ? c->errstr : "out of memory"}});
    return nullptr;
  }
  const int flags = fcntl(c->fd, F_GETFD);
  if (flags >= 0) fcntl(c->fd, F_SETFD, flags | FD_CLOEXEC);
  if (!AuthenticateRedis(c.get(), o).ok()) return nullptr;  // logged there
  return c;
}

// RESP of one command ("*<n>\r\n" then "$<len>\r\n<bytes>\r\n" per argument)
// appended to out: a batch is formatted into one buffer and handed to
// hiredis once, instead of hiredis formatting each command and copying it
// into its output buffer again.
void Format(std::string* out, const std::vector<std::string>& argv) {
  size_t size = 16;
  for (const auto& a : argv) size += a.size() + 16;
  out->reserve(out->size() + size);
  absl::StrAppend(out, "*", argv.size(), "\r\n");
  for (const auto& a : argv) {
    absl::StrAppend(out, "$", a.size(), "\r\n");
    out->append(a);
    out->append("\r\n");
  }
}


// One reply, or UNAVAILABLE when the connection broke.
absl::StatusOr<RedisValue> Read(redisContext* c) {
  void* raw = nullptr;
  if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) return Unavailable();
  RedisValue v = RedisValueFromReply(raw);
  freeReplyObject(raw);
  return v;
}

absl::StatusOr<RedisValue> ScriptResult(absl::StatusOr<RedisValue> v) {
  if (v.ok() && v->is_error()) {
    LogError("redis script failed", {{"error", v->str}});
    return RedisErrorStatus(*v);
  }
  return v;
}

}  // namespace

RedisPipeline::RedisPipeline(RedisOptions options, int threads, size_t max_batch)
    : options_(std::move(options)), max_batch_(max_batch) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
}

RedisPipeline::~RedisPipeline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& t : threads_) t.join();
  for (auto& call : queue_) call.done(Unavailable());
}

void RedisPipeline::Eval(const RedisScript& script, std::vector<std::string> keys,
                         std::vector<std::string> args, Callback done) {
  Call call;
  call.script = &script;
  call.argv.reserve(3 + keys.size() + args.size());
  call.argv.push_back("EVALSHA");
  call.argv.push_back(script.sha1());
  call.argv.push_back(std::to_string(keys.size()));
  for (auto& k : keys) call.argv.push_back(std::move(k));
  for (auto& a : args) call.argv.push_back(std::move(a));
  call.done = std::move(done);
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      call.done(Unavailable());
      return;
    }
    wake = queue_.empty();
    queue_.push_back(std::move(call));
  }
  if (wake) ready_.notify_one();
}

void RedisPipeline::Run() {
  Context c;
  std::vector<Call> batch;
  std::string out;  // the batch's commands, formatted
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      if (queue_.size() <= max_batch_) {
        batch.swap(queue_);
      } else {
        batch.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(max_batch_)));
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(max_batch_));
        ready_.notify_one();  // the rest for another thread
      }
    }
    if (c == nullptr) c = Connect(options_);
    if (c == nullptr) {
      for (auto& call : batch) call.done(Unavailable());
      batch.clear();
      continue;
    }
    out.clear();
    for (const auto& call : batch) Format(&out, call.argv);
    redisAppendFormattedCommand(c.get(), out.data(), out.size());
    bool broken = false;
    for (auto& call : batch) {
      absl::StatusOr<RedisValue> reply = broken ? absl::StatusOr<RedisValue>(Unavailable()) : Read(c.get());
      if (!reply.ok()) broken = true;
      if (reply.ok() && reply->is_error() && absl::StartsWith(reply->str, "NOSCRIPT")) {
        // The replies of the rest of the batch are still in flight: read
        // them first, then retry this call with its source below.
        call.argv[0] = "EVAL";
        call.argv[1] = call.script->source();
        continue;
      }
      call.done(ScriptResult(std::move(reply)));
      call.done = nullptr;
    }
    for (auto& call : batch) {
      if (call.done == nullptr) continue;  // answered above
      absl::StatusOr<RedisValue> reply = Unavailable();
      if (!broken) {
        out.clear();
        Format(&out, call.argv);
        redisAppendFormattedCommand(c.get(), out.data(), out.size());
        reply = Read(c.get());
        if (!reply.ok()) broken = true;
      }
      call.done(ScriptResult(std::move(reply)));
    }
    if (broken) c.reset();
    batch.clear();
  }
}

}  // namespace labshare
