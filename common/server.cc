#include "common/server.h"

#include "absl/strings/strip.h"

#include <algorithm>
#include <fstream>

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/impl/server_initializer.h>
#include <grpcpp/support/server_interceptor.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/error_contract.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/peer_identity.h"
#include "common/redis_flags.h"
#include "common/reflection_v1.h"
#include "common/secret_file.h"
#include "common/unary.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "HOST:PORT to serve gRPC on; port 0 picks a free port. The bound address is printed "
          "on stdout as 'listening on HOST:PORT'.");
ABSL_FLAG(std::string, redis, "127.0.0.1:6379",
          "HOST:PORT of the Redis server; with --redis_cluster, a comma-separated list of seed "
          "nodes of the Redis Cluster.");
ABSL_FLAG(bool, redis_cluster, false,
          "Redis is a Redis Cluster: route each command to the master of its hash slot and follow "
          "MOVED/ASK redirections and failovers.");
ABSL_FLAG(std::string, redis_sentinels, "",
          "Comma-separated HOST:PORT of Redis Sentinels; when set, the master named "
          "--redis_sentinel_master is found through them and followed across failovers (--redis "
          "is then ignored).");
ABSL_FLAG(std::string, redis_sentinel_master, "labshare", "The master's name in the Sentinel configuration.");
ABSL_FLAG(int, redis_wait_replicas, 0,
          "Acknowledge a write only after WAIT confirms this many replicas hold it (0: no WAIT). "
          "With Sentinel failover, 1 keeps acknowledged writes across a failover.");
ABSL_FLAG(absl::Duration, redis_wait_timeout, absl::Seconds(1),
          "Longest WAIT for --redis_wait_replicas; a write not confirmed in time is answered "
          "UNAVAILABLE (retry with the same request_id).");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT for the Prometheus /metrics endpoint; port 0 picks a free port; empty "
          "disables it.");
ABSL_FLAG(int, redis_pool_size, 16,
          "Redis connections kept by this process (per master with Sentinel or Redis Cluster).");
// Access log (issue 17): every call is counted and timed in the metrics
// (rate, code, latency histogram per method), so the access log's lines for
// successful calls are examples to follow a trace id by, not the count.
// 1 in 100 keeps about 200 lines/s at 20,000 calls/s (a line is ~240 bytes,
// formatted and written off the call's thread but still ~2 us of a core per
// line); every error and every slow call is still a line.
ABSL_FLAG(int, access_log_sample, 100,
          "Access log: log 1 in N successful calls per method (the 1st, the N+1-th, ...; 1 logs "
          "every call). Failed calls and calls slower than --access_log_slow are always logged; "
          "every call is counted in the metrics.");
// Workers of the callback methods whose use cases block (common/unary.h
// HandleUnaryBlocking): a fixed pool, not a thread per call.
ABSL_FLAG(int, worker_threads, 32,
          "Threads per service that run its blocking use cases (booking, inventory, identity, billing); calls "
          "beyond them wait in a queue.");
ABSL_FLAG(int, worker_queue, 4096,
          "Calls that may wait for a worker; more are answered UNAVAILABLE (SERVER_BUSY) with a retry delay.");
ABSL_FLAG(absl::Duration, access_log_slow, absl::Milliseconds(250),
          "Access log: a successful call at least this long is always logged.");
ABSL_FLAG(std::string, clock_file, "",
          "Demo and end-to-end tests only: read \"now\" (RFC 3339) from this file on every use "
          "instead of the system clock.");

namespace labshare {

absl::Status ServerBusy() {
  return WithRetryDelay(MakeError(absl::StatusCode::kUnavailable, "SERVER_BUSY",
                                  "the service has too many calls waiting; try again shortly"),
                        absl::Milliseconds(200));
}

BlockingExecutor* ServiceWorkers(absl::string_view service) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* const pools = new std::map<std::string, BlockingExecutor*, std::less<>>();
  absl::MutexLock lock(&mu);
  auto it = pools->find(service);
  if (it == pools->end()) {
    it = pools->emplace(std::string(service),
                        new BlockingExecutor(std::max(1, absl::GetFlag(FLAGS_worker_threads)),
                                             static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_worker_queue)))))
             .first;
  }
  return it->second;
}
namespace {

std::string HeaderValue(const std::multimap<grpc::string_ref, grpc::string_ref>& md,
                        const char* key) {
  auto it = md.find(key);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

std::string RandomTraceId() {
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen));
}

