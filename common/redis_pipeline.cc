#include "common/redis_pipeline.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/log.h"
#include "common/redis_internal.h"

namespace labshare {
namespace {

absl::Status Unavailable() { return StorageUnavailable(); }
absl::Status StorageError() {
  return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "storage command failed");
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
// master_only (Sentinel): a new connection is used only once ROLE says
// master, and a kept one is asked again when its last check is older than
// options.role_recheck (a master demoted while connected, without Sentinel
// closing its clients, serves stale reads for at most that long, unless a
// write of the same batch meets READONLY first).

class ThreadConnections final : public RedisConnections {
 public:
  ThreadConnections(const RedisOptions& options, bool master_only)
      : options_(options),
        master_only_(master_only),
        role_recheck_(absl::ToChronoNanoseconds(options.role_recheck)) {}

  absl::StatusOr<redisContext*> Get(const RedisAddress& node, RedisTopology::Deadline,
                                   bool* unreachable) override {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = open_.begin(); it != open_.end(); ++it) {
      if (it->node.host != node.host || it->node.port != node.port) continue;
      if (RedisConnectionIsStale(it->context.get())) {
        open_.erase(it);  // closed by the server while idle (restart, failover)
        break;
      }
      if (master_only_ && now - it->checked >= role_recheck_) {
        if (!CheckRedisMaster(it->context.get(), node).ok()) {
          open_.erase(it);
          if (unreachable != nullptr) *unreachable = true;
          return StorageUnavailable();
        }
        it->checked = now;
      }
      return it->context.get();
    }
    absl::StatusOr<RedisContextPtr> c = ConnectRedisMaster(node, options_, master_only_);
    if (!c.ok()) {
      if (unreachable != nullptr) *unreachable = true;
      return c.status();
    }
    open_.push_back(Open{node, *std::move(c), now});
    return open_.back().context.get();
  }
  void Put(const RedisAddress& node, redisContext*, bool healthy) override {
    if (!healthy) Drop(node);
  }
  void Drop(const RedisAddress& node) {
    for (auto it = open_.begin(); it != open_.end(); ++it) {
      if (it->node.host == node.host && it->node.port == node.port) {
        open_.erase(it);
        return;
      }
    }
  }

 private:
  struct Open {
    RedisAddress node;
    RedisContextPtr context;
    std::chrono::steady_clock::time_point checked;  // last ROLE check (master_only)
  };
  const RedisOptions& options_;
  const bool master_only_;
  const std::chrono::nanoseconds role_recheck_;
  std::vector<Open> open_;
};


bool IsRefusal(absl::string_view error) {
  const absl::string_view code = error.substr(0, error.find(' '));
  for (absl::string_view refusal : {"OOM", "MISCONF", "READONLY", "BUSY", "LOADING", "MASTERDOWN",
                                    "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"}) {
    if (code == refusal) return true;
  }
  return false;
}

// Like RedisPool::Command's answer: a refusal for now is UNAVAILABLE, any
// other error reply a value (NOPERM logged: the ACL needs a permission).
absl::StatusOr<RedisValue> CommandResult(const RedisOptions& options, const std::string& command,
                                         absl::StatusOr<RedisValue> v) {
  if (!v.ok() || !v->is_error()) return v;
  if (IsRefusal(v->str)) {
    LogWarning("redis refused a command for now", {{"command", command}, {"error", v->str}});
    return RedisErrorStatus(*v);
  }
  if (absl::StartsWith(v->str, "NOPERM")) {
    LogError("redis ACL refused a command; the service's Redis user lacks a permission "
             "(see ACL LOG and deploy/redis-acl.sh)",
             {{"user", options.user.empty() ? "default" : options.user}, {"command", command}, {"error", v->str}});
  }
  return v;
}

// Empty, or a transaction command: a pipeline's connections carry batches
// of unrelated calls (and a batch may be sent again elsewhere), so MULTI,
// EXEC, WATCH, UNWATCH and DISCARD would bind other callers' commands. An
// atomic step goes through a Lua script (Eval) or RedisPool.
bool ValidArgv(const std::vector<std::string>& argv) {
  if (argv.empty()) {
    LogError("redis command with no arguments", {});
    return false;
  }
  for (absl::string_view tx : {"MULTI", "EXEC", "WATCH", "UNWATCH", "DISCARD"}) {
    if (absl::EqualsIgnoreCase(argv[0], tx)) {
      LogError("redis transaction commands cannot go through RedisPipeline; use a script or RedisPool",
               {{"command", std::string(tx)}});
      return false;
    }
  }
  return true;
}

}  // namespace

