// Storage that refuses: Redis out of memory (maxmemory, noeviction) or down
// answers UNAVAILABLE / STORAGE_UNAVAILABLE with a retry hint, readiness
// reports it and recovers; and a DocStore commit that fails at any point
// leaves every key as it was (Redis does not roll a script back).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <grpcpp/impl/codegen/client_unary_call.h>

#include "common/doc_store.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/redis_pipeline.h"
#include "common/server.h"
#include "google/rpc/error_details.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "services/inventory/inventory_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/redis_snapshot.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

void ExpectRetryableUnavailable(const absl::Status& status, const std::string& cause) {
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(ErrorReason(status), "STORAGE_UNAVAILABLE") << status;
  const auto metadata = ErrorMetadataOf(status);
  if (cause.empty()) {
    EXPECT_EQ(metadata.count("cause"), 0u) << status;
  } else {
    ASSERT_EQ(metadata.count("cause"), 1u) << status;
    EXPECT_EQ(metadata.at("cause"), cause);
  }
  ASSERT_TRUE(RetryDelayOf(status).has_value()) << status;
  EXPECT_EQ(*RetryDelayOf(status), absl::Seconds(1));
}

void SetMaxMemory(RedisPool& pool, const std::string& value) {
  auto v = pool.Command({"CONFIG", "SET", "maxmemory", value});
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_FALSE(v->is_error()) << v->DebugString();
}

class OutOfMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    auto server = testing::RedisServer::Start({"--maxmemory-policy", "noeviction"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    pool_ = std::make_unique<RedisPool>(server_->options());
  }
  void TearDown() override { SetQuietLogging(false); }

  std::unique_ptr<testing::RedisServer> server_;
  std::unique_ptr<RedisPool> pool_;
};

TEST_F(OutOfMemoryTest, RefusedWritesAreUnavailableWithRetryHintAndRecover) {
  ASSERT_TRUE(pool_->Command({"SET", "k", "v"}).ok());
  SetMaxMemory(*pool_, "1");

  // Reads still work; every kind of write is refused as retryable.
  auto get = pool_->Command({"GET", "k"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, "v");
  EXPECT_TRUE(pool_->Ping().ok());
  ExpectRetryableUnavailable(pool_->Command({"SET", "k", "w"}).status(), "STORAGE_FULL");
  ExpectRetryableUnavailable(pool_->Pipeline({{"GET", "k"}, {"HSET", "h", "f", "1"}}).status(),
                             "STORAGE_FULL");
  const RedisScript writer("redis.call('GET', KEYS[1]); return redis.call('SET', KEYS[1], 'w')");
  ExpectRetryableUnavailable(pool_->Eval(writer, {"k"}, {}).status(), "STORAGE_FULL");
  ExpectRetryableUnavailable(pool_->Ready(), "STORAGE_FULL");
  {
    RedisPipeline pipeline(server_->options());
    absl::Notification done;
    absl::Status status;
    pipeline.Eval(writer, {"k"}, {}, [&](absl::StatusOr<RedisValue> v) {
      status = v.status();
      done.Notify();
    });
    done.WaitForNotification();
    ExpectRetryableUnavailable(status, "STORAGE_FULL");
  }
  EXPECT_EQ(pool_->Command({"GET", "k"})->str, "v");  // nothing was written

  SetMaxMemory(*pool_, "0");
  EXPECT_TRUE(pool_->Ready().ok());
  auto set = pool_->Eval(writer, {"k"}, {});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(pool_->Command({"GET", "k"})->str, "w");
}

TEST_F(OutOfMemoryTest, DocStoreCommitIsUnavailableAndWritesNothing) {
  DocStore docs(pool_.get());
  Mutation m;
  m.idempotency_key = "{t}:idem:1";
  m.fingerprint = "fp";
  m.writes.push_back({"{t}:a", "data", 0});
  m.index_ops.push_back({"{t}:index", "{t}:a"});
  m.outbox_key = "{t}:outbox";
  m.event_type = "test.Created";
  SetMaxMemory(*pool_, "1");
  const auto before = testing::Snapshot(*pool_);
  ExpectRetryableUnavailable(docs.Commit(m).status(), "STORAGE_FULL");
  EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");
  SetMaxMemory(*pool_, "0");
  auto out = docs.Commit(m);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, CommitOutcome::Kind::kApplied);
}

