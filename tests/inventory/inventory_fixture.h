// The InventoryService test fixture: a real gRPC server over a real
// redis-server with an injected fake clock, a consortium admin's token and
// helpers that create organisations, facilities, instruments, users and rate
// lines. Shared by inventory_service_test and inventory_drift_test.
#ifndef LABSHARE_TESTS_INVENTORY_INVENTORY_FIXTURE_H_
#define LABSHARE_TESTS_INVENTORY_INVENTORY_FIXTURE_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "google/rpc/error_details.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/inventory/inventory_rules.h"
#include "services/inventory/inventory_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_tokens.h"

namespace labshare::inventory {

// The code and ErrorInfo reason of a failed call (`what` names the case).
inline void ExpectError(const grpc::Status& s, grpc::StatusCode code, const std::string& reason,
                        const std::string& what = "") {
  EXPECT_EQ(s.error_code(), code) << what << ": " << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), reason) << what;
}

class InventoryServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_server_ = testing::SharedRedisServer();
    ASSERT_NE(redis_server_, nullptr);
    testing::FlushAll(*redis_server_);
    pool_ = std::make_unique<RedisPool>(redis_server_->options());
    store_ = std::make_unique<InventoryStore>(pool_.get());
    manager_ = std::make_unique<InventoryManager>(store_.get(), &clock_, testing::TestPageTokens());
    authorizer_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), InventoryPolicy(), &clock_);
    service_ = std::make_unique<InventoryService>(manager_.get(), authorizer_.get());
    ServerConfig config;
    config.service_name = "inventory";
    config.redis = pool_.get();
    config.authorizer = authorizer_.get();
    config.tls = testing::TestPki::Shared().ServerTls("inventory");
    auto server = Server::Start(config, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::InventoryService::NewStub(testing::TlsChannel(server_->address()));
    admin_ = Token("admin", "", {Role::kConsortiumAdmin});
  }

  void TearDown() override { server_.reset(); }

  std::string Token(const std::string& user, const std::string& org, std::vector<Role> roles) {
    Principal p;
    p.user_id = user;
    p.organization_id = org;
    p.roles = std::move(roles);
    p.expires_at = clock_.Now() + absl::Hours(1);
    return labshare::testing::Mint(p, clock_.Now());
  }

  std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  }

  // Calls a unary method with a token; returns the status, fills resp.
  template <typename Req, typename Resp>
  grpc::Status Call(grpc::Status (v1::InventoryService::Stub::*method)(grpc::ClientContext*,
                                                                       const Req&, Resp*),
                    const Req& req, Resp* resp, const std::string& token) {
    auto ctx = Ctx(token);
    return (stub_.get()->*method)(ctx.get(), req, resp);
  }

  // ---------------------------------------------------------------- fixtures
  v1::Organization MakeOrg(const std::string& id, v1::MembershipState state,
                           const std::string& tier = "", bool foreign = false) {
    v1::CreateOrganizationRequest req;
    req.set_organization_id(id);
    auto* o = req.mutable_organization();
    o->set_display_name("Org " + id);
    o->set_type(v1::UNIVERSITY);
    o->set_membership_state(state);
    o->set_tier(tier);
    o->set_foreign(foreign);
    v1::Organization out;
    auto s = Call(&v1::InventoryService::Stub::CreateOrganization, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  // Run by `operator_org` when given, else by its owner.
  v1::Facility MakeFacility(const std::string& id, const std::string& owner, const std::string& operator_org = "") {
    v1::CreateFacilityRequest req;
    req.set_facility_id(id);
    auto* f = req.mutable_facility();
    f->set_display_name("Facility " + id);
    f->set_owner_organization("organizations/" + owner);
    if (!operator_org.empty()) f->set_operator_organization("organizations/" + operator_org);
    f->mutable_access_policy()->set_allow_members(true);
    f->mutable_access_policy()->set_allow_non_members(true);
    v1::Facility out;
    auto s = Call(&v1::InventoryService::Stub::CreateFacility, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  static v1::Instrument InstrumentSpec(const std::string& owner, const std::string& facility,
                                       const std::string& category = "electron-microscopy") {
    v1::Instrument in;
    in.set_display_name("Cryo-TEM");
    in.set_owner_organization("organizations/" + owner);
    in.set_facility("facilities/" + facility);
    in.set_category(category);
    in.mutable_original_value()->set_currency_code("CNY");
    in.mutable_original_value()->set_amount_minor(3'000'000'000);
    in.set_daily_available_hours(8);
    auto* m = in.add_modes();
    m->set_mode(labshare::type::v1::ON_SITE);
    auto* r = m->mutable_slot_rules();
    *r->mutable_min_block() = ToProto(absl::Hours(1));
    *r->mutable_max_block() = ToProto(absl::Hours(8));
    *r->mutable_member_horizon() = ToProto(absl::Hours(24 * 30));
    *r->mutable_non_member_horizon() = ToProto(absl::Hours(24 * 7));
    *r->mutable_min_notice() = ToProto(absl::Hours(2));
    r->set_billing_basis(v1::ACTUAL_TIME);
    *r->mutable_billing_unit() = ToProto(absl::Minutes(15));
    r->set_qualification_validity_days(30);
    return in;
  }

  v1::Instrument MakeInstrument(const std::string& id, const std::string& owner,
                                const std::string& facility,
                                const std::string& category = "electron-microscopy") {
    v1::CreateInstrumentRequest req;
    req.set_instrument_id(id);
    *req.mutable_instrument() = InstrumentSpec(owner, facility, category);
    v1::Instrument out;
    auto s = Call(&v1::InventoryService::Stub::CreateInstrument, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  v1::User MakeUser(const std::string& id, const std::string& org) {
    v1::CreateUserRequest req;
    req.set_user_id(id);
    req.mutable_user()->set_display_name("User " + id);
    req.mutable_user()->set_organization("organizations/" + org);
    req.mutable_user()->add_roles(labshare::type::v1::LAB_USER);
    v1::User out;
    auto s = Call(&v1::InventoryService::Stub::CreateUser, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  v1::Rate MakeRate(const std::string& instrument, labshare::type::v1::PayerClass cls,
                    const std::string& tier, int64_t price, absl::Time effective) {
    v1::Rate out;
    auto s = Call(&v1::InventoryService::Stub::CreateRate, RateRequest(instrument, cls, tier, price, effective), &out,
                  admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  // An ON_SITE per-hour CNY line.
  static v1::CreateRateRequest RateRequest(const std::string& instrument, labshare::type::v1::PayerClass cls,
                                           const std::string& tier, int64_t price, absl::Time effective) {
    v1::CreateRateRequest req;
    req.set_parent("instruments/" + instrument);
    auto* r = req.mutable_rate();
    r->set_mode(labshare::type::v1::ON_SITE);
    r->set_payer_class(cls);
    r->set_tier(tier);
    r->set_unit(v1::PER_HOUR);
    r->mutable_price()->set_currency_code("CNY");
    r->mutable_price()->set_amount_minor(price);
    *r->mutable_effective_time() = ToProto(effective);
    return req;
  }

  // owner's instrument tem in facility fac; its user ana qualified on it by
  // owner staff now.
  void GrantAnaOnTem(v1::Qualification* q) {
    MakeOrg("owner", v1::MEMBER, "CORE");
    MakeFacility("fac", "owner");
    MakeInstrument("tem", "owner", "fac");
    MakeUser("ana", "owner");
    v1::GrantQualificationRequest grant;
    grant.set_instrument("instruments/tem");
    grant.set_user("users/ana");
    ASSERT_TRUE(Call(&v1::InventoryService::Stub::GrantQualification, grant, q,
                     Token("staff", "owner", {Role::kFacilityStaff})).ok());
  }

  long long Redis(const std::vector<std::string>& cmd) {
    auto v = pool_->Command(cmd);
    EXPECT_TRUE(v.ok());
    return v.ok() ? v->integer : -1;
  }
  long long OutboxLength() { return Redis({"XLEN", keys::Outbox()}); }
  // The last n outbox events, oldest first.
  std::vector<v1::InventoryEvent> LastEvents(int n) {
    auto v = pool_->Command({"XREVRANGE", keys::Outbox(), "+", "-", "COUNT", std::to_string(n)});
    EXPECT_TRUE(v.ok());
    std::vector<v1::InventoryEvent> out;
    if (!v.ok()) return out;
    for (auto it = v->elements.rbegin(); it != v->elements.rend(); ++it) {
      v1::InventoryEvent e;
      EXPECT_TRUE(e.ParseFromString(it->elements[1].elements[3].str));
      out.push_back(std::move(e));
    }
    return out;
  }
  long long KeyCount() { return Redis({"DBSIZE"}); }

  static std::vector<std::string> Violations(const grpc::Status& s) {
    std::vector<std::string> out;
    const google::rpc::Status rpc = ToRpcStatus(s);
    for (const auto& any : rpc.details()) {
      google::rpc::BadRequest bad;
      if (any.UnpackTo(&bad)) {
        for (const auto& v : bad.field_violations()) out.push_back(v.field());
      }
    }
    return out;
  }

  FakeClock clock_;
  testing::RedisServer* redis_server_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<InventoryStore> store_;
  std::unique_ptr<InventoryManager> manager_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<InventoryService> service_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::InventoryService::Stub> stub_;
  std::string admin_;
};

}  // namespace labshare::inventory

#endif  // LABSHARE_TESTS_INVENTORY_INVENTORY_FIXTURE_H_
