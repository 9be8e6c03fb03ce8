// Pipelined Redis for hot paths: callers enqueue script calls without
// blocking; each pipeline thread owns one connection, sends everything
// queued in one write and hands each reply to its callback in order. This is
// what lets a callback-API gRPC handler book without parking a thread on a
// Redis round trip (see ../shared/perf-reference).
//
// Callbacks run on a pipeline thread: keep them short, never block on the
// pipeline from inside one. On a connection error every call of the batch
// fails with UNAVAILABLE (STORAGE_UNAVAILABLE) and the next batch reconnects.
#ifndef LABSHARE_COMMON_REDIS_PIPELINE_H_
#define LABSHARE_COMMON_REDIS_PIPELINE_H_

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

  explicit RedisPipeline(RedisOptions options, int threads = 1, size_t max_batch = 256);
  // Stops the threads; calls still queued fail with UNAVAILABLE.
  ~RedisPipeline();

  // EVALSHA; a NOSCRIPT answer is retried once with the script's source.
  // Script errors come back like RedisPool::Eval's: INTERNAL (STORAGE_ERROR),
  // or UNAVAILABLE (STORAGE_UNAVAILABLE) when Redis refuses for now (OOM...).
  void Eval(const RedisScript& script, std::vector<std::string> keys,
            std::vector<std::string> args, Callback done);

 private:
  struct Call {
    const RedisScript* script;
    std::vector<std::string> argv;  // EVALSHA sha numkeys keys... args...
    Callback done;
  };
  void Run();

  const RedisOptions options_;
  const std::shared_ptr<class RedisTopology> topology_;  // where each call goes (common/redis_internal.h)
  const size_t max_batch_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::vector<Call> queue_;  // guarded by mu_
  bool stopping_ = false;    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_REDIS_PIPELINE_H_