bool LowerHex(absl::string_view s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The trace id of a call (it goes into EventHeader.trace_id, so also into
// webhook payloads other organisations receive): a valid W3C traceparent's
// (version-traceid-parentid-flags, lowercase hex; version ff invalid; 00 has
// exactly four fields; neither id all zeros), else an x-trace-id of 1-64
// characters of [A-Za-z0-9._:-], else a new one. An unusable header is
// ignored. The console gateway chooses the same way (server/trace.ts).
std::string TraceIdOf(const std::multimap<grpc::string_ref, grpc::string_ref>& md) {
  const std::string tp = HeaderValue(md, "traceparent");
  const std::vector<absl::string_view> parts = absl::StrSplit(tp, '-');
  if (parts.size() >= 4 && LowerHex(parts[0], 2) && parts[0] != "ff" && (parts[0] != "00" || parts.size() == 4) &&
      LowerHex(parts[1], 32) && LowerHex(parts[2], 16) && LowerHex(parts[3], 2) &&
      parts[1] != std::string(32, '0') && parts[2] != std::string(16, '0')) {
    return std::string(parts[1]);
  }
  const std::string x = HeaderValue(md, "x-trace-id");
  const bool usable = !x.empty() && x.size() <= 64 && std::all_of(x.begin(), x.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' || c == '-';
  });
  return usable ? x : RandomTraceId();
}

std::string RequestIdOf(void* message) {
  if (message == nullptr) return "";
  // Every message on our servers is a protobuf message (single inheritance).
  auto* msg = static_cast<google::protobuf::Message*>(message);
  const auto* field = msg->GetDescriptor()->FindFieldByName("request_id");
  if (field == nullptr || field->type() != google::protobuf::FieldDescriptor::TYPE_STRING ||
      field->is_repeated()) {
    return "";
  }
  return msg->GetReflection()->GetString(*msg, field);
}

class CallInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallInterceptor(grpc::experimental::ServerRpcInfo* info, Authorizer* auth, Metrics* metrics,
                  const std::string* trust_domain, LogSampler* sampler)
      : info_(info), auth_(auth), metrics_(metrics), trust_domain_(trust_domain), sampler_(sampler),
        method_(info->method()) {}

  ~CallInterceptor() override {
    if (began_) auth_->End(info_->server_context());
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using Hook = grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(Hook::POST_RECV_INITIAL_METADATA)) {
      start_ = absl::Now();
      auto* md = methods->GetRecvInitialMetadata();
      trace_id_ = TraceIdOf(*md);
      if (!absl::StartsWith(method_, "/grpc.")) {
        // A service proves its name with its client certificate.
        std::string peer_service;
        if (auto context = info_->server_context()->auth_context(); context != nullptr) {
          peer_service = PeerServiceName(*context, *trust_domain_);
        }
        auth_->Begin(info_->server_context(), method_, HeaderValue(*md, "authorization"), peer_service,
                     trace_id_);
        began_ = true;
        info_->server_context()->AddTrailingMetadata("x-trace-id", trace_id_);
      }
    }
    if (methods->QueryInterceptionHookPoint(Hook::POST_RECV_MESSAGE) && request_id_.empty() &&
        !absl::StartsWith(method_, "/grpc.")) {
      request_id_ = RequestIdOf(methods->GetRecvMessage());
    }
    if (methods->QueryInterceptionHookPoint(Hook::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      CheckAnswerDocumented(method_, status);
      const absl::Duration latency = absl::Now() - start_;
      const double seconds = absl::ToDoubleSeconds(latency);
      const std::string code = CodeName(static_cast<absl::StatusCode>(status.error_code()));
      if (metrics_ != nullptr) metrics_->ObserveRpc(method_, code, seconds);
      // Errors and slow calls always; other calls 1 in --access_log_sample.
      if (!absl::StartsWith(method_, "/grpc.health") &&
          (sampler_ == nullptr || sampler_->Keep(method_, status.ok(), latency))) {
        LogFields fields = {{"method", method_},
                            {"code", code},
                            {"latency_ms", absl::StrFormat("%.3f", seconds * 1000)},
                            {"trace_id", trace_id_}};
        if (!request_id_.empty()) fields.emplace_back("request_id", request_id_);
        if (!status.ok()) fields.emplace_back("error", status.error_message());
        // A sampled line stands for `every` successful calls.
        if (status.ok() && sampler_ != nullptr && sampler_->every() > 1) {
          fields.emplace_back("sample", std::to_string(sampler_->every()));
        }
        LogJson(status.ok() ? "info" : "warn", "rpc", fields);
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  Authorizer* auth_;
  Metrics* metrics_;
  const std::string* trust_domain_;
  LogSampler* sampler_;
  std::string method_;
  std::string trace_id_;
  std::string request_id_;
  absl::Time start_ = absl::Now();
  bool began_ = false;
};

class CallInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  CallInterceptorFactory(Authorizer* auth, Metrics* metrics, const std::string* trust_domain, LogSampler* sampler)
      : auth_(auth), metrics_(metrics), trust_domain_(trust_domain), sampler_(sampler) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallInterceptor(info, auth_, metrics_, trust_domain_, sampler_);
  }

 private:
  Authorizer* auth_;
  Metrics* metrics_;
  const std::string* trust_domain_;
  LogSampler* sampler_;
};

// The names of the services registered in a server, as gRPC itself derives
// them from the registered methods: InitServer sees the application's
// services (and reflection's) before any port is open, Finish the complete
// list (with the health service, registered by Server::Start).
// Every "/<service>/<method>" of the named services, from their descriptors,
// and the health service's (which has none in the generated pool).
absl::flat_hash_set<std::string> KnownMethods(const std::vector<std::string>& services) {
  absl::flat_hash_set<std::string> known = {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"};
  for (const std::string& name : services) {
    const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      known.insert(absl::StrCat("/", name, "/", service->method(i)->name()));
    }
  }
  return known;
}

class ServiceListPlugin final : public grpc::ServerBuilderPlugin {
 public:
  ServiceListPlugin(Metrics* metrics, std::vector<std::string>* services)
      : metrics_(metrics), services_(services) {}
  std::string name() override { return "labshare_service_list"; }
  // Before any port opens: no call sees the known set change.
  void InitServer(grpc::ServerInitializer* si) override {
    metrics_->SetKnownMethods(KnownMethods(*si->GetServiceList()));
  }
  void Finish(grpc::ServerInitializer* si) override { *services_ = *si->GetServiceList(); }
  void ChangeArguments(const std::string& /*name*/, void* /*value*/) override {}

 private:
  Metrics* metrics_;
  std::vector<std::string>* services_;
};

class ServiceListOption final : public grpc::ServerBuilderOption {
 public:
  ServiceListOption(Metrics* metrics, std::vector<std::string>* services)
      : metrics_(metrics), services_(services) {}
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ServiceListPlugin>(metrics_, services_));
  }

 private:
  Metrics* metrics_;
  std::vector<std::string>* services_;
};