struct RedisPipeline::Shard {
  int index = -1;       // in shards_; -1: the routing shard
  RedisAddress node;    // a node shard's master
  std::mutex mu;
  std::condition_variable ready;
  std::vector<Call> queue;  // guarded by mu
  bool stopping = false;    // guarded by mu
  bool retired = false;     // guarded by mu; calls enqueued now go to the router
  size_t parked = 0;        // guarded by mu; router: calls waiting for the topology
  std::vector<std::thread> threads;
  std::atomic<int> exited{0};  // threads that returned (a retired shard's are then joined)
};

RedisPipeline::RedisPipeline(RedisOptions options, int threads, size_t max_batch, size_t max_queue, int max_shards)
    : options_(std::move(options)),
      topology_(std::make_shared<RedisTopology>(options_)),
      routed_(topology_->routed()),
      cluster_(topology_->cluster()),
      threads_per_shard_(std::max(1, threads)),
      max_batch_(std::max<size_t>(1, max_batch)),
      max_queue_(std::max<size_t>(1, max_queue)),
      max_shards_(std::clamp(max_shards, 1, kMaxShards)) {
  for (auto& s : slot_shard_) s.store(-1, std::memory_order_relaxed);
  if (routed_) {
    router_ = std::make_unique<Shard>();
    router_->threads.emplace_back([this, r = router_.get()] { RunRouter(r); });
  } else {
    // One server: one shard, known from the start.
    RedisAddress node;
    node.host = options_.host;
    node.port = options_.port;
    ShardFor(node);
  }
}

RedisPipeline::~RedisPipeline() {
  auto stop = [](Shard* s) {
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->stopping = true;
    }
    s->ready.notify_all();
  };
  // The router first: it is the only one to create shards.
  if (router_) {
    stop(router_.get());
    for (auto& t : router_->threads) t.join();
  }
  std::vector<Shard*> all;
  {
    std::lock_guard<std::mutex> lock(shards_mu_);
    for (auto& s : shards_) all.push_back(s.get());
    for (auto& s : retired_) all.push_back(s.get());
  }
  for (Shard* s : all) stop(s);
  for (Shard* s : all) {
    for (auto& t : s->threads) {
      if (t.joinable()) t.join();
    }
  }
  if (router_) all.push_back(router_.get());
  for (Shard* s : all) {
    for (auto& call : s->queue) call.done(Unavailable());
    s->queue.clear();
  }
}

void RedisPipeline::Eval(const RedisScript& script, std::vector<std::string> keys,
                         std::vector<std::string> args, Callback done) {
  Call call;
  call.kind = Kind::kScript;
  call.script = &script;
  call.argv.reserve(3 + keys.size() + args.size());
  call.argv.push_back("EVALSHA");
  call.argv.push_back(script.sha1());
  call.argv.push_back(std::to_string(keys.size()));
  for (auto& k : keys) call.argv.push_back(std::move(k));
  for (auto& a : args) call.argv.push_back(std::move(a));
  call.done = std::move(done);
  std::vector<Call> calls;
  calls.push_back(std::move(call));
  Submit(std::move(calls));
}

void RedisPipeline::Command(std::vector<std::string> argv, Callback done) {
  if (!ValidArgv(argv)) return done(StorageError());
  Call call;
  call.argv = std::move(argv);
  call.done = std::move(done);
  std::vector<Call> calls;
  calls.push_back(std::move(call));
  Submit(std::move(calls));
}