TEST(StorageDown, ConnectionRefusedIsUnavailableWithRetryHint) {
  SetQuietLogging(true);
  int port = 0;
  {
    auto server = testing::RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    port = (*server)->port();
  }  // stopped: nothing listens on the port now
  RedisOptions options;
  options.port = port;
  options.connect_timeout = absl::Seconds(1);
  RedisPool pool(options);
  ExpectRetryableUnavailable(pool.Command({"SET", "k", "v"}).status(), "");
  ExpectRetryableUnavailable(pool.Eval(RedisScript("return 1"), {}, {}).status(), "");
  ExpectRetryableUnavailable(pool.Ready(), "");
  DocStore docs(&pool);
  Mutation m;
  m.writes.push_back({"{t}:a", "data", 0});
  ExpectRetryableUnavailable(docs.Commit(m).status(), "");
  SetQuietLogging(false);
}

// Only the conditions that pass on their own become UNAVAILABLE; other error
// replies stay values for the caller (BUSYGROUP is not BUSY).
TEST(StorageErrors, OtherErrorRepliesStayValues) {
  testing::RedisServer* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisPool pool(server->options());
  ASSERT_TRUE(pool.Command({"XGROUP", "CREATE", "{t}:s", "g", "$", "MKSTREAM"}).ok());
  auto again = pool.Command({"XGROUP", "CREATE", "{t}:s", "g", "$", "MKSTREAM"});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->is_error());
  EXPECT_EQ(again->str.substr(0, 9), "BUSYGROUP");
  ASSERT_TRUE(pool.Command({"SET", "{t}:k", "v"}).ok());
  auto wrong = pool.Command({"HGET", "{t}:k", "f"});
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_TRUE(wrong->is_error());
  RedisValue busy;
  busy.type = RedisValue::Type::kError;
  busy.str = "BUSY Redis is busy running a script.";
  ExpectRetryableUnavailable(RedisErrorStatus(busy), "");
  busy.str = "BUSYGROUP Consumer Group name already exists";
  EXPECT_EQ(RedisErrorStatus(busy).code(), absl::StatusCode::kInternal);
}

TEST(GrpcStatus, RetryHintTravelsAsRetryInfo) {
  const grpc::Status s = ToGrpcStatus(StorageUnavailable("STORAGE_FULL"), "inventory.labshare");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(GrpcErrorReason(s), "STORAGE_UNAVAILABLE");
  const google::rpc::Status rpc = ToRpcStatus(s);
  bool found = false;
  for (const auto& any : rpc.details()) {
    google::rpc::RetryInfo retry;
    if (any.UnpackTo(&retry)) {
      found = true;
      EXPECT_EQ(retry.retry_delay().seconds(), 1);
      EXPECT_EQ(retry.retry_delay().nanos(), 0);
    }
  }
  EXPECT_TRUE(found) << rpc.DebugString();
  const absl::Status back = FromGrpcStatus(s);
  ExpectRetryableUnavailable(back, "STORAGE_FULL");
  // Other errors carry no retry hint.
  EXPECT_FALSE(GrpcRetryDelay(ToGrpcStatus(InvalidField("x", "bad"), "d")).has_value());
}

// ---------------------------------------------------------------- readiness

// grpc.health.v1 Check for `service`: 1 SERVING, 2 NOT_SERVING, -1 error.
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::string request;  // HealthCheckRequest{service = 1}
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1), resp;
  grpc::Status s = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel.get(),
      grpc::internal::RpcMethod("/grpc.health.v1.Health/Check", grpc::internal::RpcMethod::NORMAL_RPC),
      &ctx, req, &resp);
  if (!s.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!resp.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  return bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : 0;
}

