// Private to common/redis.cc and common/redis_pipeline.cc: connecting to one
// node, and where each call goes (one server, the master Sentinel names, or
// the master of a hash slot in a Redis Cluster).
#ifndef LABSHARE_COMMON_REDIS_INTERNAL_H_
#define LABSHARE_COMMON_REDIS_INTERNAL_H_

#include <array>
#include <chrono>
#include <optional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/redis.h"

struct redisContext;

namespace labshare {

struct RedisContextDeleter {
  void operator()(redisContext* c) const;
};
using RedisContextPtr = std::unique_ptr<redisContext, RedisContextDeleter>;

// A connection to `node` with the options' timeouts, keep-alive,
// close-on-exec and AUTH. UNAVAILABLE/STORAGE_UNAVAILABLE (logged) on failure.
absl::StatusOr<RedisContextPtr> ConnectRedisNode(const RedisAddress& node, const RedisOptions& options);

// An idle connection with something to read was closed by the server.
bool RedisConnectionIsStale(redisContext* c);

std::string RedisAddressText(const RedisAddress& a);  // "host:port"

// The hash slot of the command's first key; -1 for a command without keys
// (PING, SCRIPT, INFO, WAIT, SCAN...).
int RedisCommandSlot(const std::vector<std::string>& argv);

// True for commands that never write: no WAIT is needed after them.
bool RedisCommandIsReadOnly(std::string_view command);

// A redirection or a transient cluster/failover answer, parsed from an error
// reply. kMoved/kAsk carry the slot and the node.
struct RedisRedirect {
  enum class Kind { kNone, kMoved, kAsk, kTryAgain, kNotMaster, kClusterDown };
  Kind kind = Kind::kNone;
  int slot = -1;
  RedisAddress node;
};
// `from` is the node that answered (a MOVED/ASK with an empty host means
// that node's host, as the specification allows).
RedisRedirect ParseRedisRedirect(const RedisValue& reply, const RedisAddress& from);

// Thread-safe. Standalone: always options.host:port. Sentinel: the master,
// asked of the sentinels in turn and checked with ROLE, again after
// Invalidate(). Cluster: the slot map from CLUSTER SLOTS (any reachable
// known node or seed), again after Invalidate(); Moved() patches one slot
// at once and asks for a full refresh.
class RedisTopology {
 public:
  explicit RedisTopology(RedisOptions options);

  bool routed() const { return cluster_ || sentinel_; }  // anything but one fixed server
  bool cluster() const { return cluster_; }

  // The node for `slot` (-1: any master). Resolves first when stale.
  absl::StatusOr<RedisAddress> NodeFor(int slot);
  // Every master (cluster: in slot order of their first slot), for SCAN.
  absl::StatusOr<std::vector<RedisAddress>> Masters();
  // Something went wrong talking to the node (connection error, READONLY,
  // CLUSTERDOWN): the next NodeFor resolves again.
  void Invalidate();
  void Moved(int slot, const RedisAddress& node);

 private:
  absl::Status ResolveLocked();  // mu_ held
  absl::Status ResolveSentinelLocked();
  absl::Status ResolveClusterLocked();

  const RedisOptions options_;
  const bool cluster_;
  const bool sentinel_;
  std::mutex mu_;
  bool stale_ = true;                      // guarded by mu_
  RedisAddress master_;                    // guarded by mu_ (standalone, sentinel)
  std::vector<RedisAddress> nodes_;        // guarded by mu_ (cluster masters)
  std::array<int16_t, 16384> slots_{};     // guarded by mu_: index into nodes_, -1 none
  size_t next_sentinel_ = 0;               // guarded by mu_
  bool refresh_after_moved_ = false;       // guarded by mu_
  std::optional<std::chrono::steady_clock::time_point> failed_at_;  // guarded by mu_: last failed resolution
};

// Lends connections by node to RunRedisCommand: a pool's leases, or a
// pipeline thread's own connections.
class RedisConnections {
 public:
  virtual ~RedisConnections() = default;
  // A connection to `node`; UNAVAILABLE when none can be opened (nothing
  // was sent).
  virtual absl::StatusOr<redisContext*> Get(const RedisAddress& node) = 0;
  // Gives the connection back; not healthy: it saw an I/O error, drop it.
  virtual void Put(const RedisAddress& node, redisContext* connection, bool healthy) = 0;
};

// One command: to `fixed` when given, else to the node of `slot` (-1: any);
// MOVED and ASK followed, TRYAGAIN / READONLY / CLUSTERDOWN / an unreachable
// node retried (the command did not run) within command_timeout when the
// topology is routed; WAIT appended for a write when options ask for it.
// An I/O error after sending is UNAVAILABLE at once (it may have run). An
// error reply is returned as a value, like RedisPool::Command's.
absl::StatusOr<RedisValue> RunRedisCommand(RedisTopology& topology, const RedisOptions& options,
                                           RedisConnections& connections, const std::vector<std::string>& argv,
                                           int slot, const RedisAddress* fixed = nullptr);

// UNAVAILABLE/STORAGE_UNAVAILABLE, cause REPLICA_ACK_TIMEOUT (logged).
absl::Status RedisReplicaAckTimeout(const RedisAddress& node, long long acked, int wanted);

}  // namespace labshare

#endif  // LABSHARE_COMMON_REDIS_INTERNAL_H_
