// A real local Redis Cluster for tests: 3 masters and 3 replicas (by
// default), each its own redis-server process with its own temporary
// directory, on free loopback ports whose cluster bus port (port + 10000) is
// free too. Every node runs with AOF and `appendfsync always`, cluster node
// timeout 1 s. The cluster is created with `redis-cli --cluster create ...
// --cluster-replicas 1 --cluster-yes`, and Start() returns once every node
// says cluster_state:ok, every node sees the same masters and slots, and
// every replica's link to its master is up (bounded waits on conditions).
//
// Nodes are numbered 0..size()-1 in start order; roles change (failover), so
// ask Masters() / MasterOfSlot() rather than assume. NodeCommand() talks to
// one node without following redirections (MOVED/ASK come back as error
// values), which is what a test uses to check where a key really is.
//
// MigrateSlot() moves one hash slot the way the Redis Cluster specification
// describes (and redis-cli --cluster reshard does), step by step:
//   1. CLUSTER SETSLOT slot IMPORTING from-id   on the target,
//   2. CLUSTER SETSLOT slot MIGRATING to-id     on the source,
//   3. CLUSTER GETKEYSINSLOT slot N on the source, MIGRATE ... KEYS k... to
//      the target, until the slot is empty on the source,
//   4. CLUSTER SETSLOT slot NODE to-id on the target, the source, then every
//      other master.
// The steps are public too (BeginMigration, MigrateKeys, MigrateKeysNamed,
// FinishMigration), and MigrateSlot takes hooks called between them, so a
// test can pause a migration midway (clients then get ASK for keys already
// moved, TRYAGAIN for multi-key calls spanning both sides) while load runs.
//
// Children get SIGTERM if the thread that started them exits
// (PR_SET_PDEATHSIG): start the cluster from GoogleTest's main thread. Not
// thread-safe to start, stop, kill or restart nodes; NodeCommand,
// MasterOfSlot, Masters and the migration calls may run on any thread.
#ifndef LABSHARE_TESTS_SUPPORT_REDIS_CLUSTER_H_
#define LABSHARE_TESTS_SUPPORT_REDIS_CLUSTER_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/redis.h"

namespace labshare::testing {

class RedisCluster {
 public:
  struct StartOptions {
    int masters = 3;
    int replicas_per_master = 1;
    // Appended to every redis-server's command line.
    std::vector<std::string> extra_args;
    // Bounds the whole start (processes, create, convergence).
    absl::Duration timeout = absl::Seconds(60);
  };

  static absl::StatusOr<std::unique_ptr<RedisCluster>> Start(const StartOptions& options);
  static absl::StatusOr<std::unique_ptr<RedisCluster>> Start() { return Start(StartOptions()); }

  // SIGTERM to every node still running, waits (SIGKILL after 10 s), removes
  // the directories (kept, with the path printed, when the current test
  // failed).
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  int size() const { return static_cast<int>(nodes_.size()); }
  int port(int node) const;
  pid_t pid(int node) const;  // -1 once killed
  bool alive(int node) const;
  std::string address(int node) const;  // "127.0.0.1:PORT"
  const std::string& node_id(int node) const;  // the 40-hex cluster node id
  const std::string& dir(int node) const;
  // The node listening on a port; -1 if none of ours.
  int NodeOfPort(int port) const;
  // The node an "ASK/MOVED slot host:port" error or a CLUSTER SLOTS entry names.
  int NodeOfAddress(const std::string& host_port) const;

  // Seeds: every node's address (a client needs any one of them).
  std::vector<RedisAddress> seeds() const;
  // "127.0.0.1:P0,127.0.0.1:P1,..."
  std::string seed_list() const;
  // The flags a service gets: {"--redis_cluster", "--redis=H:P,H:P,..."}.
  std::vector<std::string> ServiceFlags() const;
  // Options for a RedisPool/RedisPipeline in cluster mode: cluster = true,
  // cluster_seeds = seeds(), host/port = the first seed; others default.
  RedisOptions options() const;

  // One command on one node, no redirection followed: MOVED/ASK/TRYAGAIN/
  // CLUSTERDOWN are RedisValue errors. UNAVAILABLE when the node does not
  // answer within `timeout`.
  absl::StatusOr<RedisValue> NodeCommand(int node, const std::vector<std::string>& argv,
                                         absl::Duration timeout = absl::Seconds(5)) const;
  // INFO <section> of a node, parsed into field -> value.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> NodeInfo(
      int node, const std::string& section) const;