bool WaitForHealth(const std::shared_ptr<grpc::Channel>& ch, const std::string& service, int want) {
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline) {
    if (HealthStatus(ch, service) == want) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

constexpr int kServing = 1;
constexpr int kNotServing = 2;
constexpr char kBookingService[] = "labshare.booking.v1.BookingService";

class Stub final : public labshare::booking::v1::BookingService::Service {};

TEST_F(OutOfMemoryTest, ReadinessIsNotServingWhileRedisRefusesWritesLivenessStays) {
  FakeClock clock;
  Authorizer auth(labshare::testing::TestVerifier(), MethodPolicy(), &clock);
  Stub service;
  ServerConfig config;
  config.service_name = "booking";
  config.redis = pool_.get();
  config.authorizer = &auth;
  config.health_interval = absl::Milliseconds(20);
  auto server = Server::Start(config, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  EXPECT_TRUE(WaitForHealth(channel, "", kServing));
  EXPECT_TRUE(WaitForHealth(channel, kBookingService, kServing));
  EXPECT_EQ(HealthStatus(channel, kLivenessService), kServing);

  SetMaxMemory(*pool_, "1");
  EXPECT_TRUE(WaitForHealth(channel, kBookingService, kNotServing));
  EXPECT_TRUE(WaitForHealth(channel, "", kNotServing));
  EXPECT_EQ(HealthStatus(channel, kLivenessService), kServing);

  SetMaxMemory(*pool_, "0");
  EXPECT_TRUE(WaitForHealth(channel, kBookingService, kServing));
  EXPECT_TRUE(WaitForHealth(channel, "", kServing));

  server_.reset();  // Redis goes away: not ready, still alive
  EXPECT_TRUE(WaitForHealth(channel, kBookingService, kNotServing));
  EXPECT_EQ(HealthStatus(channel, kLivenessService), kServing);
  (*server)->Shutdown(absl::Seconds(1));
}

// A mutation through gRPC while Redis is out of memory: UNAVAILABLE with the
// reason, the cause and a RetryInfo; the same request succeeds once Redis
// accepts writes again.
TEST_F(OutOfMemoryTest, AMutationOverGrpcIsUnavailableThenSucceedsOnRetry) {
  namespace iv = labshare::inventory::v1;
  FakeClock clock;
  inventory::InventoryStore store(pool_.get());
  inventory::InventoryManager manager(&store, &clock, labshare::testing::TestPageTokens());
  Authorizer auth(labshare::testing::TestVerifier(), inventory::InventoryPolicy(), &clock);
  inventory::InventoryService service(&manager, &auth);
  ServerConfig config;
  config.service_name = "inventory";
  config.redis = pool_.get();
  config.authorizer = &auth;
  auto server = Server::Start(config, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = iv::InventoryService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  const std::string token =
      labshare::testing::Mint(Principal{"admin", "", {Role::kConsortiumAdmin}, clock.Now() + absl::Hours(1)}, clock.Now());
  iv::CreateOrganizationRequest req;
  req.set_organization_id("o1");
  req.set_request_id("r1");
  req.mutable_organization()->set_display_name("Org one");
  req.mutable_organization()->set_type(iv::UNIVERSITY);
  auto call = [&](iv::Organization* out) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub->CreateOrganization(&ctx, req, out);
  };

  SetMaxMemory(*pool_, "1");
  const auto before = testing::Snapshot(*pool_);
  iv::Organization org;
  const grpc::Status refused = call(&org);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_EQ(GrpcErrorReason(refused), "STORAGE_UNAVAILABLE");
  ASSERT_TRUE(GrpcRetryDelay(refused).has_value());
  EXPECT_EQ(*GrpcRetryDelay(refused), absl::Seconds(1));
  EXPECT_EQ(ErrorMetadataOf(FromGrpcStatus(refused)).count("cause"), 1u);
  EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");

  SetMaxMemory(*pool_, "0");
  const grpc::Status retried = call(&org);
  ASSERT_TRUE(retried.ok()) << retried.error_message();
  EXPECT_EQ(org.name(), "organizations/o1");
  (*server)->Shutdown(absl::Seconds(1));
}

// ------------------------------------------------ DocStore: rejected = unchanged

class DocStoreAtomicityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    server_ = testing::SharedRedisServer();
    ASSERT_NE(server_, nullptr);
    testing::FlushAll(*server_);
    pool_ = std::make_unique<RedisPool>(server_->options());
    docs_ = std::make_unique<DocStore>(pool_.get());
    // Some state for a failed commit to damage.
    Mutation seed;
    seed.writes = {{"{t}:a", "a1", 0}, {"{t}:b", "b1", 0}};
    seed.index_ops = {{"{t}:index", "a"}};
    seed.appends = {{"{t}:history", "seed"}};
    seed.outbox_key = "{t}:outbox";
    seed.event_type = "test.Seeded";
    ASSERT_EQ(docs_->Commit(seed)->kind, CommitOutcome::Kind::kApplied);
  }
  void TearDown() override { SetQuietLogging(false); }

  // Updates a and b, creates c, indexes, appends and publishes.
  Mutation Wide() {
    Mutation m;
    m.idempotency_key = "{t}:idem:wide";
    m.fingerprint = "fp";
    m.response = "r";
    m.writes = {{"{t}:a", "a2", 1}, {"{t}:b", "b2", 1}, {"{t}:c", "c1", 0}};
    m.index_ops = {{"{t}:index", "c"}, {"{t}:index2", "c"}};
    m.appends = {{"{t}:history", "wide"}, {"{t}:history2", "wide"}};
    m.outbox_key = "{t}:outbox";
    m.event_type = "test.Wide";
    m.event_payload = "wide";
    return m;
  }

  void Set(const std::vector<std::string>& cmd) {
    auto v = pool_->Command(cmd);
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_FALSE(v->is_error()) << v->DebugString();
  }

  // Commits `m`, expects it refused with `code` (OK: a refused outcome), and
  // every key unchanged.
  void ExpectRefusedUnchanged(const Mutation& m, absl::StatusCode code) {
    const auto before = testing::Snapshot(*pool_);
    auto out = docs_->Commit(m);
    if (code == absl::StatusCode::kOk) {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_NE(out->kind, CommitOutcome::Kind::kApplied);
    } else {
      EXPECT_EQ(out.status().code(), code) << out.status();
    }
    EXPECT_EQ(testing::SnapshotDiff(before, testing::Snapshot(*pool_)), "");
  }

  testing::RedisServer* server_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<DocStore> docs_;
};