void RedisPipeline::Pipeline(std::vector<std::vector<std::string>> commands, GroupCallback done) {
  if (commands.empty()) return done(std::vector<RedisValue>());
  for (const auto& argv : commands) {
    if (!ValidArgv(argv)) return done(StorageError());
  }
  // Every reply lands in its place; the last one to arrive answers.
  struct Group {
    std::vector<absl::StatusOr<RedisValue>> replies;
    std::atomic<size_t> left;
    GroupCallback done;
  };
  auto group = std::make_shared<Group>();
  group->replies.assign(commands.size(), absl::StatusOr<RedisValue>(Unavailable()));
  group->left.store(commands.size(), std::memory_order_relaxed);
  group->done = std::move(done);
  std::vector<Call> calls(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    calls[i].argv = std::move(commands[i]);
    calls[i].done = [group, i](absl::StatusOr<RedisValue> v) {
      group->replies[i] = std::move(v);
      if (group->left.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
      std::vector<RedisValue> out;
      out.reserve(group->replies.size());
      for (auto& r : group->replies) {
        if (!r.ok()) return group->done(r.status());
        out.push_back(*std::move(r));
      }
      group->done(std::move(out));
    };
  }
  Submit(std::move(calls));
}

void RedisPipeline::Batch(std::vector<Request> requests, BatchCallback done) {
  if (requests.empty()) return done({});
  struct Group {
    std::vector<absl::StatusOr<RedisValue>> replies;
    std::atomic<size_t> left;
    BatchCallback done;
  };
  auto group = std::make_shared<Group>();
  group->replies.assign(requests.size(), absl::StatusOr<RedisValue>(Unavailable()));
  group->left.store(requests.size(), std::memory_order_relaxed);
  group->done = std::move(done);
  std::vector<Call> calls;
  calls.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    Request& r = requests[i];
    Call call;
    call.done = [group, i](absl::StatusOr<RedisValue> v) {
      group->replies[i] = std::move(v);
      if (group->left.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
      group->done(std::move(group->replies));
    };
    if (r.script != nullptr) {
      call.kind = Kind::kScript;
      call.script = r.script;
      call.argv.reserve(3 + r.argv.size());
      call.argv.push_back("EVALSHA");
      call.argv.push_back(r.script->sha1());
      call.argv.push_back(std::to_string(std::min(r.keys, r.argv.size())));
      for (auto& a : r.argv) call.argv.push_back(std::move(a));
    } else {
      if (!ValidArgv(r.argv)) {
        call.done(StorageError());
        continue;
      }
      call.argv = std::move(r.argv);
    }
    calls.push_back(std::move(call));
  }
  if (!calls.empty()) Submit(std::move(calls));
}

RedisPipeline::Shard* RedisPipeline::ShardOf(const Call& call) {
  if (!routed_) return shard_by_index_[0].load(std::memory_order_acquire);
  const int key = cluster_ ? call.slot : 0;
  if (key < 0) return router_.get();
  const int index = slot_shard_[static_cast<size_t>(key)].load(std::memory_order_acquire);
  if (index < 0) return router_.get();
  Shard* s = shard_by_index_[static_cast<size_t>(index)].load(std::memory_order_acquire);
  return s != nullptr ? s : router_.get();
}

void RedisPipeline::Submit(std::vector<Call> calls) {
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.command_timeout);
  for (auto& call : calls) {
    call.deadline = deadline;
    if (cluster_) call.slot = RedisCommandSlot(call.argv);
  }
  if (calls.size() == 1) {
    Shard* s = ShardOf(calls[0]);
    return Enqueue(s, std::move(calls));
  }
  // A group: one push per shard, so a shard's share stays together (one write).
  std::vector<std::pair<Shard*, std::vector<Call>>> by_shard;
  for (auto& call : calls) {
    Shard* s = ShardOf(call);
    auto it = std::find_if(by_shard.begin(), by_shard.end(), [s](const auto& x) { return x.first == s; });
    if (it == by_shard.end()) {
      by_shard.emplace_back(s, std::vector<Call>());
      it = by_shard.end() - 1;
    }
    it->second.push_back(std::move(call));
  }
  for (auto& [s, share] : by_shard) Enqueue(s, std::move(share));
}

void RedisPipeline::Enqueue(Shard* shard, std::vector<Call> calls, bool admitted) {
  bool wake;
  {
    std::unique_lock<std::mutex> lock(shard->mu);
    if (shard->retired) {
      lock.unlock();
      return Enqueue(router_.get(), std::move(calls));  // its node is gone: route again
    }
    if (shard->stopping || (!admitted && shard->queue.size() + shard->parked + calls.size() > max_queue_)) {
      const bool full = !shard->stopping;
      lock.unlock();
      if (full) {
        LogWarning("redis pipeline queue full; failing calls at once",
                   {{"address", RedisAddressText(shard->node)}, {"max_queue", std::to_string(max_queue_)}});
      }
      for (auto& call : calls) call.done(Unavailable());
      return;
    }
    for (size_t i = 0; i < calls.size(); ++i) calls[i].group_end = i + 1 == calls.size();
    wake = shard->queue.empty();
    if (shard->queue.empty()) {
      shard->queue.swap(calls);
    } else {
      for (auto& call : calls) shard->queue.push_back(std::move(call));
    }
  }
  if (wake) shard->ready.notify_one();
}