  // Live nodes that are masters with at least one slot (by their own
  // CLUSTER NODES "myself" line), in node order.
  std::vector<int> Masters() const;
  // The live master that owns `slot` by its own account (the migrating
  // source until SETSLOT NODE; the highest config epoch if two claim it).
  // NOT_FOUND if no live master claims it.
  absl::StatusOr<int> MasterOfSlot(int slot) const;
  absl::StatusOr<int> MasterOfKey(const std::string& key) const { return MasterOfSlot(RedisKeySlot(key)); }
  // The live replica(s) of a master, by the replicas' own account.
  std::vector<int> ReplicasOf(int master) const;

  // Waits until every live node says cluster_state:ok, all live nodes agree
  // on which node owns which slots, every slot is owned, and every live
  // replica's master link is up. DEADLINE_EXCEEDED with the last
  // disagreement otherwise.
  absl::Status WaitHealthy(absl::Duration timeout = absl::Seconds(30)) const;

  // kill -9 of one node (its AOF stays on disk); the process is reaped.
  absl::Status Kill9(int node);
  // After Kill9(master): waits until a former replica of it is a master that
  // owns its slots on every live node, and the cluster is healthy again
  // (cluster_state:ok everywhere). Returns the new master.
  absl::StatusOr<int> WaitForFailover(int dead_master, absl::Duration timeout = absl::Seconds(30));
  // Starts a killed node again on its port and directory (same nodes.conf,
  // same AOF): it rejoins, as a replica when its slots moved on.
  absl::Status Restart(int node);

  // ---- Slot migration ----
  struct MigrationHooks {
    // After IMPORTING and MIGRATING are set, before any key moves.
    std::function<void()> after_begin;
    // After each MIGRATE batch, with the number of keys moved so far.
    std::function<void(int moved)> after_batch;
    // After the slot is empty on the source, before SETSLOT NODE.
    std::function<void()> before_finish;
  };
  // Moves every key of `slot` from master `from` to master `to` and gives it
  // the slot (see the header comment). `batch` keys per MIGRATE. Returns the
  // number of keys moved. Errors name the step and the node's answer.
  absl::StatusOr<int> MigrateSlot(int slot, int from, int to, const MigrationHooks& hooks = {},
                                  int batch = 10);
  // Step 1 and 2.
  absl::Status BeginMigration(int slot, int from, int to);
  // Step 3, one round: up to `max_keys` keys of the slot still on `from`
  // (GETKEYSINSLOT) moved in MIGRATE batches of `batch`. Returns how many.
  absl::StatusOr<int> MigrateKeys(int slot, int from, int to, int max_keys, int batch = 10);
  // Step 3 for named keys (all in `slot`); keys not on `from` are skipped.
  absl::Status MigrateKeysNamed(int slot, int from, int to, const std::vector<std::string>& keys);
  // Step 4: SETSLOT NODE on the target, the source, then the other live
  // masters; then waits until every live node sees `to` owning the slot.
  absl::Status FinishMigration(int slot, int from, int to, absl::Duration timeout = absl::Seconds(30));

  // How many error replies starting with `code` (MOVED, ASK, TRYAGAIN...)
  // a node has sent since it started (INFO errorstats); 0 if none.
  absl::StatusOr<long long> ErrorCount(int node, const std::string& code) const;
  // Waits until every replica of a master has acknowledged the master's
  // whole replication stream (offsets equal), so a write the master
  // acknowledged survives its kill -9 through a failover.
  absl::Status WaitReplicasCaughtUp(int master, absl::Duration timeout = absl::Seconds(10)) const;
  // FLUSHALL on every live master (replicas follow).
  absl::Status FlushAll() const;

  // Keys of a slot held by a node (CLUSTER COUNTKEYSINSLOT on it).
  absl::StatusOr<long long> CountKeysInSlot(int node, int slot) const;

  // `redis-cli --cluster check` against a live node: OK with its output
  // when it finds no problem (every slot covered, no open slot, all nodes
  // agree), INTERNAL with the output otherwise.
  absl::StatusOr<std::string> RedisCliCheck() const;

  // The tail of a node's log, for failure messages.
  std::string LogTail(int node, size_t max_bytes = 3000) const;

 private:
  struct Node {
    int port = 0;
    pid_t pid = -1;
    std::string dir;
    std::string id;
    std::vector<std::string> args;  // the full command line, for Restart
    int slot_at_kill = -1;          // a slot it owned as a master when Kill9 ran
  };
  RedisCluster() = default;
  absl::Status StartNode(Node* node);
  absl::Status CreateWithRedisCli(int replicas_per_master, absl::Duration timeout);
  std::string HealthProblem() const;

  pid_t owner_pid_ = -1;
  std::string root_dir_;
  std::vector<Node> nodes_;
};

// The hash tag "{...}" of a key that lands in `slot` with the given prefix:
// "<prefix>N" for the first N >= 0 whose slot is `slot`. For tests that need
// keys on a given slot.
std::string KeyTagForSlot(int slot, const std::string& prefix = "t");

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_SUPPORT_REDIS_CLUSTER_H_
