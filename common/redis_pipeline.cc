#include "common/redis_pipeline.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/log.h"
#include "common/redis_internal.h"

namespace labshare {
namespace {

absl::Status Unavailable() { return StorageUnavailable(); }

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

// A pipeline thread's own connections, one per node, kept across batches.
class ThreadConnections final : public RedisConnections {
 public:
  explicit ThreadConnections(const RedisOptions& options) : options_(options) {}

  absl::StatusOr<redisContext*> Get(const RedisAddress& node, RedisTopology::Deadline,
                                   bool* unreachable) override {
    for (auto it = open_.begin(); it != open_.end(); ++it) {
      if (it->first.host != node.host || it->first.port != node.port) continue;
      if (!RedisConnectionIsStale(it->second.get())) return it->second.get();
      open_.erase(it);  // closed by the server while idle (restart, failover)
      break;
    }
    absl::StatusOr<RedisContextPtr> c = ConnectRedisNode(node, options_);
    if (!c.ok()) {
      if (unreachable != nullptr) *unreachable = true;
      return c.status();
    }
    open_.emplace_back(node, *std::move(c));
    return open_.back().second.get();
  }
  void Put(const RedisAddress& node, redisContext*, bool healthy) override {
    if (!healthy) Drop(node);
  }
  void Drop(const RedisAddress& node) {
    for (auto it = open_.begin(); it != open_.end(); ++it) {
      if (it->first.host == node.host && it->first.port == node.port) {
        open_.erase(it);
        return;
      }
    }
  }

 private:
  const RedisOptions& options_;
  std::vector<std::pair<RedisAddress, RedisContextPtr>> open_;
};

}  // namespace

RedisPipeline::RedisPipeline(RedisOptions options, int threads, size_t max_batch)
    : options_(std::move(options)), topology_(std::make_shared<RedisTopology>(options_)), max_batch_(max_batch) {
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
  ThreadConnections connections(options_);
  RedisTopology& topology = *topology_;
  const bool routed = topology.routed();
  std::vector<Call> batch;
  std::string out;  // one node's share of the batch, formatted
  RedisNodeGroups groups;
  std::vector<size_t> again;  // calls to run one by one: redirected, NOSCRIPT, node unreachable
  std::vector<int> slots;
  std::vector<absl::StatusOr<RedisValue>> replies;
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
    // One budget for the whole batch: retries never add up past it.
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.command_timeout);
    groups.clear();
    again.clear();
    slots.assign(batch.size(), -1);
    replies.assign(batch.size(), absl::StatusOr<RedisValue>(Unavailable()));
    // Calls by node (one group unless this is a Redis Cluster).
    GroupRedisCommandsByNode(
        topology, batch.size(), [&](size_t i) -> const std::vector<std::string>& { return batch[i].argv; },
        deadline, &slots, &groups, &again);
    if (!routed) again.clear();  // standalone: no node to retry; they keep their UNAVAILABLE
    const int wait = options_.wait_replicas;
    for (const auto& [node, indexes] : groups) {
      absl::StatusOr<redisContext*> c = connections.Get(node, deadline, nullptr);
      if (!c.ok()) {
        topology.Invalidate();
        if (routed) again.insert(again.end(), indexes.begin(), indexes.end());
        continue;  // standalone: the calls keep their UNAVAILABLE
      }
      out.clear();
      for (size_t i : indexes) Format(&out, batch[i].argv);
      // One WAIT covers every write of the batch on this connection.
      if (wait > 0) {
        Format(&out, RedisWaitCommand(wait, options_.wait_timeout));
      }
      redisAppendFormattedCommand(*c, out.data(), out.size());
      bool broken = false;
      for (size_t i : indexes) {
        replies[i] = broken ? absl::StatusOr<RedisValue>(Unavailable()) : Read(*c);
        if (!replies[i].ok()) broken = true;
      }
      // Without WAIT's own answer no write of this group counts as confirmed.
      long long acked = 0;
      if (wait > 0 && !broken) {
        absl::StatusOr<RedisValue> w = Read(*c);
        if (!w.ok()) broken = true;
        acked = w.ok() && w->type == RedisValue::Type::kInteger ? w->integer : 0;
      }
      if (broken) {
        LogWarning("redis pipeline I/O failed; dropping the connection",
                   {{"address", RedisAddressText(node)}, {"error", (*c)->err != 0 ? (*c)->errstr : "no reply"}});
        connections.Drop(node);
        topology.Invalidate();
      }
      bool ack_logged = false;
      for (size_t i : indexes) {
        absl::StatusOr<RedisValue>& reply = replies[i];
        if (reply.ok() && reply->is_error()) {
          if (absl::StartsWith(reply->str, "NOSCRIPT")) {
            // First use on this node: EVAL runs and caches the script.
            batch[i].argv[0] = "EVAL";
            batch[i].argv[1] = batch[i].script->source();
            again.push_back(i);  // did not run; the rest of the batch is read already
            continue;
          }
          const RedisRedirect r = routed ? ParseRedisRedirect(*reply, node) : RedisRedirect();
          if (r.kind == RedisRedirect::Kind::kMoved) topology.Moved(r.slot, r.node);
          if (r.kind != RedisRedirect::Kind::kNone) {
            again.push_back(i);
            continue;
          }
        } else if (reply.ok() && wait > 0 && acked < wait) {
          reply = ack_logged ? StorageUnavailable("REPLICA_ACK_TIMEOUT") : RedisReplicaAckTimeout(node, acked, wait);
          ack_logged = true;
        }
        batch[i].done(ScriptResult(std::move(reply)));
        batch[i].done = nullptr;
      }
    }
    std::sort(again.begin(), again.end());
    for (size_t i : again) {
      Call& call = batch[i];
      absl::StatusOr<RedisValue> reply =
          RunRedisCommand(topology, options_, connections, call.argv, slots[i], deadline);
      if (reply.ok() && reply->is_error() && absl::StartsWith(reply->str, "NOSCRIPT")) {
        call.argv[0] = "EVAL";
        call.argv[1] = call.script->source();
        reply = RunRedisCommand(topology, options_, connections, call.argv, slots[i], deadline);
      }
      call.done(ScriptResult(std::move(reply)));
      call.done = nullptr;
    }
    for (auto& call : batch) {
      if (call.done != nullptr) call.done(Unavailable());  // standalone, no connection
    }
    batch.clear();
  }
}

}  // namespace labshare