RedisPipeline::Shard* RedisPipeline::ShardFor(const RedisAddress& node) {
  std::lock_guard<std::mutex> lock(shards_mu_);
  for (auto& s : shards_) {
    if (s->node.host == node.host && s->node.port == node.port) return s.get();
  }
  if (shards_.size() >= static_cast<size_t>(max_shards_)) return nullptr;  // the router keeps them
  if (routed_) {
    // A node the current map does not name as master (the map changed
    // since the calls were grouped): the router tries them again.
    const std::vector<RedisAddress> masters = topology_->KnownMasters();
    if (!masters.empty() && std::none_of(masters.begin(), masters.end(), [&](const RedisAddress& m) {
          return m.host == node.host && m.port == node.port;
        })) {
      return nullptr;
    }
  }
  // Not the index of a retired shard whose threads still run (they may
  // still Forget() it).
  auto in_use = [&](int i) {
    if (shard_by_index_[static_cast<size_t>(i)].load(std::memory_order_acquire) != nullptr) return true;
    return std::any_of(retired_.begin(), retired_.end(),
                       [&](const std::unique_ptr<Shard>& r) { return r->index == i && !r->threads.empty(); });
  };
  int index = 0;
  while (index < kMaxShards && in_use(index)) ++index;
  if (index >= kMaxShards) return nullptr;  // retired shards' threads still ending: the router keeps them
  auto s = std::make_unique<Shard>();
  s->index = index;
  s->node = node;
  Shard* raw = s.get();
  for (int i = 0; i < threads_per_shard_; ++i) {
    raw->threads.emplace_back([this, raw] {
      RunShard(raw);
      raw->exited.fetch_add(1, std::memory_order_acq_rel);
    });
  }
  shards_.push_back(std::move(s));
  shard_by_index_[static_cast<size_t>(raw->index)].store(raw, std::memory_order_release);
  return raw;
}

void RedisPipeline::RetireGone() {
  std::vector<Call> moved;
  {
    std::lock_guard<std::mutex> lock(shards_mu_);
    // Threads of shards retired before that have ended: join them.
    for (auto& s : retired_) {
      if (s->threads.empty() || s->exited.load(std::memory_order_acquire) != static_cast<int>(s->threads.size())) {
        continue;
      }
      for (auto& t : s->threads) t.join();
      s->threads.clear();
    }
    const uint64_t generation = topology_->generation();
    if (generation == seen_generation_) return;
    seen_generation_ = generation;
    const std::vector<RedisAddress> masters = topology_->KnownMasters();
    if (masters.empty()) return;  // no map: nothing to compare with
    for (auto it = shards_.begin(); it != shards_.end();) {
      Shard* s = it->get();
      const bool gone = std::none_of(masters.begin(), masters.end(), [&](const RedisAddress& m) {
        return m.host == s->node.host && m.port == s->node.port;
      });
      if (!gone) {
        ++it;
        continue;
      }
      LogInfo("redis pipeline: node no longer a master; retiring its queue",
              {{"address", RedisAddressText(s->node)}});
      Forget(s->index);
      {
        std::lock_guard<std::mutex> shard_lock(s->mu);
        s->retired = true;
        s->stopping = true;  // its threads end after their batch; their connections close
        for (auto& call : s->queue) moved.push_back(std::move(call));
        s->queue.clear();
      }
      s->ready.notify_all();
      shard_by_index_[static_cast<size_t>(s->index)].store(nullptr, std::memory_order_release);
      retired_.push_back(std::move(*it));
      it = shards_.erase(it);
    }
  }
  // Already admitted (queued on the retired shard): no capacity check.
  if (!moved.empty()) Enqueue(router_.get(), std::move(moved), /*admitted=*/true);
}

int RedisPipeline::live_shards() {
  std::lock_guard<std::mutex> lock(shards_mu_);
  return static_cast<int>(shards_.size());
}

size_t RedisPipeline::waiting_for_topology() {
  if (!router_) return 0;
  std::lock_guard<std::mutex> lock(router_->mu);
  return router_->parked;
}

void RedisPipeline::Forget(int shard_index) {
  if (!routed_) return;
  for (auto& s : slot_shard_) {
    int16_t expected = static_cast<int16_t>(shard_index);
    s.compare_exchange_strong(expected, -1, std::memory_order_acq_rel);
  }
}