[[noreturn]] void Die(const std::string& message) {
  std::cerr << message << std::endl;
  std::exit(2);
}

}  // namespace

void InitProcess(int argc, char** argv, const char* usage) {
  absl::FlagsUsageConfig config;
  // --help lists the project's flags, not Abseil's internals.
  config.contains_help_flags = [](absl::string_view path) {
    return !absl::StrContains(path, "absl/");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  // Debian's Abseil checks every absl::Mutex (gRPC's too) for lock-order
  // cycles; that costs a graph update per lock on the hot path.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::ParseCommandLine(argc, argv);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

bool ShutdownSignalPending() {
  sigset_t pending;
  sigemptyset(&pending);
  if (sigpending(&pending) != 0) return false;
  return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

void WaitForShutdownSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  LogInfo("signal received", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerConfig config,
                                                      std::vector<grpc::Service*> services) {
  std::unique_ptr<Server> s(new Server());
  s->config_ = std::move(config);
  const TlsMaterial& tls = s->config_.tls;
  LS_RETURN_IF_ERROR(CheckTlsMaterial(tls));
  if (!tls.has_identity()) {
    LS_RETURN_IF_ERROR(CheckPlaintextAllowed(s->config_.listen, "--listen"));
  }
  LS_ASSIGN_OR_RETURN(s->metrics_,
                      Metrics::Create(s->config_.service_name, s->config_.metrics_listen, tls));

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (tls.has_identity()) {
    // With a CA: mutual TLS for those who present a certificate (services);
    // people's clients present none and authenticate with a token.
    grpc::SslServerCredentialsOptions options(tls.ca_pem.empty()
                                                  ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                  : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = tls.ca_pem;
    options.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_pem});
    credentials = grpc::SslServerCredentials(options);
    WipeSecret(options.pem_key_cert_pairs.front().private_key);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  InitReflectionV1ServerBuilderPlugin();  // grpc.reflection.v1 next to v1alpha
  grpc::ServerBuilder builder;
  // No SO_REUSEPORT: with it gRPC binds a listener per poller and, on port 0,
  // each of them to a different free port (grpc/grpc#24730), i.e. ports
  // nobody announced.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(s->config_.listen, credentials, &s->port_);
  for (grpc::Service* service : services) builder.RegisterService(service);
  // The names of the registered services, as gRPC derives them from the
  // registered methods: the metrics' known methods, the health names.
  std::vector<std::string> registered;
  builder.SetOption(std::make_unique<ServiceListOption>(s->metrics_.get(), &registered));
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  s->access_log_ = std::make_unique<LogSampler>(s->config_.access_log_sample, s->config_.access_log_slow);
  creators.push_back(std::make_unique<CallInterceptorFactory>(s->config_.authorizer, s->metrics_.get(),
                                                              &s->config_.trust_domain, s->access_log_.get()));
  builder.experimental().SetInterceptorCreators(std::move(creators));
  s->server_ = builder.BuildAndStart();
  WipeSecret(s->config_.tls.key_pem);  // gRPC and the metrics endpoint hold their copies
  if (s->server_ == nullptr || s->port_ == 0) {
    return MakeError(absl::StatusCode::kInvalidArgument, "LISTEN_FAILED",
                     "cannot listen on --listen=" + s->config_.listen);
  }
  const size_t colon = s->config_.listen.rfind(':');
  s->host_ = s->config_.listen.substr(0, colon);
  // Readiness: the whole server ("") and every registered service by name
  // follow Redis (MonitorHealth); liveness only this process.
  s->ready_names_ = {""};
  for (const std::string& name : registered) s->ready_names_.push_back(name);
  auto* health = s->server_->GetHealthCheckService();
  for (const auto& name : s->ready_names_) health->SetServingStatus(name, false);
  health->SetServingStatus(std::string(kLivenessService), true);
  s->health_thread_ = std::thread([raw = s.get()] { raw->MonitorHealth(); });

  std::printf("listening on %s\n", s->address().c_str());
  std::fflush(stdout);
  LogInfo("listening", {{"service", s->config_.service_name},
                        {"address", s->address()},
                        {"transport", tls.has_identity() ? (tls.ca_pem.empty() ? "tls" : "mutual tls") : "plaintext"},
                        {"metrics_port", std::to_string(s->metrics_port())}});
  return s;
}

std::string Server::address() const { return absl::StrCat(host_, ":", port_); }

int Server::metrics_port() const { return metrics_ ? metrics_->port() : 0; }

void Server::MonitorHealth() {
  bool last = false;
  bool first = true;
  do {
    const absl::Status ready = config_.redis == nullptr ? absl::OkStatus() : config_.redis->Ready();
    std::string waiting_for;  // the first dependency not serving
    if (ready.ok()) {
      for (const auto& [name, channel] : config_.dependencies) {
        grpc::ClientContext context;
        context.set_deadline(
            absl::ToChronoTime(absl::Now() + std::clamp(config_.health_interval, absl::Milliseconds(200), absl::Seconds(2))));
        grpc::health::v1::HealthCheckRequest request;
        grpc::health::v1::HealthCheckResponse response;
        const grpc::Status st = grpc::health::v1::Health::NewStub(channel)->Check(&context, request, &response);
        if (!st.ok() || response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
          waiting_for = name;
          break;
        }
      }
    }
    const bool ok = ready.ok() && waiting_for.empty();
    if (ok != last || first) {
      for (const auto& name : ready_names_) server_->GetHealthCheckService()->SetServingStatus(name, ok);
      LogFields fields = {{"service", config_.service_name}, {"status", ok ? "SERVING" : "NOT_SERVING"}};
      const auto metadata = ErrorMetadataOf(ready);
      if (auto it = metadata.find("cause"); it != metadata.end()) fields.emplace_back("cause", it->second);
      if (!waiting_for.empty()) fields.emplace_back("waiting_for", waiting_for);
      LogInfo("health", fields);
      last = ok;
      first = false;
    }
  } while (!stop_.WaitForNotificationWithTimeout(config_.health_interval));
}

void Server::Shutdown(absl::Duration drain) {
  if (shut_down_) return;
  shut_down_ = true;
  stop_.Notify();
  if (health_thread_.joinable()) health_thread_.join();
  if (server_ == nullptr) return;  // Start() failed before the server ran
  server_->GetHealthCheckService()->Shutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + drain));
  server_->Wait();
  LogInfo("stopped", {{"service", config_.service_name}});
}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

RedisOptions RedisOptionsFromFlags() {
  absl::StatusOr<RedisOptions> options;
  const std::string sentinels = absl::GetFlag(FLAGS_redis_sentinels);
  if (!sentinels.empty() && absl::GetFlag(FLAGS_redis_cluster)) {
    Die("--redis_sentinels and --redis_cluster exclude each other: a Redis Cluster fails over by itself");
  }
  if (!sentinels.empty()) {
    auto list = ParseRedisAddressList(sentinels);
    if (!list.ok()) Die("--redis_sentinels: " + std::string(list.status().message()));
    options = RedisOptions();
    options->sentinels = *std::move(list);
    options->sentinel_master = absl::GetFlag(FLAGS_redis_sentinel_master);
    if (options->sentinel_master.empty()) Die("--redis_sentinel_master must name the master");
  } else if (absl::GetFlag(FLAGS_redis_cluster)) {
    auto list = ParseRedisAddressList(absl::GetFlag(FLAGS_redis));
    if (!list.ok()) Die("--redis: " + std::string(list.status().message()));
    options = RedisOptions();
    options->cluster = true;
    options->host = list->front().host;
    options->port = list->front().port;
    options->cluster_seeds = *std::move(list);
  } else {
    options = ParseRedisAddress(absl::GetFlag(FLAGS_redis));
    if (!options.ok()) Die("--redis: " + std::string(options.status().message()));
  }
  options->wait_replicas = absl::GetFlag(FLAGS_redis_wait_replicas);
  if (options->wait_replicas < 0) Die("--redis_wait_replicas must be 0 or more");
  options->wait_timeout = absl::GetFlag(FLAGS_redis_wait_timeout);
  // WAIT's answer must come before the socket's read timeout (the command
  // timeout), or a confirmed write would read as a broken connection.
  if (options->wait_timeout < absl::Milliseconds(1) || options->wait_timeout >= options->command_timeout) {
    Die(absl::StrCat("--redis_wait_timeout must be at least 1ms and less than the Redis command timeout (",
                     absl::FormatDuration(options->command_timeout), ")"));
  }
  options->pool_size = absl::GetFlag(FLAGS_redis_pool_size);
  if (absl::Status auth = RedisCredentialsFromFlags(&*options); !auth.ok()) Die(std::string(auth.message()));
  return *options;
}

namespace {
class FileClock final : public Clock {
 public:
  explicit FileClock(std::string path) : path_(std::move(path)) {}
  absl::Time Now() const override {
    std::string err;
    // A writer that truncates before writing can be caught in between:
    // read again briefly before giving up.
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::ifstream in(path_);
      std::string text;
      std::getline(in, text);
      absl::Time t;
      if (absl::ParseTime(absl::RFC3339_full, std::string(absl::StripAsciiWhitespace(text)), &t, &err)) return t;
      absl::SleepFor(absl::Milliseconds(5));
    }
    Die("--clock_file " + path_ + ": cannot read an RFC 3339 time: " + err);
  }

 private:
  std::string path_;
};
}  // namespace

