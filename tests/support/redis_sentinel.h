// A Redis Sentinel deployment for tests, all on free loopback ports: one
// master, N replicas (--replicaof) and three sentinels (`redis-server FILE
// --sentinel`, the file written in the sentinel's temporary directory:
// `sentinel monitor <name> 127.0.0.1 PORT 2`, down-after-milliseconds,
// failover-timeout). Every data node runs AOF with the given appendfsync and
// min-replicas-to-write (a promoted replica keeps the setting), so the
// deployment is the one the kustomize files ship: 1 master + 2 replicas + 3
// sentinels, services with --redis_sentinels and --redis_wait_replicas=1.
//
// Start() returns once every sentinel sees the master, every replica online
// and the two other sentinels (bounded waits on those conditions). Like
// RedisServer, start it from a thread that outlives it (GoogleTest's main
// thread). Not thread-safe.
#ifndef LABSHARE_TESTS_SUPPORT_REDIS_SENTINEL_H_
#define LABSHARE_TESTS_SUPPORT_REDIS_SENTINEL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/redis.h"
#include "tests/support/redis_server.h"

namespace labshare::testing {

struct RedisSentinelOptions {
  std::string master_name = "labshare";
  // Two by default: after a failover the new master still has a replica, so
  // min-replicas-to-write 1 lets it take writes.
  int replicas = 2;
  int sentinels = 3;
  int quorum = 2;
  std::string appendfsync = "always";
  int min_replicas_to_write = 1;
  int min_replicas_max_lag_seconds = 10;
  absl::Duration down_after = absl::Milliseconds(1000);
  absl::Duration failover_timeout = absl::Milliseconds(5000);
  // --redis_wait_replicas for the services (ServiceFlags, options()).
  int wait_replicas = 1;
  // More redis-server flags for every data node.
  std::vector<std::string> node_args;
  // Bound of each wait (setup, new master).
  absl::Duration timeout = absl::Seconds(60);
};

class RedisSentinelSetup {
 public:
  static absl::StatusOr<std::unique_ptr<RedisSentinelSetup>> Start(const RedisSentinelOptions& options = {});
  // Stops the sentinels first (no failover while the nodes go down), then
  // the data nodes; removes their directories.
  ~RedisSentinelSetup();
  RedisSentinelSetup(const RedisSentinelSetup&) = delete;
  RedisSentinelSetup& operator=(const RedisSentinelSetup&) = delete;

  const RedisSentinelOptions& config() const { return options_; }

  // The node this harness last saw as master (Start, WaitForNewMaster).
  RedisServer& master() { return *nodes_[static_cast<size_t>(master_)]; }
  // Every data node, the master among them; killed ones included.
  const std::vector<std::unique_ptr<RedisServer>>& nodes() const { return nodes_; }
  const std::vector<std::unique_ptr<RedisServer>>& sentinels() const { return sentinels_; }

  // "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3".
  std::string SentinelAddresses() const;
  // --redis_sentinels=..., --redis_sentinel_master=NAME,
  // --redis_wait_replicas=N: what each service gets in place of --redis.
  std::vector<std::string> ServiceFlags() const;
  // Sentinel mode: `sentinels`, `sentinel_master`, `wait_replicas` set.
  RedisOptions options() const;
  // The current master as a plain single-server address (host/port, no
  // sentinels): for reading the data back without following anything.
  RedisOptions MasterOptions() { return master().options(); }

  // What each sentinel answers to SENTINEL get-master-addr-by-name, in
  // order ("HOST:PORT", or an error text).
  std::vector<std::string> AskSentinels() const;

  // kill -9 of the current master (its directory stays). Returns its port.
  int Kill9Master();

  // Waits (options.timeout) until every sentinel that answers names the
  // same master, not the killed one, that node's ROLE is master and it has
  // at least min_replicas_to_write replicas online (it takes writes). Sets
  // master() to it and returns it. The time is the caller's to measure.
  absl::StatusOr<RedisServer*> WaitForNewMaster();

  // Starts every killed data node again (same port, directory and flags)
  // and waits (options.timeout) until the sentinels have made each a
  // replica of the current master and every replica is online: the setup
  // is whole again, ready for the next Kill9Master().
  absl::Status RestartKilled();

  // The redis-server logs of the sentinels (for a failure message).
  std::string SentinelLogs(size_t tail_bytes) const;

 private:
  explicit RedisSentinelSetup(RedisSentinelOptions options) : options_(std::move(options)) {}
  absl::Status WaitSettled(int master_index);
  int NodeByPort(int port) const;

  RedisSentinelOptions options_;
  std::vector<std::unique_ptr<RedisServer>> nodes_;
  std::vector<std::unique_ptr<RedisServer>> sentinels_;
  int master_ = 0;
  int killed_port_ = 0;
};

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_SUPPORT_REDIS_SENTINEL_H_