void RedisPipeline::Finish(Call& call, absl::StatusOr<RedisValue> reply) {
  if (call.kind == Kind::kScript) {
    call.done(ScriptResult(std::move(reply)));
  } else {
    call.done(CommandResult(options_, call.argv[0], std::move(reply)));
  }
  call.done = nullptr;
}

namespace {
// Takes about max_batch calls from the shard's queue, never part of a group
// (what one Enqueue pushed goes out whole, in order, on one connection);
// false when stopping.
// With `until`, waits no longer than that and may return an empty batch.
template <typename ShardT, typename CallT>
bool TakeBatch(ShardT* shard, size_t max_batch, std::vector<CallT>* batch,
               const std::chrono::steady_clock::time_point* until = nullptr) {
  std::unique_lock<std::mutex> lock(shard->mu);
  auto ready = [&] { return shard->stopping || !shard->queue.empty(); };
  if (until != nullptr) {
    shard->ready.wait_until(lock, *until, ready);
  } else {
    shard->ready.wait(lock, ready);
  }
  if (shard->stopping) return false;
  if (shard->queue.empty()) return true;
  size_t cut = std::min(max_batch, shard->queue.size());
  while (cut < shard->queue.size() && !shard->queue[cut - 1].group_end) ++cut;
  if (cut == shard->queue.size()) {
    batch->swap(shard->queue);
  } else {
    batch->assign(std::make_move_iterator(shard->queue.begin()),
                  std::make_move_iterator(shard->queue.begin() + static_cast<std::ptrdiff_t>(cut)));
    shard->queue.erase(shard->queue.begin(), shard->queue.begin() + static_cast<std::ptrdiff_t>(cut));
    shard->ready.notify_one();  // the rest for another thread of the shard
  }
  return true;
}
}  // namespace

void RedisPipeline::RunRouter(Shard* router) {
  constexpr auto kFirstWait = std::chrono::milliseconds(20);
  constexpr auto kMaxWait = std::chrono::milliseconds(250);
  RedisTopology& topology = *topology_;
  std::vector<Call> batch;
  // Calls the topology could not place yet: tried again at next_try, with
  // backoff, until their deadline.
  std::vector<Call> parked;
  std::vector<Call> late;  // past their deadline
  Deadline next_try{};
  std::chrono::steady_clock::duration wait = kFirstWait;
  RedisNodeGroups groups;
  std::vector<size_t> unplaced;
  std::vector<int> slots;
  std::vector<std::pair<Shard*, std::vector<Call>>> placed;
  while (TakeBatch(router, max_batch_, &batch, parked.empty() ? nullptr : &next_try)) {
    Deadline now = std::chrono::steady_clock::now();
    // Parked calls tried again are still waiting while this batch is routed
    // (reading the map can take a while): waiting_for_topology() counts
    // them until they are placed or parked again.
    size_t retried = 0;
    if (!parked.empty() && now >= next_try) {
      // The parked calls are older: they go first.
      retried = parked.size();
      for (auto& call : batch) parked.push_back(std::move(call));
      batch.swap(parked);
      parked.clear();
    }
    {
      std::lock_guard<std::mutex> lock(router->mu);
      router->parked = parked.size() + retried;
    }
    // Calls whose deadline passed while waiting fail unsent (counted before
    // they are answered).
    size_t kept = 0;
    size_t expired = 0;  // of the retried ones
    late.clear();
    for (size_t i = 0; i < batch.size(); ++i) {
      if (now >= batch[i].deadline) {
        if (i < retried) ++expired;
        late.push_back(std::move(batch[i]));
      } else {
        if (kept != i) batch[kept] = std::move(batch[i]);
        ++kept;
      }
    }
    batch.resize(kept);
    if (expired > 0) {
      timed_out_waiting_.fetch_add(expired, std::memory_order_relaxed);
      std::lock_guard<std::mutex> lock(router->mu);
      router->parked = parked.size() + retried - expired;
    }
    for (auto& call : late) Finish(call, Unavailable());
    if (batch.empty()) continue;
    Deadline deadline = batch.front().deadline;
    for (const auto& c : batch) deadline = std::min(deadline, c.deadline);
    groups.clear();
    unplaced.clear();
    slots.assign(batch.size(), -1);
    GroupRedisCommandsByNode(
        topology, batch.size(), [&](size_t i) -> const std::vector<std::string>& { return batch[i].argv; },
        deadline, &slots, &groups, &unplaced);
    RetireGone();  // a new map may have dropped masters
    std::vector<size_t> wait_more = unplaced;
    // Placed calls are handed to their shards only after the count of calls
    // still waiting is updated: a shard may answer at once, and whoever sees
    // that answer must not still count the call as waiting.
    placed.clear();
    for (auto& [node, indexes] : groups) {
      Shard* s = ShardFor(node);
      if (s == nullptr) {
        // Every shard serves a master of the map: wait for one to go.
        wait_more.insert(wait_more.end(), indexes.begin(), indexes.end());
        continue;
      }
      std::vector<Call> share;
      share.reserve(indexes.size());
      for (size_t i : indexes) share.push_back(std::move(batch[i]));
      placed.emplace_back(s, std::move(share));
    }
    if (!wait_more.empty()) {
      std::sort(wait_more.begin(), wait_more.end());
      const bool first = parked.empty();
      Deadline earliest = Deadline::max();
      for (size_t i : wait_more) {
        earliest = std::min(earliest, batch[i].deadline);
        parked.push_back(std::move(batch[i]));
      }
      if (first) {
        now = std::chrono::steady_clock::now();
        next_try = now + wait;
        wait = std::min<std::chrono::steady_clock::duration>(wait * 2, kMaxWait);
      }
      // Tried again no later than the first deadline, which then answers it.
      next_try = std::min(next_try, earliest);
      topology.Invalidate();
    } else if (parked.empty()) {
      wait = kFirstWait;
    }
    {
      std::lock_guard<std::mutex> lock(router->mu);
      router->parked = parked.size();
    }
    for (auto& [s, share] : placed) {
      // Later calls for these slots go straight to the shard, behind these.
      for (const auto& call : share) {
        const int key = cluster_ ? call.slot : 0;
        if (key >= 0) slot_shard_[static_cast<size_t>(key)].store(static_cast<int16_t>(s->index), std::memory_order_release);
      }
      Enqueue(s, std::move(share));
    }
    placed.clear();
    batch.clear();
  }
  for (auto& call : parked) Finish(call, Unavailable());  // stopping
  std::lock_guard<std::mutex> lock(router->mu);
  router->parked = 0;
}

