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
// topology, then join their shard's queue.
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
  static constexpr size_t kDefaultMaxQueue = 10000;
  explicit RedisPipeline(RedisOptions options, int threads = 1, size_t max_batch = 256,
                         size_t max_queue = kDefaultMaxQueue);
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
  static constexpr int kMaxShards = 64;

  void Submit(std::vector<Call> calls);
  void Enqueue(Shard* shard, std::vector<Call> calls);
  // The slot's cached shard, or the routing shard.
  Shard* ShardOf(const Call& call);
  Shard* ShardFor(const RedisAddress& node);  // creates it on first use
  void Forget(int shard_index);               // its slots go through routing again
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
  std::unique_ptr<Shard> router_;  // routed topologies only
  std::mutex shards_mu_;           // creating shards
  std::vector<std::unique_ptr<Shard>> shards_;  // guarded by shards_mu_; never shrinks
  std::array<std::atomic<Shard*>, kMaxShards> shard_by_index_{};
  // Cluster: shard index per hash slot; Sentinel: entry 0; -1 unknown.
  std::array<std::atomic<int16_t>, 16384> slot_shard_;
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_REDIS_PIPELINE_H_
