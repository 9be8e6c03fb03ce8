// Redis access through hiredis: a bounded, thread-safe connection pool.
//
// Error contract (every method):
//   - Redis error replies of Command/Pipeline come back as a RedisValue of
//     Type::kError so that callers can act on NOSCRIPT, WRONGTYPE, BUSYGROUP...
//     except the conditions that pass on their own (RedisErrorStatus: OOM,
//     MISCONF, READONLY, BUSY, LOADING...), which are the status
//     UNAVAILABLE/STORAGE_UNAVAILABLE: a caller that only looks at .status()
//     of a write never takes a refused write for a done one.
//   - No connection, I/O error, timeout, or no free connection within
//     command_timeout: UNAVAILABLE, reason STORAGE_UNAVAILABLE, with a retry
//     hint (StorageUnavailable()). The call may or may not have reached
//     Redis; retrying is the caller's decision.
//   - Eval: an error raised by the script is INTERNAL, reason STORAGE_ERROR,
//     except the conditions that pass on their own (RedisErrorStatus): out of
//     memory under maxmemory (OOM), failed persistence (MISCONF), a read-only
//     replica (READONLY), BUSY, LOADING, MASTERDOWN, TRYAGAIN, CLUSTERDOWN;
//     those are UNAVAILABLE/STORAGE_UNAVAILABLE. Redis refuses them before a
//     script's first write, so nothing was written.
// Raw Redis and hiredis text goes to the log only, never into a Status.
#ifndef LABSHARE_COMMON_REDIS_H_
#define LABSHARE_COMMON_REDIS_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct redisContext;

namespace labshare {

struct RedisAddress {
  std::string host;
  int port = 0;
};

// Where the data lives. Exactly one of three shapes:
//   - one server at host:port (the default);
//   - Sentinel: `sentinels` not empty. The master named `sentinel_master` is
//     asked of the sentinels (in turn); every new connection is used only
//     once ROLE says its node is master. After a connection error, a node
//     that is not master (an old master back as a replica) or a
//     READONLY/LOADING/MASTERDOWN answer the client asks again, so it
//     follows a failover by itself. host/port are ignored.
//   - Redis Cluster: `cluster` true. host:port and `cluster_seeds` are the
//     seed nodes; every command goes to the master of its key's hash slot
//     (the first key; every key of one call shares a hash tag), MOVED and
//     ASK redirections are followed, TRYAGAIN is retried within
//     command_timeout, and the slot map is refreshed (CLUSTER SLOTS) after a
//     redirection or a node failure. A keyless command goes to any master;
//     SCAN walks every master in turn behind one opaque cursor.
struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::vector<RedisAddress> sentinels;
  std::string sentinel_master = "labshare";
  bool cluster = false;
  std::vector<RedisAddress> cluster_seeds;
  // Durability across a failover: when > 0, every call is acknowledged only
  // after WAIT reports that many replicas hold its writes (one WAIT per call,
  // or per batch in RedisPipeline). Fewer within wait_timeout: UNAVAILABLE,
  // STORAGE_UNAVAILABLE, cause REPLICA_ACK_TIMEOUT (the write happened on the
  // master and may or may not survive a failover; a retry with the same
  // request_id answers the same).
  int wait_replicas = 0;
  absl::Duration wait_timeout = absl::Seconds(1);
  absl::Duration connect_timeout = absl::Seconds(2);
  // Bounds each round trip and the wait for a free connection.
  absl::Duration command_timeout = absl::Seconds(5);
  int pool_size = 8;  // values below 1 mean 1
  // Sentinel: RedisPipeline asks a kept connection's node ROLE again when
  // its last check is older than this (a master demoted without its clients
  // closed); new connections are always checked.
  absl::Duration role_recheck = absl::Seconds(1);
  // Redis ACL credentials, sent with AUTH on every new connection (the
  // pool's, RedisPipeline's, after every reconnect). An empty password sends
  // no AUTH (the default user, as in tests); a password without a user
  // authenticates as the default user (requirepass).
  std::string user;
  std::string password;
};

// Reads the password of Redis user `user` from `password_file` (through
// ReadSecretFile: a file others can read is refused; one trailing newline is
// dropped) into options. Both empty: no credentials, OK. Startup errors:
// the SECRET_FILE_* reasons of common/secret_file.h; INVALID_ARGUMENT,
// reason INVALID_REDIS_CREDENTIALS, for a user without a password file or
// an empty password.
absl::Status LoadRedisCredentials(const std::string& user, const std::string& password_file,
                                  RedisOptions* options);

// Sends AUTH on a fresh connection when options carry a password. A refusal
// (WRONGPASS, a disabled user...) or I/O error: UNAVAILABLE,
// STORAGE_UNAVAILABLE, logged with the user name (never the password).
absl::Status AuthenticateRedis(redisContext* context, const RedisOptions& options);

// UNAVAILABLE, reason STORAGE_UNAVAILABLE, with a retry hint (RetryInfo of
// kStorageRetryDelay). `cause`, when not empty, goes into the ErrorInfo
// metadata as "cause" (e.g. STORAGE_FULL).
inline constexpr absl::Duration kStorageRetryDelay = absl::Seconds(1);
absl::Status StorageUnavailable(absl::string_view cause = "");

