// A small bounded pool of threads for work that may block (a synchronous
// client call, such as an inventory cache miss) so that pipeline threads and
// gRPC callback threads never do. Tasks run in submission order across the
// pool's threads; Submit refuses (returns false) when `max_queue` tasks
// already wait, and the caller answers UNAVAILABLE instead of queueing
// without bound. Destruction runs every task already accepted, then joins.
#ifndef LABSHARE_COMMON_BLOCKING_EXECUTOR_H_
#define LABSHARE_COMMON_BLOCKING_EXECUTOR_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace labshare {

class BlockingExecutor {
 public:
  BlockingExecutor(int threads, size_t max_queue);
  ~BlockingExecutor();
  BlockingExecutor(const BlockingExecutor&) = delete;
  BlockingExecutor& operator=(const BlockingExecutor&) = delete;

  // False (and `task` not run) when the queue is full.
  [[nodiscard]] bool Submit(std::function<void()> task);
  // Tasks accepted and not started yet.
  size_t queued();

 private:
  void Run();

  const size_t max_queue_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_BLOCKING_EXECUTOR_H_
