// Pipelined Redis for every asynchronous path: callers enqueue commands,
// groups of commands or script calls without blocking; each call is answered
// by its callback. This is what lets a callback-API gRPC handler read and
// write without parking a thread on a Redis round trip (see
// ../shared/perf-reference and common/unary_async.h).
//
// One queue per shard: every master node (the one server, the Sentinel
// master, or each Redis Cluster master) has its own queue, thread(s) and
// connection(s). A batch of one shard's queue goes out in one write and its
// replies are handed to their callbacks in order. A shard that fails (node
// down, failover in progress, MOVED/ASK/TRYAGAIN/CLUSTERDOWN) retries its
// own calls until their deadline (the command timeout from when they were
// enqueued), as RedisPool does; calls for other shards never queue behind
// those retries. Calls whose shard is not known yet (first use of a slot,
// after a MOVED or a failing node) go through a routing queue that asks the
// topology, then join their shard's queue. A call the topology cannot place
// yet (no master known for its slot, no map while it is being resolved)
// waits in the routing queue and is tried again, with backoff (20 ms to
// 250 ms), until its deadline; those waiting count against max_queue.
//
// Sentinel: every connection is used only once ROLE says its node is
// master, and asked again after a second of use; a node that is not master
// (an old master back as a replica, a demotion, LOADING), like a READONLY
// answer, sends its calls back to the topology, which asks the sentinels
// again. Reads answered in a batch that saw such an answer are read again
// from the master. A shard whose node is no longer a master of the map is
// retired (its queued calls routed again, its threads and connections end),
// so the shard count follows the topology instead of growing.
//
// Callbacks run on a pipeline thread: keep them short, never block on the
// pipeline from inside one (enqueuing more calls from a callback is fine).
// A call answered by nothing within the connection's life (I/O error after
// sending) fails with UNAVAILABLE (STORAGE_UNAVAILABLE): it may have run.
#ifndef LABSHARE_COMMON_REDIS_PIPELINE_H_
#define LABSHARE_COMMON_REDIS_PIPELINE_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/redis.h"

namespace labshare {

class RedisPipeline {
 public:
  using Callback = std::function<void(absl::StatusOr<RedisValue>)>;
  using GroupCallback = std::function<void(absl::StatusOr<std::vector<RedisValue>>)>;

  // threads: threads (each with its own connection) per shard.
  // max_queue: calls one shard's queue holds at most; a call beyond it fails
  // at once with UNAVAILABLE (STORAGE_UNAVAILABLE) instead of waiting
  // behind a backlog it would not outlive. A call whose deadline passed
  // while queued fails the same way without being sent.
  // max_shards: masters served at once (1..kMaxShards); tests lower it.
  static constexpr size_t kDefaultMaxQueue = 10000;
  static constexpr int kMaxShards = 64;
  explicit RedisPipeline(RedisOptions options, int threads = 1, size_t max_batch = 256,
                         size_t max_queue = kDefaultMaxQueue, int max_shards = kMaxShards);
  // Stops the threads; calls still queued fail with UNAVAILABLE.
  ~RedisPipeline();
  RedisPipeline(const RedisPipeline&) = delete;
  RedisPipeline& operator=(const RedisPipeline&) = delete;

  // EVALSHA; a NOSCRIPT answer is retried once with the script's source.
  // Script errors come back like RedisPool::Eval's: INTERNAL (STORAGE_ERROR),
  // or UNAVAILABLE (STORAGE_UNAVAILABLE) when Redis refuses for now (OOM...).
  void Eval(const RedisScript& script, std::vector<std::string> keys,
            std::vector<std::string> args, Callback done);

  // One command, answered like RedisPool::Command: error replies are values,
  // except a refusal for now (OOM, READONLY, LOADING...), which is
  // UNAVAILABLE; an empty argv is INTERNAL.
  void Command(std::vector<std::string> argv, Callback done);

  // Several commands issued together (each to its own shard, in one write
  // per shard); `done` runs once with every reply in order, or with the
  // first failure, answered like RedisPool::Pipeline. Not a transaction.
  void Pipeline(std::vector<std::vector<std::string>> commands, GroupCallback done);

  // A group of commands and script calls issued together (one write per
  // shard); `done` runs once with each one's answer in order, each answered
  // as Command or Eval answers it.
  struct Request {
    const RedisScript* script = nullptr;  // null: argv is a command
    std::vector<std::string> argv;        // the command; for a script its keys, then its args
    size_t keys = 0;                      // for a script: how many of argv are keys
  };
  using BatchCallback = std::function<void(std::vector<absl::StatusOr<RedisValue>>)>;
  void Batch(std::vector<Request> requests, BatchCallback done);

  // For tests and metrics: shards serving a master now (retired ones not
  // counted), calls waiting in the routing queue for the topology, and
  // calls that waited there until their deadline (answered UNAVAILABLE).
  int live_shards();
  size_t waiting_for_topology();
  uint64_t timed_out_waiting_for_topology() const {
    return timed_out_waiting_.load(std::memory_order_relaxed);
  }

 private:
  enum class Kind { kCommand, kScript };
  using Deadline = std::chrono::steady_clock::time_point;
  struct Call {
    Kind kind = Kind::kCommand;
    const RedisScript* script = nullptr;
    std::vector<std::string> argv;  // EVALSHA sha numkeys keys... args... for scripts
    int slot = -1;                  // the first key's hash slot on a cluster, else -1
    Deadline deadline;
    Callback done;
    bool group_end = true;  // the last call of what one Enqueue pushed: a batch never splits a group
  };
  struct Shard;

  void Submit(std::vector<Call> calls);
  // admitted: calls already queued once (a retired shard's), not refused
  // for capacity.
  void Enqueue(Shard* shard, std::vector<Call> calls, bool admitted = false);
  // The slot's cached shard, or the routing shard.
  Shard* ShardOf(const Call& call);
  Shard* ShardFor(const RedisAddress& node);  // creates it on first use; null at max_shards
  void Forget(int shard_index);               // its slots go through routing again
  // Router thread: retires the shards whose node is no longer a master of
  // the topology's map (once per new map).
  void RetireGone();
  void RunShard(Shard* shard);
  void RunRouter(Shard* router);
  void Finish(Call& call, absl::StatusOr<RedisValue> reply);
  static bool IsWrite(const Call& call);  // a script that may write, or a write command

  const RedisOptions options_;
  const std::shared_ptr<class RedisTopology> topology_;  // where each call goes (common/redis_internal.h)
  const bool routed_;
  const bool cluster_;
  const int threads_per_shard_;
  const size_t max_batch_;
  const size_t max_queue_;
  const int max_shards_;
  std::unique_ptr<Shard> router_;  // routed topologies only
  std::mutex shards_mu_;           // creating and retiring shards
  std::vector<std::unique_ptr<Shard>> shards_;  // guarded by shards_mu_; live ones
  // Guarded by shards_mu_. Kept (without threads once they ended) until
  // destruction: a caller may still hold the pointer it read from
  // shard_by_index_, and Enqueue then passes its calls to the router.
  std::vector<std::unique_ptr<Shard>> retired_;
  uint64_t seen_generation_ = 0;  // router thread only
  std::array<std::atomic<Shard*>, kMaxShards> shard_by_index_{};
  // Cluster: shard index per hash slot; Sentinel: entry 0; -1 unknown.
  std::array<std::atomic<int16_t>, 16384> slot_shard_;
  std::atomic<uint64_t> timed_out_waiting_{0};
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_REDIS_PIPELINE_H_