struct RedisValue;
// The status for a Redis error reply that the caller did not expect:
// StorageUnavailable for conditions that pass on their own (see above; OOM
// has cause STORAGE_FULL), INTERNAL/STORAGE_ERROR for anything else.
absl::Status RedisErrorStatus(const RedisValue& error);

// Parses "HOST:PORT" (IPv6 as "[ADDR]:PORT"); INVALID_ARGUMENT, reason
// INVALID_REDIS_ADDRESS, on anything else. Other options keep their defaults.
absl::StatusOr<RedisOptions> ParseRedisAddress(std::string_view host_port);

// A comma-separated list of HOST:PORT (sentinels, cluster seeds); at least
// one. INVALID_ARGUMENT, reason INVALID_REDIS_ADDRESS, on any bad entry.
absl::StatusOr<std::vector<RedisAddress>> ParseRedisAddressList(std::string_view list);

// The hash slot of a key (CRC16 of its hash tag, mod 16384), as Redis
// Cluster computes it.
int RedisKeySlot(std::string_view key);

// One reply, owned and independent of hiredis.
struct RedisValue {
  enum class Type { kNil, kInteger, kString, kStatus, kError, kArray };

  Type type = Type::kNil;
  long long integer = 0;            // kInteger
  std::string str;                  // kString, kStatus, kError (binary safe)
  std::vector<RedisValue> elements;  // kArray

  bool is_nil() const { return type == Type::kNil; }
  bool is_error() const { return type == Type::kError; }
  bool is_array() const { return type == Type::kArray; }

  // The bytes of a kString or kStatus; INTERNAL/STORAGE_ERROR otherwise.
  absl::StatusOr<std::string> AsString() const;
  // A kInteger, or a kString holding a base-10 integer (GET of a counter);
  // INTERNAL/STORAGE_ERROR otherwise.
  absl::StatusOr<long long> AsInteger() const;
  // For logs and test failure output; may contain stored bytes, so never for
  // a client-facing message.
  std::string DebugString() const;
};

// A Lua script and its SHA1, computed locally so EVALSHA needs no round trip.
// A read-only script (one that never writes) is not a write for WAIT:
// RedisPipeline never turns its answer into REPLICA_ACK_TIMEOUT.
class RedisScript {
 public:
  enum class Access { kWrites, kReadOnly };
  explicit RedisScript(std::string source, Access access = Access::kWrites);
  const std::string& source() const { return source_; }
  const std::string& sha1() const { return sha1_; }  // 40 lowercase hex digits
  bool read_only() const { return access_ == Access::kReadOnly; }

 private:
  std::string source_;
  std::string sha1_;
  Access access_;
};

// Thread-safe. Holds at most pool_size connections, opened lazily; each is used
// by one caller at a time. A caller waits up to command_timeout for a free
// connection. A connection that saw an I/O error or timeout is discarded, and
// idle connections the server has closed (e.g. after a restart) are replaced
// before use, so the pool recovers on its own once Redis is back.
// All leases must be returned (every call returns them) before destruction.
class RedisPool {
 public:
  explicit RedisPool(RedisOptions options);
  ~RedisPool();
  RedisPool(const RedisPool&) = delete;
  RedisPool& operator=(const RedisPool&) = delete;

  // One command; arguments are binary safe. An empty argv is INTERNAL.
  absl::StatusOr<RedisValue> Command(const std::vector<std::string>& argv);

  // Several commands in one round trip on one connection; replies in order.
  // Not a transaction: wrap in MULTI/EXEC for atomicity.
  absl::StatusOr<std::vector<RedisValue>> Pipeline(
      const std::vector<std::vector<std::string>>& commands);

  // EVALSHA; when Redis does not know the script (NOSCRIPT), EVAL with the
  // source once, which also caches it. Safe: NOSCRIPT means nothing ran.
  absl::StatusOr<RedisValue> Eval(const RedisScript& script, const std::vector<std::string>& keys,
                                  const std::vector<std::string>& args);
  // The same, moving the keys and arguments into the command instead of
  // copying them (a batch of ledger steps is hundreds of kilobytes).
  absl::StatusOr<RedisValue> Eval(const RedisScript& script, std::vector<std::string>&& keys,
                                  std::vector<std::string>&& args);

  // OK when Redis answers PONG; UNAVAILABLE/STORAGE_UNAVAILABLE otherwise.
  absl::Status Ping();

  // Readiness: OK when Redis answers and would accept a write now. The probe
  // is a script that writes nothing but is not flagged no-writes, so Redis
  // (7.0+) refuses it exactly when it refuses writes: out of memory under
  // maxmemory/noeviction, failed persistence, a read-only replica.
  // UNAVAILABLE/STORAGE_UNAVAILABLE (cause STORAGE_FULL when out of memory)
  // otherwise. An older Redis that cannot run the probe is taken as writable
  // once it answers PING.
  absl::Status Ready();

  const RedisOptions& options() const { return options_; }

 private:
  // EVALSHA argv (EVALSHA, sha1, key count, keys, arguments), EVAL on NOSCRIPT.
  absl::StatusOr<RedisValue> EvalArgv(const RedisScript& script, std::vector<std::string> argv);

  class Impl;  // common/redis.cc: the connections per node and the routing
  const RedisOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Copies a hiredis reply (a redisReply*) into a RedisValue; for code that
// drives its own connection (RedisPipeline).
RedisValue RedisValueFromReply(const void* reply);

}  // namespace labshare

#endif  // LABSHARE_COMMON_REDIS_H_
