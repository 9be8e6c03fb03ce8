// The booking test fixture: a real redis-server, a real inventory service and
// the booking service in one process, through real gRPC channels (mutual
// TLS: booking calls inventory with its service certificate), sharing
// one fake clock; seeded with a small consortium (see Seed()). Used by the
// booking tests and by the services that consume booking's events.
#ifndef LABSHARE_TESTS_BOOKING_BOOKING_FIXTURE_H_
#define LABSHARE_TESTS_BOOKING_BOOKING_FIXTURE_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "services/booking/booking_service.h"
#include "services/booking/inventory_events.h"
#include "services/inventory/inventory_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_tokens.h"

namespace labshare::booking {

namespace iv = labshare::inventory::v1;

class BookingServiceTest : public ::testing::Test {
 protected:
  // `s` failed with `code` and ErrorInfo `reason`; `what` names the case.
  static void ExpectGrpcError(const grpc::Status& s, grpc::StatusCode code, const std::string& reason,
                          const std::string& what) {
    EXPECT_EQ(s.error_code(), code) << what << ": " << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), reason) << what << ": " << s.error_message();
  }

  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    // Inventory.
    inv_store_ = std::make_unique<labshare::inventory::InventoryStore>(pool_.get());
    inv_manager_ = std::make_unique<labshare::inventory::InventoryManager>(inv_store_.get(), &clock_,
                                                                           testing::TestPageTokens());
    inv_auth_ = std::make_unique<Authorizer>(testing::TestVerifier(), labshare::inventory::InventoryPolicy(), &clock_);
    inv_service_ = std::make_unique<labshare::inventory::InventoryService>(inv_manager_.get(), inv_auth_.get());
    inv_server_ = Start("inventory", inv_auth_.get(), inv_service_.get());
    inventory_ = iv::InventoryService::NewStub(Channel(*inv_server_));
    // Booking, with an inventory cache that keeps nothing (TTL 0): every
    // request reads inventory as it is now.
    inv_client_ = std::make_unique<InventoryClient>(ServiceChannel(*inv_server_, "booking"), &clock_,
                                                    absl::ZeroDuration());
    // As in the binary: CreateBooking's step goes through a pipeline.
    pipeline_ = std::make_unique<RedisPipeline>(redis_->options());
    store_ = std::make_unique<BookingStore>(pool_.get(), pipeline_.get());
    manager_ = std::make_unique<BookingManager>(store_.get(), inv_client_.get(), &clock_, testing::TestPageTokens());
    auth_ = std::make_unique<Authorizer>(testing::TestVerifier(), BookingPolicy(), &clock_);
    service_ = std::make_unique<BookingService>(manager_.get(), auth_.get());
    server_ = Start("booking", auth_.get(), service_.get());
    stub_ = v1::BookingService::NewStub(Channel(*server_));
    admin_ = Token("admin", "", {Role::kConsortiumAdmin});
    Seed();
  }

  std::unique_ptr<Server> Start(const std::string& name, Authorizer* auth, grpc::Service* service) {
    ServerConfig config;
    config.service_name = name;
    config.redis = pool_.get();
    config.authorizer = auth;
    config.tls = testing::TestPki::Shared().ServerTls(name);  // mutual TLS, as deployed
    auto server = Server::Start(config, {service});
    EXPECT_TRUE(server.ok()) << server.status();
    return *std::move(server);
  }
  // A person's client: TLS without a client certificate (calls carry tokens).
  static std::shared_ptr<grpc::Channel> Channel(const Server& s) { return testing::TlsChannel(s.address()); }
  // A service's client: presents `service`'s certificate (the SERVICE principal).
  static std::shared_ptr<grpc::Channel> ServiceChannel(const Server& s, const std::string& service) {
    return testing::TlsChannel(s.address(), service);
  }
  std::string Token(const std::string& user, const std::string& org, std::vector<Role> roles) {
    Principal p{user, org, std::move(roles), clock_.Now() + absl::Hours(24 * 400)};
    return testing::Mint(p, clock_.Now());
  }
  std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + token);
    return ctx;
  }
  template <typename Stub, typename Req, typename Resp>
  grpc::Status Call(Stub* stub, grpc::Status (Stub::*m)(grpc::ClientContext*, const Req&, Resp*),
                    const Req& req, Resp* resp, const std::string& token) {
    auto ctx = Ctx(token);
    return (stub->*m)(ctx.get(), req, resp);
  }
  template <typename Req, typename Resp>
  void Inv(grpc::Status (iv::InventoryService::Stub::*m)(grpc::ClientContext*, const Req&, Resp*),
           const Req& req) {
    Resp resp;
    auto s = Call(inventory_.get(), m, req, &resp, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // instruments/<id> as inventory answers it.
  iv::Instrument InventoryInstrument(const std::string& id) {
    iv::GetInstrumentRequest g;
    g.set_name("instruments/" + id);
    iv::Instrument in;
    grpc::Status s = Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &in, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return in;
  }
  // instruments/<id> offers exactly `modes` from now on.
  void OfferModes(const std::string& id, const std::vector<iv::ModeOffering>& modes, const std::string& request_id) {
    iv::UpdateInstrumentRequest u;
    u.mutable_instrument()->set_name("instruments/" + id);
    for (const auto& m : modes) *u.mutable_instrument()->add_modes() = m;
    u.mutable_update_mask()->add_paths("modes");
    u.set_request_id(request_id);
    Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  }

  // owner (CORE member) runs "tem" (buffer 30 min, qualification needed,
  // min notice 2 h, residency approval above 8 h, late cancel notice 24 h);
  // lab (GENERAL member) has users ana (qualified) and bob (not).
  void Seed() {
    auto org = [&](const std::string& id, const std::string& tier) {
      iv::CreateOrganizationRequest r;
      r.set_organization_id(id);
      r.mutable_organization()->set_display_name(id);
      r.mutable_organization()->set_type(iv::UNIVERSITY);
      r.mutable_organization()->set_membership_state(iv::MEMBER);
      r.mutable_organization()->set_tier(tier);
      Inv(&iv::InventoryService::Stub::CreateOrganization, r);
    };
    org("owner", "CORE");
    org("lab", "GENERAL");
    iv::CreateFacilityRequest f;
    f.set_facility_id("fac");
    f.mutable_facility()->set_display_name("fac");
    f.mutable_facility()->set_owner_organization("organizations/owner");
    f.mutable_facility()->mutable_access_policy()->set_allow_members(true);
    Inv(&iv::InventoryService::Stub::CreateFacility, f);
    iv::CreateInstrumentRequest i;
    i.set_instrument_id("tem");
    auto* in = i.mutable_instrument();
    in->set_display_name("TEM");
    in->set_owner_organization("organizations/owner");
    in->set_facility("facilities/fac");
    in->set_category("electron-microscopy");
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(100000000);
    in->set_daily_available_hours(24);
    auto* m = in->add_modes();
    m->set_mode(labshare::type::v1::ON_SITE);
    auto* sr = m->mutable_slot_rules();
    *sr->mutable_min_block() = ToProto(absl::Minutes(30));
    *sr->mutable_max_block() = ToProto(absl::Hours(24 * 30));
    *sr->mutable_member_horizon() = ToProto(absl::Hours(24 * 60));
    *sr->mutable_non_member_horizon() = ToProto(absl::Hours(24 * 7));
    *sr->mutable_min_notice() = ToProto(absl::Hours(2));
    *sr->mutable_buffer() = ToProto(absl::Minutes(30));
    *sr->mutable_approval_threshold() = ToProto(absl::Hours(8));
    *sr->mutable_no_show_grace() = ToProto(absl::Minutes(15));
    *sr->mutable_late_cancel_notice() = ToProto(absl::Hours(24));
    sr->set_billing_basis(iv::ACTUAL_TIME);
    sr->set_missed_fee_bps(5000);
    sr->set_late_cancel_fee_bps(2500);
    *sr->mutable_billing_unit() = ToProto(absl::Minutes(15));
    sr->set_qualification_validity_days(90);
    auto* jr = in->add_modes();
    jr->set_mode(labshare::type::v1::JOINT_RESEARCH);
    *jr->mutable_slot_rules() = *sr;
    jr->mutable_slot_rules()->set_qualification_validity_days(0);
    auto* ts = in->add_modes();
    ts->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
    *ts->mutable_slot_rules() = *jr->mutable_slot_rules();
    auto* entry = in->add_service_catalogue();
    entry->set_entry_id("imaging");
    entry->set_display_name("TEM imaging, per sample");
    entry->set_unit(iv::PER_SAMPLE);
    Inv(&iv::InventoryService::Stub::CreateInstrument, i);
    iv::CreateRateRequest rate;
    rate.set_parent("instruments/tem");
    rate.mutable_rate()->set_mode(labshare::type::v1::ON_SITE);
    rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
    rate.mutable_rate()->set_unit(iv::PER_HOUR);
    rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    rate.mutable_rate()->mutable_price()->set_amount_minor(50000);
    Inv(&iv::InventoryService::Stub::CreateRate, rate);
    rate.mutable_rate()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    Inv(&iv::InventoryService::Stub::CreateRate, rate);
    org("outsider", "GENERAL");
    // "afm": leased out (1 day handover, 2 days return, 7..60 days, deposit 1000.00).
    iv::CreateInstrumentRequest li;
    li.set_instrument_id("afm");
    *li.mutable_instrument() = *in;
    li.mutable_instrument()->set_display_name("AFM");
    li.mutable_instrument()->clear_modes();
    auto* lm = li.mutable_instrument()->add_modes();
    li.mutable_instrument()->clear_service_catalogue();
    lm->set_mode(labshare::type::v1::LEASE);
    lm->set_approval_required(true);
    auto* lr = lm->mutable_lease_rules();
    lr->set_min_term_days(7);
    lr->set_max_term_days(60);
    *lr->mutable_handover_buffer() = ToProto(absl::Hours(24));
    *lr->mutable_return_buffer() = ToProto(absl::Hours(48));
    lr->mutable_deposit()->set_currency_code("CNY");
    lr->mutable_deposit()->set_amount_minor(100000);
    lr->set_rate_basis(iv::PER_DAY);
    lr->set_counted_hours_per_day(8);
    Inv(&iv::InventoryService::Stub::CreateInstrument, li);
    iv::CreateRateRequest lease_rate;
    lease_rate.set_parent("instruments/afm");
    lease_rate.mutable_rate()->set_mode(labshare::type::v1::LEASE);
    lease_rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
    lease_rate.mutable_rate()->set_unit(iv::RATE_PER_DAY);
    lease_rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    lease_rate.mutable_rate()->mutable_price()->set_amount_minor(300000);
    Inv(&iv::InventoryService::Stub::CreateRate, lease_rate);
    for (const char* u : {"ana", "bob"}) {
      iv::CreateUserRequest cu;
      cu.set_user_id(u);
      cu.mutable_user()->set_display_name(u);
      cu.mutable_user()->set_organization("organizations/lab");
      cu.mutable_user()->add_roles(labshare::type::v1::LAB_USER);
      Inv(&iv::InventoryService::Stub::CreateUser, cu);
    }
    iv::CreateUserRequest su;
    su.set_user_id("sam");
    su.mutable_user()->set_display_name("sam");
    su.mutable_user()->set_organization("organizations/owner");
    su.mutable_user()->add_roles(labshare::type::v1::FACILITY_STAFF);
    Inv(&iv::InventoryService::Stub::CreateUser, su);
    iv::GrantQualificationRequest g;
    g.set_instrument("instruments/tem");
    g.set_user("users/ana");
    Inv(&iv::InventoryService::Stub::GrantQualification, g);
    ana_ = Token("ana", "lab", {Role::kLabUser});
    staff_ = Token("sam", "owner", {Role::kFacilityStaff});
    day_ = absl::FromUnixSeconds((absl::ToUnixSeconds(clock_.Now()) / 86400 + 2) * 86400);  // 2 days ahead, 00:00Z
  }

  // A copy of tem named `id` (its rates for members, ana qualified on it).
  void AddTemCopy(const std::string& id) {
    iv::GetInstrumentRequest g;
    g.set_name("instruments/tem");
    iv::Instrument tem;
    ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &tem, admin_).ok());
    iv::CreateInstrumentRequest i;
    i.set_instrument_id(id);
    *i.mutable_instrument() = tem;
    i.mutable_instrument()->clear_name();
    i.mutable_instrument()->clear_etag();
    Inv(&iv::InventoryService::Stub::CreateInstrument, i);
    for (auto mode : {labshare::type::v1::ON_SITE, labshare::type::v1::JOINT_RESEARCH}) {
      iv::CreateRateRequest rate;
      rate.set_parent("instruments/" + id);
      rate.mutable_rate()->set_mode(mode);
      rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
      rate.mutable_rate()->set_unit(iv::PER_HOUR);
      rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
      rate.mutable_rate()->mutable_price()->set_amount_minor(50000);
      Inv(&iv::InventoryService::Stub::CreateRate, rate);
    }
    iv::GrantQualificationRequest q;
    q.set_instrument("instruments/" + id);
    q.set_user("users/ana");
    Inv(&iv::InventoryService::Stub::GrantQualification, q);
  }

  grpc::Status Book(absl::Duration from, absl::Duration to, v1::Booking* out,
                    const std::string& request_id = "", const std::string& user = "users/ana") {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_booking()->set_user(user);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    r.set_request_id(request_id);
    return Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, out,
                user == "users/ana" ? ana_ : admin_);
  }

  std::vector<v1::BookingEvent> Events() {
    std::vector<v1::BookingEvent> out;
    for (int p = 0; p < kPartitions; ++p) {
      auto v = pool_->Command({"XRANGE", keys::Outbox(p), "-", "+"});
      for (const auto& entry : v->elements) {
        v1::BookingEvent e;
        e.ParseFromString(entry.elements[1].elements[3].str);
        out.push_back(std::move(e));
      }
    }
    return out;
  }

  FakeClock clock_;
  testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<labshare::inventory::InventoryStore> inv_store_;
  std::unique_ptr<labshare::inventory::InventoryManager> inv_manager_;
  std::unique_ptr<Authorizer> inv_auth_;
  std::unique_ptr<labshare::inventory::InventoryService> inv_service_;
  std::unique_ptr<Server> inv_server_;
  std::unique_ptr<iv::InventoryService::Stub> inventory_;
  std::unique_ptr<InventoryClient> inv_client_;
  std::unique_ptr<RedisPipeline> pipeline_;
  std::unique_ptr<BookingStore> store_;
  std::unique_ptr<BookingManager> manager_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<BookingService> service_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::BookingService::Stub> stub_;
  std::string admin_, ana_, staff_;
  absl::Time day_;
};

}  // namespace labshare::booking

#endif  // LABSHARE_TESTS_BOOKING_BOOKING_FIXTURE_H_
