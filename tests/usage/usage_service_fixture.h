// The usage service over gRPC on an emptied shared Redis, for the tests of
// its RPC comments: the reporting zone Asia/Shanghai, a fake clock at 1
// March 2027, the audit chain and the figures (aggregates on), tokens for
// any role and the UsageEvents usage published. StartStore alone gives the
// chain and the figures without the server.
#ifndef LABSHARE_TESTS_USAGE_USAGE_SERVICE_FIXTURE_H_
#define LABSHARE_TESTS_USAGE_USAGE_SERVICE_FIXTURE_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "labshare/usage/v1/usage_events.pb.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

namespace labshare::usage {

class UsageServiceFixture : public ::testing::Test {
 protected:
  // The store alone (for tests of the chain and the figures without the
  // server). Call from SetUp (with ASSERT_NO_FATAL_FAILURE). The figures
  // read `figures_clock` (clock_ when null); the chain and the tokens read
  // clock_.
  void StartStore(const Clock* figures_clock = nullptr) {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    ASSERT_TRUE(absl::LoadTimeZone("Asia/Shanghai", &zone_));
    clock_.Set(absl::FromCivil(absl::CivilDay(2027, 3, 1), zone_));
    AuditChainOptions o;
    o.clock = &clock_;
    audit_ = std::make_unique<AuditChain>(pool_.get(), labshare::testing::TestPageTokens(), o);
    figures_ = std::make_unique<UsageFigures>(pool_.get(), figures_clock != nullptr ? figures_clock : &clock_, zone_,
                                              labshare::testing::TestPageTokens());
    // Reports from the aggregates wherever they apply (a fresh store: nothing to migrate).
    ASSERT_TRUE(figures_->MigrateAggregates().ok());
  }

  // The store and the usage service over gRPC on it (stub_).
  void StartUsage(const Clock* figures_clock = nullptr) {
    ASSERT_NO_FATAL_FAILURE(StartStore(figures_clock));
    auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), UsagePolicy(), &clock_);
    service_ = std::make_unique<UsageService>(figures_.get(), audit_.get(), auth_.get());
    ServerConfig config;
    config.service_name = "usage";
    config.redis = pool_.get();
    config.authorizer = auth_.get();
    auto server = Server::Start(config, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::UsageService::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::ZeroDuration());
  }

  // A call of `user` with `role` (of organizations/`organization_id`).
  std::unique_ptr<grpc::ClientContext> Ctx(Role role, const std::string& user,
                                           const std::string& organization_id = "") {
    auto c = std::make_unique<grpc::ClientContext>();
    c->AddMetadata("authorization",
                   "Bearer " + labshare::testing::Mint(Principal{user, organization_id, {role},
                                                                 clock_.Now() + absl::Hours(1)},
                                                       clock_.Now()));
    return c;
  }
  // An auditor's call.
  std::unique_ptr<grpc::ClientContext> Ctx(const std::string& user = "audrey") { return Ctx(Role::kAuditor, user); }

  // The UsageEvents on {usage}:outbox, oldest first.
  std::vector<v1::UsageEvent> Outbox() {
    std::vector<v1::UsageEvent> out;
    auto v = pool_->Command({"XRANGE", "{usage}:outbox", "-", "+"});
    EXPECT_TRUE(v.ok());
    if (!v.ok()) return out;
    for (const auto& entry : v->elements) {
      const auto& fields = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i].str != "payload") continue;
        v1::UsageEvent e;
        EXPECT_TRUE(e.ParseFromString(fields[i + 1].str));
        out.push_back(std::move(e));
      }
    }
    return out;
  }

  // Whole days [from, to) in the reporting zone.
  labshare::type::v1::Interval Range(absl::CivilDay from, absl::CivilDay to) const {
    labshare::type::v1::Interval r;
    *r.mutable_start_time() = ToProto(absl::FromCivil(from, zone_));
    *r.mutable_end_time() = ToProto(absl::FromCivil(to, zone_));
    return r;
  }

  testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  absl::TimeZone zone_;
  FakeClock clock_;
  std::unique_ptr<AuditChain> audit_;
  std::unique_ptr<UsageFigures> figures_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<UsageService> service_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::UsageService::Stub> stub_;
  Principal auditor_{"audrey", "", {Role::kAuditor}, absl::InfiniteFuture()};
};

}  // namespace labshare::usage

#endif  // LABSHARE_TESTS_USAGE_USAGE_SERVICE_FIXTURE_H_
