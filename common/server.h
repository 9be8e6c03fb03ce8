// The runner every LabShare binary uses.
//
// Flags common to all services (--listen, --redis, --metrics_listen,
// --redis_pool_size) are defined here (the token flags in token_flags.h). A Server:
//  - listens on --listen (port 0 picks a free port, exactly one port is
//    opened) and prints "listening on HOST:PORT" on stdout once it accepts
//    calls; serves TLS with --tls_cert/--tls_key, verifying the client
//    certificates presented against --tls_ca (common/tls.h); without TLS it
//    refuses any address but loopback (PLAINTEXT_REFUSED), --metrics_listen
//    likewise;
//  - takes a verified client certificate's SPIFFE id
//    spiffe://<--trust_domain>/<service> as the calling service
//    (common/peer_identity.h, Authorizer::Begin's peer_service);
//  - intercepts every call, on the synchronous and the callback API alike:
//    verifies the bearer token and the method policy (Authorizer), records
//    Prometheus metrics and logs one JSON line (method, code, latency,
//    request id, trace id) for every failed or slow call and for 1 in
//    --access_log_sample successful calls (those lines carry "sample": N);
//  - counts RPCs in Prometheus metrics whose method label is one of the
//    registered services' methods or "unknown" (common/metrics.h);
//  - serves grpc.health.v1 and server reflection. Readiness: the server as a
//    whole ("") and every registered service by its full name (e.g.
//    "labshare.inventory.v1.InventoryService") are SERVING only while Redis
//    answers and accepts writes (RedisPool::Ready: NOT_SERVING while it is
//    down, out of memory, read-only...) and every dependency (the services
//    it calls, ServerConfig::dependencies) reports SERVING, checked every
//    health_interval.
//    Liveness: kLivenessService ("liveness") is SERVING for as long as the
//    process serves, whatever Redis does;
//  - on SIGTERM/SIGINT reports NOT_SERVING, drains calls and returns.
#ifndef LABSHARE_COMMON_SERVER_H_
#define LABSHARE_COMMON_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/redis.h"
#include "common/tls.h"

ABSL_DECLARE_FLAG(std::string, listen);
ABSL_DECLARE_FLAG(std::string, redis);
ABSL_DECLARE_FLAG(std::string, metrics_listen);
ABSL_DECLARE_FLAG(int, redis_pool_size);

namespace labshare {

class Metrics;

// Call first in main(): sets the usage text, makes --help list the project's
// flags, parses the command line and blocks SIGTERM/SIGINT in every thread
// (they are taken by WaitForShutdownSignal).
void InitProcess(int argc, char** argv, const char* usage);

// The health service name that reports liveness only (process up).
inline constexpr char kLivenessService[] = "liveness";

struct ServerConfig {
  std::string service_name;  // "inventory": health, logs, error domain
  std::string listen = "127.0.0.1:0";
  std::string metrics_listen;  // empty: no metrics endpoint
  RedisPool* redis = nullptr;  // readiness follows its Ready(); not owned
  Authorizer* authorizer = nullptr;  // not owned
  absl::Duration health_interval = absl::Seconds(1);
  // gRPC and metrics over TLS when it has a certificate; with a CA, client
  // certificates are verified when presented. Empty: plaintext, loopback only.
  TlsMaterial tls;
  std::string trust_domain = "labshare";  // of the peers' SPIFFE ids
  // Access log: 1 in access_log_sample successful calls per method (1: all;
  // RunService takes --access_log_sample), and every failed call or call at
  // least access_log_slow long (common/log.h LogSampler).
  int access_log_sample = 1;
  absl::Duration access_log_slow = absl::Milliseconds(250);
  // Services this one calls, by name: readiness also asks each one's
  // grpc.health.v1 (the server as a whole, "") and is NOT_SERVING while one
  // does not answer SERVING. No cycles: a dependency never depends back.
  std::vector<std::pair<std::string, std::shared_ptr<grpc::Channel>>> dependencies;
};

class Server {
 public:
  // Builds, starts and prints the listening line. Services are not owned.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerConfig config,
                                                       std::vector<grpc::Service*> services);
  ~Server();

  int port() const { return port_; }
  std::string address() const;
  int metrics_port() const;

  // Marks NOT_SERVING, lets calls in flight finish up to `drain`, then stops.
  void Shutdown(absl::Duration drain = absl::Seconds(10));

 private:
  Server() = default;
  void MonitorHealth();

  ServerConfig config_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<LogSampler> access_log_;  // before server_: calls in flight use it
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string host_;
  absl::Notification stop_;
  std::thread health_thread_;
  std::vector<std::string> ready_names_;  // health names that report readiness
  bool shut_down_ = false;
};

// Blocks until SIGTERM or SIGINT (blocked by InitProcess) arrives.
void WaitForShutdownSignal();

// Whether SIGTERM or SIGINT has arrived (pending; InitProcess blocks them)
// without taking it: for waits before the server starts (e.g.
// PageTokenCodec::FromRedis's stop), so a stopped process does not hang.
bool ShutdownSignalPending();

// Reads the common flags into a config and a Redis pool, starts the server,
// waits for a signal and shuts down. `on_signal` (if set) runs as soon as the
// signal arrives, before the calls in flight are drained: background loops
// (event consumers) stop there, quietly. Returns the process exit code.
int RunService(const std::string& service_name, RedisPool* redis, Authorizer* authorizer,
               std::vector<grpc::Service*> services, const std::function<void()>& on_signal = {},
               std::vector<std::pair<std::string, std::shared_ptr<grpc::Channel>>> dependencies = {});

// Options for the Redis pool from --redis and --redis_pool_size; exits with
// a message on a bad address.
RedisOptions RedisOptionsFromFlags();

// The process clock: the system clock, or with --clock_file=PATH the time
// written in that file (RFC 3339, re-read on every call), for demos and
// end-to-end tests that must move time forward (check-in windows, month
// ends). Never use a clock file in production.
std::unique_ptr<Clock> ClockFromFlags();

}  // namespace labshare

#endif  // LABSHARE_COMMON_SERVER_H_
