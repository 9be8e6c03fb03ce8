// The server runner: health follows Redis, metrics are served, calls are
// authenticated, shutdown drains.
#include "common/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/codegen/client_unary_call.h>

#include "common/grpc_status.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

// grpc.health.v1.HealthCheckResponse.status, decoded by hand (field 1, varint).
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice empty{std::string()};  // empty HealthCheckRequest: the whole server
  grpc::ByteBuffer request(&empty, 1), response;
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
bool WaitForHealth(const std::shared_ptr<grpc::Channel>& ch, int want) {
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline) {
    if (HealthStatus(ch) == want) return true;
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

}  // namespace
}  // namespace labshare
