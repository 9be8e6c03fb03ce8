// Private to common/redis.cc and common/redis_pipeline.cc: connecting to one
// node, and where each call goes (one server, the master Sentinel names, or
// the master of a hash slot in a Redis Cluster).
#ifndef LABSHARE_COMMON_REDIS_INTERNAL_H_
#define LABSHARE_COMMON_REDIS_INTERNAL_H_

#include <array>
#include <condition_variable>
#include <chrono>
#include <optional>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
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

// Sentinel: a node is used only once it says it is master (ROLE). OK when
// it is; UNAVAILABLE/STORAGE_UNAVAILABLE (logged) when it is a replica, is
// loading, or does not answer: ask the sentinels again.
absl::Status CheckRedisMaster(redisContext* c, const RedisAddress& node);

// ConnectRedisNode, then CheckRedisMaster when `master_only` (Sentinel).
absl::StatusOr<RedisContextPtr> ConnectRedisMaster(const RedisAddress& node, const RedisOptions& options,
                                                   bool master_only);

// An idle connection with something to read was closed by the server.
bool RedisConnectionIsStale(redisContext* c);

std::string RedisAddressText(const RedisAddress& a);  // "host:port"

// The hash slot of the command's first key; -1 for a command without keys
// (PING, SCRIPT, INFO, WAIT, SCAN...).
int RedisCommandSlot(const std::vector<std::string>& argv);

// RESP of one command ("*<n>\r\n" then "$<len>\r\n<bytes>\r\n" per
// argument) appended to out, for redisAppendFormattedCommand.
void FormatRedisCommand(std::string* out, const std::vector<std::string>& argv);

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
// asked of the sentinels in turn and checked with ROLE (CheckRedisMaster),
// again after Invalidate(). Cluster: the slot map from CLUSTER SLOTS (any reachable
// known node or seed), again after Invalidate(); Moved() patches one slot
// at once and asks for a full refresh.
// Resolution runs without the lock, one at a time, at most once per 100 ms;
// meanwhile callers keep the last map (a stale map only costs a redirection
// or a failed connect, which the caller retries). Only a caller with no map
// at all waits, until its deadline.
class RedisTopology {
 public:
  using Deadline = std::chrono::steady_clock::time_point;
  explicit RedisTopology(RedisOptions options);

  bool routed() const { return cluster_ || sentinel_; }  // anything but one fixed server
  bool cluster() const { return cluster_; }
  bool sentinel() const { return sentinel_; }

  // Counts the maps resolved so far (each Sentinel or CLUSTER SLOTS answer).
  uint64_t generation();
  // The masters of the current map (for a cluster: those serving a slot),
  // without resolving; empty before the first map.
  std::vector<RedisAddress> KnownMasters();

  // The node for `slot` (-1: any master).
  absl::StatusOr<RedisAddress> NodeFor(int slot, Deadline deadline);
  // Every master with the lowest slot it serves, in slot order (one master,
  // slot 0, unless a cluster), for SCAN.
  absl::StatusOr<std::vector<std::pair<int, RedisAddress>>> Masters(Deadline deadline);
  // Something went wrong talking to the node (connection error, READONLY,
  // CLUSTERDOWN): resolve again.
  void Invalidate();
  void Moved(int slot, const RedisAddress& node);

 private:
  struct Map {
    RedisAddress master;               // standalone, sentinel
    std::vector<RedisAddress> nodes;   // cluster masters
    std::array<int16_t, 16384> slots;  // index into nodes, -1 none
    size_t next_sentinel = 0;
  };
  // With the lock held: resolves when due (releasing the lock meanwhile);
  // OK when a map is there to use.
  absl::Status Refresh(std::unique_lock<std::mutex>& lock, Deadline deadline);
  absl::StatusOr<Map> ResolveSentinel(Map current) const;  // no lock held
  absl::StatusOr<Map> ResolveCluster(Map current) const;   // no lock held

  const RedisOptions options_;
  const bool cluster_;
  const bool sentinel_;
  std::mutex mu_;
  std::condition_variable resolved_;
  Map map_;                       // guarded by mu_
  bool have_map_ = false;         // guarded by mu_
  bool stale_ = true;             // guarded by mu_
  bool resolving_ = false;        // guarded by mu_
  std::optional<Deadline> last_attempt_;  // guarded by mu_
  uint64_t generation_ = 0;               // guarded by mu_
};

// Lends connections by node to RunRedisCommand: a pool's leases, or a
// pipeline thread's own connections.
class RedisConnections {
 public:
  virtual ~RedisConnections() = default;
  // A connection to `node`, waiting for a free one until `deadline`;
  // UNAVAILABLE when none can be had (nothing was sent), with *unreachable
  // set when connecting failed (rather than every connection being busy).
  virtual absl::StatusOr<redisContext*> Get(const RedisAddress& node, RedisTopology::Deadline deadline,
                                           bool* unreachable) = 0;
  // Gives the connection back; not healthy: it saw an I/O error, drop it.
  virtual void Put(const RedisAddress& node, redisContext* connection, bool healthy) = 0;
};

// One command: to `fixed` when given, else to the node of `slot` (-1: any);
// MOVED and ASK followed, TRYAGAIN / READONLY / CLUSTERDOWN / an unreachable
// node retried (the command did not run) until `deadline` when the topology
// is routed; WAIT appended for a write when options ask for it.
// An I/O error after sending is UNAVAILABLE at once (it may have run). An
// error reply is returned as a value, like RedisPool::Command's.
absl::StatusOr<RedisValue> RunRedisCommand(RedisTopology& topology, const RedisOptions& options,
                                           RedisConnections& connections, const std::vector<std::string>& argv,
                                           int slot, RedisTopology::Deadline deadline,
                                           const RedisAddress* fixed = nullptr);

// "WAIT <replicas> <timeout ms>", appended after writes.
std::vector<std::string> RedisWaitCommand(int replicas, absl::Duration timeout);

// Splits a pipeline's commands by node, keeping their order within a node:
// on a cluster one slot lookup per command (*slots filled), otherwise one
// lookup for all. Commands whose node cannot be found now go to *unplaced.
using RedisNodeGroups = std::vector<std::pair<RedisAddress, std::vector<size_t>>>;
void GroupRedisCommandsByNode(RedisTopology& topology, size_t count,
                              const std::function<const std::vector<std::string>&(size_t)>& argv_of,
                              RedisTopology::Deadline deadline, std::vector<int>* slots, RedisNodeGroups* groups,
                              std::vector<size_t>* unplaced);

// UNAVAILABLE/STORAGE_UNAVAILABLE, cause REPLICA_ACK_TIMEOUT (logged).
absl::Status RedisReplicaAckTimeout(const RedisAddress& node, long long acked, int wanted);

}  // namespace labshare

#endif  // LABSHARE_COMMON_REDIS_INTERNAL_H_