std::unique_ptr<Clock> ClockFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_clock_file);
  if (path.empty()) return std::make_unique<SystemClock>();
  auto clock = std::make_unique<FileClock>(path);
  LogWarning("time comes from a clock file (demo mode)", {{"clock_file", path}});
  (void)clock->Now();  // fail at start, not on the first call
  return clock;
}

int RunService(const std::string& service_name, RedisPool* redis, Authorizer* authorizer,
               std::vector<grpc::Service*> services, const std::function<void()>& on_signal,
               std::vector<std::pair<std::string, std::shared_ptr<grpc::Channel>>> dependencies) {
  ServerConfig config;
  config.dependencies = std::move(dependencies);
  config.service_name = service_name;
  config.listen = absl::GetFlag(FLAGS_listen);
  config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  config.redis = redis;
  config.authorizer = authorizer;
  config.trust_domain = TrustDomainFromFlags();
  config.access_log_sample = absl::GetFlag(FLAGS_access_log_sample);
  config.access_log_slow = absl::GetFlag(FLAGS_access_log_slow);
  auto tls = LoadTls(TlsFilesFromFlags(), /*server=*/true);
  if (!tls.ok()) {
    LogError("cannot start", {{"service", service_name}, {"error", tls.status().ToString()}});
    return 1;
  }
  config.tls = *std::move(tls);
  auto server = Server::Start(std::move(config), std::move(services));
  if (!server.ok()) {
    LogError("cannot start", {{"service", service_name}, {"error", server.status().ToString()}});
    return 1;
  }
  WaitForShutdownSignal();
  if (on_signal) on_signal();
  (*server)->Shutdown();
  return 0;
}

}  // namespace labshare