bool RedisPipeline::IsWrite(const Call& call) {
  return call.kind == Kind::kScript ? !call.script->read_only() : !RedisCommandIsReadOnly(call.argv[0]);
}

void RedisPipeline::RunShard(Shard* shard) {
  ThreadConnections connections(options_, topology_->sentinel());
  RedisTopology& topology = *topology_;
  const RedisAddress node = shard->node;
  std::vector<Call> batch;
  std::string out;
  std::vector<size_t> again;  // calls to run one by one: redirected, NOSCRIPT, node unreachable
  std::vector<absl::StatusOr<RedisValue>> replies;
  RedisOptions reads = options_;  // retries of reads: no WAIT
  reads.wait_replicas = 0;
  while (TakeBatch(shard, max_batch_, &batch)) {
    // Calls whose deadline passed while queued fail unsent.
    const auto now = std::chrono::steady_clock::now();
    size_t kept = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (now >= batch[i].deadline) {
        Finish(batch[i], Unavailable());
      } else {
        if (kept != i) batch[kept] = std::move(batch[i]);
        ++kept;
      }
    }
    batch.resize(kept);
    if (batch.empty()) continue;
    again.clear();
    replies.assign(batch.size(), absl::StatusOr<RedisValue>(Unavailable()));
    // Like RedisPool: WAIT follows a batch with a write in it, and only the
    // writes' answers depend on it.
    bool writes = false;
    for (const auto& c : batch) writes |= IsWrite(c);
    const int wait = writes ? options_.wait_replicas : 0;
    absl::StatusOr<redisContext*> c = connections.Get(node, batch.front().deadline, nullptr);
    if (!c.ok()) {
      if (routed_) {
        // This node is down or gone: new calls for its slots are routed
        // again; these retry here (this shard's thread only) until their
        // deadline.
        topology.Invalidate();
        Forget(shard->index);
        for (size_t i = 0; i < batch.size(); ++i) again.push_back(i);
      } else {
        for (auto& call : batch) Finish(call, Unavailable());  // one server: nowhere else to go
      }
    } else {
      out.clear();
      for (const auto& call : batch) FormatRedisCommand(&out, call.argv);
      // One WAIT covers every write of the batch on this connection.
      if (wait > 0) FormatRedisCommand(&out, RedisWaitCommand(wait, options_.wait_timeout));
      redisAppendFormattedCommand(*c, out.data(), out.size());
      bool broken = false;
      for (size_t i = 0; i < batch.size(); ++i) {
        replies[i] = broken ? absl::StatusOr<RedisValue>(Unavailable()) : Read(*c);
        if (!replies[i].ok()) broken = true;
      }
      // Without WAIT's own answer no write of this batch counts as confirmed.
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
        Forget(shard->index);
      }
      // A node that answered READONLY / LOADING / MASTERDOWN is no master
      // (any more): the reads it answered in this batch may be stale, so
      // they are read again where the topology now points.
      bool demoted = false;
      if (routed_ && !broken) {
        for (const auto& reply : replies) {
          if (reply.ok() && ParseRedisRedirect(*reply, node).kind == RedisRedirect::Kind::kNotMaster) demoted = true;
        }
      }
      if (demoted) {
        LogWarning("redis pipeline: node refuses as a non-master; asking the topology again",
                   {{"address", RedisAddressText(node)}});
        connections.Drop(node);  // the next connection is checked with ROLE (Sentinel)
        topology.Invalidate();
        Forget(shard->index);
      }
      bool ack_logged = false;
      for (size_t i = 0; i < batch.size(); ++i) {
        absl::StatusOr<RedisValue>& reply = replies[i];
        Call& call = batch[i];
        if (demoted && reply.ok() && !reply->is_error() && !IsWrite(call)) {
          again.push_back(i);
          continue;
        }
        if (demoted && wait == 0 && reply.ok() && !reply->is_error() && IsWrite(call)) {
          // Accepted before the node stopped being master: a demoted master
          // drops what its successor never got. Outcome unknown; the caller
          // retries with its request_id.
          Finish(call, Unavailable());
          continue;
        }
        if (reply.ok() && reply->is_error()) {
          if (call.kind == Kind::kScript && absl::StartsWith(reply->str, "NOSCRIPT")) {
            // First use on this node: EVAL runs and caches the script.
            call.argv[0] = "EVAL";
            call.argv[1] = call.script->source();
            again.push_back(i);  // did not run; the rest of the batch is read already
            continue;
          }
          const RedisRedirect r = routed_ ? ParseRedisRedirect(*reply, node) : RedisRedirect();
          if (r.kind == RedisRedirect::Kind::kMoved) {
            topology.Moved(r.slot, r.node);
            if (r.slot >= 0 && r.slot < 16384) slot_shard_[static_cast<size_t>(r.slot)].store(-1, std::memory_order_release);
          } else if (r.kind == RedisRedirect::Kind::kNotMaster || r.kind == RedisRedirect::Kind::kClusterDown) {
            topology.Invalidate();
            Forget(shard->index);
          }
          if (r.kind != RedisRedirect::Kind::kNone) {
            again.push_back(i);
            continue;
          }
        } else if (reply.ok() && wait > 0 && acked < wait && IsWrite(call)) {
          reply = ack_logged ? StorageUnavailable("REPLICA_ACK_TIMEOUT") : RedisReplicaAckTimeout(node, acked, wait);
          ack_logged = true;
        }
        Finish(call, std::move(reply));
      }
    }
    // Retries: this shard's own, one by one, each until its own deadline.
    for (size_t i : again) {
      Call& call = batch[i];
      if (std::chrono::steady_clock::now() >= call.deadline) {
        Finish(call, Unavailable());  // its time went on the calls before it: no connect attempt each
        continue;
      }
      const RedisOptions& o = IsWrite(call) ? options_ : reads;
      absl::StatusOr<RedisValue> reply = RunRedisCommand(topology, o, connections, call.argv, call.slot, call.deadline);
      if (call.kind == Kind::kScript && reply.ok() && reply->is_error() &&
          absl::StartsWith(reply->str, "NOSCRIPT")) {
        call.argv[0] = "EVAL";
        call.argv[1] = call.script->source();
        reply = RunRedisCommand(topology, o, connections, call.argv, call.slot, call.deadline);
      }
      Finish(call, std::move(reply));
    }
    for (auto& call : batch) {
      if (call.done != nullptr) Finish(call, Unavailable());
    }
    batch.clear();
  }
}

}  // namespace labshare
