// The server runner: health follows Redis, metrics are served, calls are
// authenticated, shutdown drains.
#include "common/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/codegen/client_unary_call.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/unary.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

// grpc.health.v1.HealthCheckResponse.status, decoded by hand (field 1, varint);
// -1 when the call failed (NOT_FOUND for a name the server does not know).
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  // HealthCheckRequest{service}: field 1, length-delimited; empty = the whole server.
  std::string encoded;
  if (!service.empty()) encoded = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  grpc::Slice body{encoded};
  grpc::ByteBuffer request(&body, 1), response;
  grpc::Status s = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel.get(),
      grpc::internal::RpcMethod("/grpc.health.v1.Health/Check", grpc::internal::RpcMethod::NORMAL_RPC),
      &ctx, request, &response);
  if (!s.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  return bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : 0;
}

// Polls until the health status is `want` (bounded): readiness, not ordering.
bool WaitForHealth(const std::shared_ptr<grpc::Channel>& ch, int want, const std::string& service = "") {
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline) {
    if (HealthStatus(ch, service) == want) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: x\r\n\r\n";
  if (write(fd, req.data(), req.size()) < 0) return "";
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

constexpr int kServing = 1;
constexpr int kNotServing = 2;

class Stub final : public labshare::booking::v1::BookingService::Service {};
class OtherStub final : public labshare::inventory::v1::InventoryService::Service {};

// Listening TCP sockets of this process (/proc/net/tcp{,6} rows in state
// LISTEN whose inode is one of our file descriptors).
int ListeningSockets() {
  std::set<std::string> inodes;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && absl::StartsWith(target, "socket:[")) inodes.insert(target.substr(8, target.size() - 9));
  }
  int count = 0;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (cols.size() > 9 && cols[3] == "0A" && inodes.count(cols[9])) ++count;
    }
  }
  return count;
}

// A unary call to any path with an empty message; returns the status code.
grpc::StatusCode CallPath(const std::shared_ptr<grpc::Channel>& channel, const std::string& path) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice empty{std::string()};
  grpc::ByteBuffer request(&empty, 1), response;
  return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
             channel.get(), grpc::internal::RpcMethod(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC), &ctx,
             request, &response)
      .error_code();
}

int CountLines(const std::string& text, const std::string& prefix) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) n += absl::StartsWith(line, prefix) ? 1 : 0;
  return n;
}