TEST_F(DocStoreAtomicityTest, TheWideCommitApplies) {
  auto out = docs_->Commit(Wide());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->kind, CommitOutcome::Kind::kApplied);
}

TEST_F(DocStoreAtomicityTest, VersionConflictOnTheSecondDocument) {
  Set({"HSET", "{t}:b", "v", "2"});
  ExpectRefusedUnchanged(Wide(), absl::StatusCode::kOk);
}

TEST_F(DocStoreAtomicityTest, LastDocumentAlreadyExists) {
  Set({"HSET", "{t}:c", "v", "1", "d", "other"});
  ExpectRefusedUnchanged(Wide(), absl::StatusCode::kOk);
}

TEST_F(DocStoreAtomicityTest, SecondDocumentKeyOfTheWrongType) {
  Set({"DEL", "{t}:b"});
  Set({"SET", "{t}:b", "not a hash"});
  ExpectRefusedUnchanged(Wide(), absl::StatusCode::kInternal);
}

TEST_F(DocStoreAtomicityTest, SecondIndexKeyOfTheWrongType) {
  Set({"SET", "{t}:index2", "not a sorted set"});
  ExpectRefusedUnchanged(Wide(), absl::StatusCode::kInternal);
}

TEST_F(DocStoreAtomicityTest, SecondListKeyOfTheWrongType) {
  Set({"SET", "{t}:history2", "not a list"});
  ExpectRefusedUnchanged(Wide(), absl::StatusCode::kInternal);
}

TEST_F(DocStoreAtomicityTest, OutboxOfTheWrongType) {
  Set({"DEL", "{t}:outbox"});
  Set({"HSET", "{t}:outbox", "not", "a stream"});
  ExpectRefusedUnchanged(Wide(), absl::StatusCode::kInternal);
}

TEST_F(DocStoreAtomicityTest, IdempotencyRecordOfTheWrongType) {
  Set({"SET", "{t}:idem:wide", "not a hash"});
  ExpectRefusedUnchanged(Wide(), absl::StatusCode::kInternal);
}

TEST_F(DocStoreAtomicityTest, VersionAtTheExactLimit) {
  Set({"HSET", "{t}:b", "v", "9007199254740991"});
  Mutation m = Wide();
  m.writes[1].expected_version = 9007199254740991;
  ExpectRefusedUnchanged(m, absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace labshare