TEST(Server, HealthIsServingOnlyWhileRedisAnswers) {
  auto redis = testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  RedisOptions options = (*redis)->options();
  RedisPool pool(options);
  FakeClock clock;
  Authorizer auth(labshare::testing::TestVerifier(), MethodPolicy(), &clock);
  Stub service;
  ServerConfig config;
  config.service_name = "booking";
  config.redis = &pool;
  config.authorizer = &auth;
  config.health_interval = absl::Milliseconds(50);
  auto server = Server::Start(config, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  EXPECT_TRUE(WaitForHealth(channel, kServing));
  redis->reset();  // Redis goes away
  EXPECT_TRUE(WaitForHealth(channel, kNotServing));
  (*server)->Shutdown(absl::Seconds(1));
}

TEST(Server, UnbuiltMethodsAreUnimplementedAndMetricsCountThem) {
  testing::RedisServer* redis = testing::SharedRedisServer();
  ASSERT_NE(redis, nullptr);
  RedisPool pool(redis->options());
  FakeClock clock;
  Authorizer auth(labshare::testing::TestVerifier(), MethodPolicy(), &clock);
  Stub service;
  ServerConfig config;
  config.service_name = "booking";
  config.metrics_listen = "127.0.0.1:0";
  config.redis = &pool;
  config.authorizer = &auth;
  auto server = Server::Start(config, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->metrics_port(), 0);
  auto stub = labshare::booking::v1::BookingService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  labshare::booking::v1::GetBookingRequest req;
  labshare::booking::v1::Booking resp;
  grpc::Status s = stub->GetBooking(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  const std::string metrics = HttpGet((*server)->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("labshare_rpc_requests_total{service=\"booking\",code=\"UNIMPLEMENTED\","
                         "method=\"/labshare.booking.v1.BookingService/GetBooking\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("labshare_rpc_latency_seconds_count"), std::string::npos);
  (*server)->Shutdown(absl::Seconds(1));
  EXPECT_EQ(HealthStatus(grpc::CreateChannel((*server)->address(),
                                             grpc::InsecureChannelCredentials())), -1);
}

// Redis pool, clock and an allow-nothing authorizer for a "booking" server.
struct ServerParts {
  explicit ServerParts(testing::RedisServer* redis)
      : pool(redis->options()), auth(testing::TestVerifier(), MethodPolicy(), &clock) {}
  ServerConfig Config() {
    ServerConfig config;
    config.service_name = "booking";
    config.redis = &pool;
    config.authorizer = &auth;
    return config;
  }
  RedisPool pool;
  FakeClock clock;
  Authorizer auth;
};

TEST(Server, MadeUpPathsShareOneMetricsLabel) {
  testing::RedisServer* redis = testing::SharedRedisServer();
  ASSERT_NE(redis, nullptr);
  ServerParts parts(redis);
  Stub service;
  ServerConfig config = parts.Config();
  config.metrics_listen = "127.0.0.1:0";
  auto server = Server::Start(config, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(CallPath(channel, "/made.up.Service/First"), grpc::StatusCode::UNIMPLEMENTED);
  const std::string before = HttpGet((*server)->metrics_port(), "/metrics");
  const int series = CountLines(before, "labshare_rpc_");
  EXPECT_NE(before.find("method=\"unknown\"} 1"), std::string::npos) << before;
  for (const char* path : {"/made.up.Service/Second", "/labshare.booking.v1.BookingService/NoSuchMethod",
                           "/x", "/grpc.health.v1.Health/Nope", "/labshare.booking.v1.BookingService/GetBooking/extra"}) {
    EXPECT_EQ(CallPath(channel, path), grpc::StatusCode::UNIMPLEMENTED) << path;
  }
  const std::string after = HttpGet((*server)->metrics_port(), "/metrics");
  EXPECT_EQ(CountLines(after, "labshare_rpc_"), series) << after;  // no new series
  EXPECT_NE(after.find("code=\"UNIMPLEMENTED\",method=\"unknown\"} 6"), std::string::npos) << after;
  for (const char* made_up : {"made.up", "NoSuchMethod", "Nope", "extra", "method=\"/x\""}) {
    EXPECT_EQ(after.find(made_up), std::string::npos) << made_up;
  }
  // A registered method keeps its own label.
  grpc::ClientContext ctx;
  labshare::booking::v1::GetBookingRequest req;
  labshare::booking::v1::Booking resp;
  (void)labshare::booking::v1::BookingService::NewStub(channel)->GetBooking(&ctx, req, &resp);
  EXPECT_NE(HttpGet((*server)->metrics_port(), "/metrics")
                .find("method=\"/labshare.booking.v1.BookingService/GetBooking\"} 1"),
            std::string::npos);
  (*server)->Shutdown(absl::Seconds(1));
}

// GetBooking on the callback API through HandleUnaryAsync, answering from
// another thread as a pipeline would: "bookings/missing" is NOT_FOUND.
class AsyncStub final
    : public labshare::booking::v1::BookingService::WithCallbackMethod_GetBooking<
          labshare::booking::v1::BookingService::Service> {
 public:
  explicit AsyncStub(const Authorizer* auth) : auth_(auth) {}
  ~AsyncStub() override {
    for (auto& t : answering_) t.join();
  }
  grpc::ServerUnaryReactor* GetBooking(grpc::CallbackServerContext* ctx,
                                       const labshare::booking::v1::GetBookingRequest* req,
                                       labshare::booking::v1::Booking* resp) override {
    return HandleUnaryAsync(*auth_, ctx, "booking.labshare", resp,
                            [&](const Principal&, UnaryDone<labshare::booking::v1::Booking> done) {
                              std::lock_guard<std::mutex> lock(mu_);
                              answering_.emplace_back([name = req->name(), done = std::move(done)] {
                                if (name == "bookings/missing") {
                                  return done(MakeError(absl::StatusCode::kNotFound, "BOOKING_NOT_FOUND",
                                                        name + " does not exist"));
                                }
                                labshare::booking::v1::Booking b;
                                b.set_name(name);
                                done(b);
                              });
                            });
  }

 private:
  const Authorizer* auth_;
  std::mutex mu_;
  std::vector<std::thread> answering_;  // joined when the test ends
};

int CountAccessLines(const std::string& text, const std::string& code) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    n += absl::StrContains(line, "\"msg\":\"rpc\"") && absl::StrContains(line, "\"code\":\"" + code + "\"") ? 1 : 0;
  }
  return n;
}

TEST(Server, CallbackMethodsAnswerThroughTheSameInterceptorAndTheAccessLogSamplesSuccesses) {
  testing::RedisServer* redis = testing::SharedRedisServer();
  ASSERT_NE(redis, nullptr);
  RedisPool pool(redis->options());
  FakeClock clock;
  MethodPolicy policy;
  policy.AllowUnauthenticated("/labshare.booking.v1.BookingService/GetBooking");
  Authorizer auth(labshare::testing::TestVerifier(), policy, &clock);
  AsyncStub service(&auth);
  ServerConfig config;
  config.service_name = "booking";
  config.metrics_listen = "127.0.0.1:0";
  config.redis = &pool;
  config.authorizer = &auth;
  config.access_log_sample = 3;
  config.access_log_slow = absl::InfiniteDuration();  // no call counts as slow here
  auto server = Server::Start(config, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = labshare::booking::v1::BookingService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  FlushLogs();
  ::testing::internal::CaptureStderr();
  // 7 successes and 2 failures, interleaved: successes 1, 4 and 7 are
  // logged, both failures are.
  int ok = 0, not_found = 0;
  for (int i = 0; i < 9; ++i) {
    grpc::ClientContext ctx;
    labshare::booking::v1::GetBookingRequest req;
    req.set_name(i == 2 || i == 5 ? "bookings/missing" : "bookings/b" + std::to_string(i));
    labshare::booking::v1::Booking resp;
    grpc::Status s = stub->GetBooking(&ctx, req, &resp);
    if (s.ok()) {
      ++ok;
      EXPECT_EQ(resp.name(), req.name());
    } else {
      ++not_found;
      EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
      EXPECT_EQ(GrpcErrorReason(s), "BOOKING_NOT_FOUND");  // ErrorInfo as for a synchronous method
    }
  }
  const std::string metrics = HttpGet((*server)->metrics_port(), "/metrics");
  (*server)->Shutdown(absl::Seconds(1));
  FlushLogs();
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(ok, 7);
  EXPECT_EQ(not_found, 2);
  EXPECT_EQ(CountAccessLines(log, "OK"), 3) << log;
  EXPECT_EQ(CountAccessLines(log, "NOT_FOUND"), 2) << log;
  EXPECT_TRUE(absl::StrContains(log, "\"sample\":\"3\"")) << log;
  // Metrics count every call, logged or not.
  EXPECT_NE(metrics.find("labshare_rpc_requests_total{service=\"booking\",code=\"OK\","
                         "method=\"/labshare.booking.v1.BookingService/GetBooking\"} 7"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("code=\"NOT_FOUND\",method=\"/labshare.booking.v1.BookingService/GetBooking\"} 2"),
            std::string::npos)
      << metrics;
}

// GetBooking on the callback API through HandleUnaryBlocking on a pool of
// its own: "bookings/hold" blocks its worker until released; every run
// records its thread.
class BlockingStub final
    : public labshare::booking::v1::BookingService::WithCallbackMethod_GetBooking<
          labshare::booking::v1::BookingService::Service> {
 public:
  BlockingStub(const Authorizer* auth, BlockingExecutor* workers) : auth_(auth), workers_(workers) {}
  grpc::ServerUnaryReactor* GetBooking(grpc::CallbackServerContext* ctx,
                                       const labshare::booking::v1::GetBookingRequest* req,
                                       labshare::booking::v1::Booking* resp) override {
    return HandleUnaryBlocking(
        *auth_, ctx, "booking.labshare", resp,
        [this, req](const Principal&) -> absl::StatusOr<labshare::booking::v1::Booking> {
          {
            std::lock_guard<std::mutex> lock(mu_);
            ran_.push_back(req->name());
            threads_.insert(std::this_thread::get_id());
          }
          if (req->name() == "bookings/hold") {
            holding_.Notify();
            release_.WaitForNotification();
          }
          labshare::booking::v1::Booking b;
          b.set_name(req->name());
          return b;
        },
        workers_);
  }
  std::vector<std::string> ran() {
    std::lock_guard<std::mutex> lock(mu_);
    return ran_;
  }
  size_t threads() {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_.size();
  }
  absl::Notification holding_, release_;

 private:
  const Authorizer* auth_;
  BlockingExecutor* workers_;
  std::mutex mu_;
  std::vector<std::string> ran_;
  std::set<std::thread::id> threads_;
};

grpc::Status GetBookingCall(labshare::booking::v1::BookingService::Stub* stub, const std::string& name,
                            absl::Duration timeout = absl::Seconds(30)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  labshare::booking::v1::GetBookingRequest req;
  req.set_name(name);
  labshare::booking::v1::Booking resp;
  grpc::Status s = stub->GetBooking(&ctx, req, &resp);
  if (s.ok() && resp.name() != name) return grpc::Status(grpc::StatusCode::INTERNAL, "wrong answer " + resp.name());
  return s;
}

// A server with BlockingStub on a pool of `threads` workers and `max_queue`
// waiting calls, and a client of it.
MethodPolicy GetBookingUnauthenticated() {
  MethodPolicy policy;
  policy.AllowUnauthenticated("/labshare.booking.v1.BookingService/GetBooking");
  return policy;
}

struct BlockingServer {
  BlockingServer(int threads, size_t max_queue) : workers(threads, max_queue), service(&auth, &workers) {}
  void Start() {
    testing::RedisServer* redis = testing::SharedRedisServer();
    ASSERT_NE(redis, nullptr);
    pool = std::make_unique<RedisPool>(redis->options());
    ServerConfig config;
    config.service_name = "booking";
    config.redis = pool.get();
    config.authorizer = &auth;
    auto started = Server::Start(config, {&service});
    ASSERT_TRUE(started.ok()) << started.status();
    server = *std::move(started);
    stub = labshare::booking::v1::BookingService::NewStub(
        grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  }
  FakeClock clock;
  Authorizer auth{labshare::testing::TestVerifier(), GetBookingUnauthenticated(), &clock};
  BlockingExecutor workers;
  BlockingStub service;
  std::unique_ptr<RedisPool> pool;
  std::unique_ptr<Server> server;
  std::unique_ptr<labshare::booking::v1::BookingService::Stub> stub;
};

TEST(Server, BlockingMethodsRunOnABoundedPoolAndAFullQueueIsServerBusy) {
  BlockingServer srv(/*threads=*/1, /*max_queue=*/1);
  ASSERT_NO_FATAL_FAILURE(srv.Start());
  BlockingStub& service = srv.service;
  BlockingExecutor& workers = srv.workers;
  labshare::booking::v1::BookingService::Stub* stub = srv.stub.get();
  // The one worker is held; one call waits in the queue; the next is
  // refused at once, before its use case runs.
  grpc::Status held, queued;
  std::thread a([&] { held = GetBookingCall(stub, "bookings/hold"); });
  ASSERT_TRUE(service.holding_.WaitForNotificationWithTimeout(absl::Seconds(30)));
  std::thread b([&] { queued = GetBookingCall(stub, "bookings/queued"); });
  for (int i = 0; i < 3000 && workers.queued() < 1; ++i) absl::SleepFor(absl::Milliseconds(10));  // readiness
  ASSERT_EQ(workers.queued(), 1u);
  grpc::Status busy = GetBookingCall(stub, "bookings/refused");
  EXPECT_EQ(busy.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(GrpcErrorReason(busy), "SERVER_BUSY");
  EXPECT_EQ(GrpcRetryDelay(busy), absl::Milliseconds(200));
  // Release: the held and the queued call are answered, on the one worker.
  service.release_.Notify();
  a.join();
  b.join();
  EXPECT_TRUE(held.ok()) << held.error_message();
  EXPECT_TRUE(queued.ok()) << queued.error_message();
  EXPECT_EQ(service.ran(), (std::vector<std::string>{"bookings/hold", "bookings/queued"}));
  EXPECT_EQ(service.threads(), 1u);
  srv.server->Shutdown(absl::Seconds(1));
}

TEST(Server, ABlockingCallWhoseDeadlinePassedInTheQueueIsNotRun) {
  BlockingServer srv(/*threads=*/1, /*max_queue=*/8);
  ASSERT_NO_FATAL_FAILURE(srv.Start());
  BlockingStub& service = srv.service;
  labshare::booking::v1::BookingService::Stub* stub = srv.stub.get();
  grpc::Status held;
  std::thread a([&] { held = GetBookingCall(stub, "bookings/hold"); });
  ASSERT_TRUE(service.holding_.WaitForNotificationWithTimeout(absl::Seconds(30)));
  // Waits behind the held call until its deadline has passed (the client
  // gives up), then the worker is freed.
  grpc::Status late = GetBookingCall(stub, "bookings/late", absl::Milliseconds(300));
  EXPECT_EQ(late.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  service.release_.Notify();
  a.join();
  EXPECT_TRUE(held.ok()) << held.error_message();
  // A call after it is served: the late one was taken off the queue unrun.
  EXPECT_TRUE(GetBookingCall(stub, "bookings/after").ok());
  EXPECT_EQ(service.ran(), (std::vector<std::string>{"bookings/hold", "bookings/after"}));
  srv.server->Shutdown(absl::Seconds(1));
}

TEST(Server, ManyBlockingCallsAtOnceShareTheWorkersAndAllAnswer) {
  BlockingServer srv(/*threads=*/2, /*max_queue=*/4096);
  ASSERT_NO_FATAL_FAILURE(srv.Start());
  BlockingStub& service = srv.service;
  labshare::booking::v1::BookingService::Stub* stub = srv.stub.get();
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 64; ++i) {
    clients.emplace_back([&, i] { ok += GetBookingCall(stub, "bookings/b" + std::to_string(i)).ok() ? 1 : 0; });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 64);
  EXPECT_EQ(service.ran().size(), 64u);
  EXPECT_LE(service.threads(), 2u);
  srv.server->Shutdown(absl::Seconds(1));
}

TEST(Server, PortZeroOpensExactlyOnePort) {
  testing::RedisServer* redis = testing::SharedRedisServer();
  ASSERT_NE(redis, nullptr);
  ServerParts parts(redis);
  Stub service;
  ServerConfig config = parts.Config();
  for (int round = 0; round < 3; ++round) {  // metrics off
    const int before = ListeningSockets();
    auto server = Server::Start(config, {&service});
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ(ListeningSockets() - before, 1);
    (*server)->Shutdown(absl::ZeroDuration());
  }
  config.metrics_listen = "127.0.0.1:0";  // and one more with metrics
  const int before = ListeningSockets();
  auto server = Server::Start(config, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(ListeningSockets() - before, 2);
}

TEST(Server, HealthNamesEveryRegisteredService) {
  testing::RedisServer* redis = testing::SharedRedisServer();
  ASSERT_NE(redis, nullptr);
  ServerParts parts(redis);
  Stub booking;
  OtherStub inventory;
  ServerConfig config = parts.Config();
  config.health_interval = absl::Milliseconds(50);
  auto server = Server::Start(config, {&booking, &inventory});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  EXPECT_TRUE(WaitForHealth(channel, kServing));
  for (const char* name : {"labshare.booking.v1.BookingService", "labshare.inventory.v1.InventoryService",
                           "grpc.reflection.v1alpha.ServerReflection", "grpc.health.v1.Health"}) {
    EXPECT_EQ(HealthStatus(channel, name), kServing) << name;
  }
  EXPECT_EQ(HealthStatus(channel, std::string(kLivenessService)), kServing);
  EXPECT_EQ(HealthStatus(channel, "labshare.usage.v1.UsageService"), -1);  // not served here: NOT_FOUND
}

TEST(Server, ReadinessFollowsTheServicesItCalls) {
  testing::RedisServer* redis = testing::SharedRedisServer();
  ASSERT_NE(redis, nullptr);
  // The dependency ("inventory") on a Redis of its own, so that it alone
  // can go unready.
  auto inventory_redis = testing::RedisServer::Start();
  ASSERT_TRUE(inventory_redis.ok()) << inventory_redis.status();
  const int inventory_redis_port = (*inventory_redis)->port();
  ServerParts inventory_parts(inventory_redis->get());
  OtherStub inventory;
  ServerConfig inventory_config = inventory_parts.Config();
  inventory_config.service_name = "inventory";
  inventory_config.health_interval = absl::Milliseconds(50);
  auto inventory_server = Server::Start(inventory_config, {&inventory});
  ASSERT_TRUE(inventory_server.ok()) << inventory_server.status();

  ServerParts parts(redis);
  Stub booking;
  ServerConfig config = parts.Config();
  config.health_interval = absl::Milliseconds(50);
  config.dependencies = {
      {"inventory", grpc::CreateChannel((*inventory_server)->address(), grpc::InsecureChannelCredentials())}};
  auto server = Server::Start(config, {&booking});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  EXPECT_TRUE(WaitForHealth(channel, kServing));

  // Inventory loses its Redis: booking's own Redis is fine, yet it cannot
  // serve, so it is not ready; it stays alive.
  inventory_redis->reset();
  EXPECT_TRUE(WaitForHealth(channel, kNotServing));
  EXPECT_EQ(HealthStatus(channel, "labshare.booking.v1.BookingService"), kNotServing);
  EXPECT_EQ(HealthStatus(channel, std::string(kLivenessService)), kServing);

  auto back = testing::RedisServer::StartOnPort(inventory_redis_port);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(WaitForHealth(channel, kServing));

  // Inventory gone altogether.
  (*inventory_server)->Shutdown(absl::ZeroDuration());
  EXPECT_TRUE(WaitForHealth(channel, kNotServing));
  EXPECT_EQ(HealthStatus(channel, std::string(kLivenessService)), kServing);
  (*server)->Shutdown(absl::Seconds(1));
}

// Before the server starts (FromRedis's wait for Redis), a SIGTERM that
// InitProcess blocked is seen as pending, and left pending.
TEST(ShutdownSignalPending, SeesABlockedSigtermWithoutTakingIt) {
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &term, &old), 0);
  EXPECT_FALSE(ShutdownSignalPending());
  ASSERT_EQ(pthread_kill(pthread_self(), SIGTERM), 0);
  EXPECT_TRUE(ShutdownSignalPending());
  EXPECT_TRUE(ShutdownSignalPending());  // still pending
  int sig = 0;
  ASSERT_EQ(sigwait(&term, &sig), 0);
  EXPECT_EQ(sig, SIGTERM);
  EXPECT_FALSE(ShutdownSignalPending());
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &old, nullptr), 0);
}

}  // namespace
}  // namespace labshare
