// SlotRules.tier_horizons seen through booking: QueryAvailability's
// horizon_end (and its free time), CreateBooking's BEYOND_HORIZON and
// ScheduleService's (the order's client as payer) follow the payer's tier,
// as inventory's CheckAccess does (one BookingWindowFor).
// Fails on the code before the field: every member had member_horizon.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "common/grpc_status.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;
constexpr absl::Duration kDay = absl::Hours(24);

class BookingTierHorizonTest : public BookingServiceTest {
 protected:
  // tem's ON_SITE and TECHNICAL_SERVICE rules (member_horizon 60 d) give
  // CORE 90 d and SILVER (held by nobody here) 100 d; core is a CORE member
  // with user cat, qualified on tem.
  void SetUp() override {
    BookingServiceTest::SetUp();
    iv::Instrument tem = InventoryInstrument("tem");
    std::vector<iv::ModeOffering> modes(tem.modes().begin(), tem.modes().end());
    for (auto& m : modes) {
      if (m.mode() != labshare::type::v1::ON_SITE && m.mode() != labshare::type::v1::TECHNICAL_SERVICE) continue;
      auto* t = m.mutable_slot_rules()->add_tier_horizons();
      t->set_tier("CORE");
      *t->mutable_horizon() = ToProto(90 * kDay);
      t = m.mutable_slot_rules()->add_tier_horizons();  // a tier no organisation here holds
      t->set_tier("SILVER");
      *t->mutable_horizon() = ToProto(100 * kDay);
    }
    OfferModes("tem", modes, "tier-horizons");
    iv::CreateOrganizationRequest o;
    o.set_organization_id("core");
    o.mutable_organization()->set_display_name("core");
    o.mutable_organization()->set_type(iv::RESEARCH_INSTITUTE);
    o.mutable_organization()->set_membership_state(iv::MEMBER);
    o.mutable_organization()->set_tier("CORE");
    Inv(&iv::InventoryService::Stub::CreateOrganization, o);
    iv::CreateUserRequest u;
    u.set_user_id("cat");
    u.mutable_user()->set_display_name("cat");
    u.mutable_user()->set_organization("organizations/core");
    u.mutable_user()->add_roles(labshare::type::v1::LAB_USER);
    Inv(&iv::InventoryService::Stub::CreateUser, u);
    iv::GrantQualificationRequest g;
    g.set_instrument("instruments/tem");
    g.set_user("users/cat");
    Inv(&iv::InventoryService::Stub::GrantQualification, g);
    cat_ = Token("cat", "core", {Role::kLabUser});
  }

  // QueryAvailability of tem over [now, now + 120 d) for `org` (empty: the
  // caller's), asked by `token`.
  v1::QueryAvailabilityResponse Availability(const std::string& org, const std::string& token) {
    v1::QueryAvailabilityRequest q;
    q.set_instrument("instruments/tem");
    *q.mutable_range()->mutable_start_time() = ToProto(clock_.Now());
    *q.mutable_range()->mutable_end_time() = ToProto(clock_.Now() + 120 * kDay);
    if (!org.empty()) q.set_organization("organizations/" + org);
    v1::QueryAvailabilityResponse r;
    grpc::Status s = Call(stub_.get(), &Stub::QueryAvailability, q, &r, token);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }

  grpc::Status BookEndingAt(const std::string& user, const std::string& token, absl::Duration end,
                            v1::Booking* out) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_booking()->set_user("users/" + user);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() =
        ToProto(clock_.Now() + end - absl::Hours(2));
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(clock_.Now() + end);
    return Call(stub_.get(), &Stub::CreateBooking, r, out, token);
  }

  // An order of tem's "imaging" by `token`'s user (client: their
  // organisation) taken to SAMPLES_RECEIVED, then ScheduleService of a run
  // of 2 h ending at now + `end`.
  grpc::Status ScheduleRunEndingAt(const std::string& token, absl::Duration end, v1::ServiceOrder* out) {
    v1::CreateServiceOrderRequest r;
    r.mutable_service_order()->set_instrument("instruments/tem");
    r.mutable_service_order()->set_service_entry_id("imaging");
    r.mutable_service_order()->set_sample_count(2);
    v1::ServiceOrder o;
    grpc::Status s = Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, token);
    if (!s.ok()) return s;
    v1::IssueQuoteRequest q;
    q.set_name(o.name());
    q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
    q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(10000);
    *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + 14 * kDay);
    if (s = Call(stub_.get(), &Stub::IssueQuote, q, &o, staff_); !s.ok()) return s;
    v1::AcceptQuoteRequest a;
    a.set_name(o.name());
    a.set_quote_etag(o.quote().quote_etag());
    if (s = Call(stub_.get(), &Stub::AcceptQuote, a, &o, token); !s.ok()) return s;
    v1::ReceiveSamplesRequest rs;
    rs.set_name(o.name());
    rs.set_received_sample_count(2);
    if (s = Call(stub_.get(), &Stub::ReceiveSamples, rs, &o, staff_); !s.ok()) return s;
    v1::ScheduleServiceRequest sch;
    sch.set_name(o.name());
    *sch.mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + end - absl::Hours(2));
    *sch.mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + end);
    return Call(stub_.get(), &Stub::ScheduleService, sch, out, staff_);
  }

  std::string cat_;
};

TEST_F(BookingTierHorizonTest, AvailabilityEndsAtTheHorizonOfThePayersTier) {
  const absl::Time now = clock_.Now();
  v1::QueryAvailabilityResponse core = Availability("core", admin_);
  EXPECT_EQ(FromProto(core.horizon_end()), now + 90 * kDay);
  ASSERT_GT(core.free_intervals_size(), 0);
  EXPECT_EQ(FromProto(core.free_intervals(core.free_intervals_size() - 1).end_time()), now + 90 * kDay);
  EXPECT_EQ(FromProto(Availability("", cat_).horizon_end()), now + 90 * kDay);  // cat's own organisation
  // lab is a GENERAL member: member_horizon.
  v1::QueryAvailabilityResponse lab = Availability("lab", admin_);
  EXPECT_EQ(FromProto(lab.horizon_end()), now + 60 * kDay);
  ASSERT_GT(lab.free_intervals_size(), 0);
  EXPECT_EQ(FromProto(lab.free_intervals(lab.free_intervals_size() - 1).end_time()), now + 60 * kDay);
  EXPECT_EQ(FromProto(Availability("", ana_).horizon_end()), now + 60 * kDay);
  // Without an organisation: a member's horizon, no tier's.
  EXPECT_EQ(FromProto(Availability("", admin_).horizon_end()), now + 60 * kDay);
  // The owner (itself CORE; OWNER class) books up to the longest horizon,
  // SILVER's, not its own tier's.
  EXPECT_EQ(FromProto(Availability("owner", admin_).horizon_end()), now + 100 * kDay);
}

TEST_F(BookingTierHorizonTest, CreateBookingHoldsAGeneralMemberToMemberHorizonWhereCoreBooks) {
  v1::Booking b;
  grpc::Status s = BookEndingAt("ana", ana_, 75 * kDay, &b);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "BEYOND_HORIZON") << s.error_message();
  s = BookEndingAt("cat", cat_, 75 * kDay, &b);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(b.payer_organization(), "organizations/core");
  EXPECT_EQ(b.payer_tier(), "CORE");
  // CORE too ends by now + 90 d.
  s = BookEndingAt("cat", cat_, 90 * kDay + absl::Seconds(1), &b);
  EXPECT_EQ(GrpcErrorReason(s), "BEYOND_HORIZON") << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "members of tier CORE")) << s.error_message();
}

// ScheduleService judges the run's horizon by the order's client (the payer)
// and its tier: a CORE client's run may end by now + 90 d, a GENERAL
// member's only by now + 60 d.
TEST_F(BookingTierHorizonTest, ScheduleServiceHoldsTheRunToTheHorizonOfTheClientsTier) {
  v1::ServiceOrder o;
  grpc::Status s = ScheduleRunEndingAt(ana_, 75 * kDay, &o);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "BEYOND_HORIZON") << s.error_message();
  s = ScheduleRunEndingAt(cat_, 75 * kDay, &o);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(o.state(), v1::ServiceOrder::SCHEDULED);
  EXPECT_EQ(o.payer_tier(), "CORE");
  v1::GetBookingRequest g;
  g.set_name(o.booking());
  v1::Booking run;
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &run, admin_).ok());
  EXPECT_EQ(run.payer_tier(), "CORE");
  s = ScheduleRunEndingAt(cat_, 90 * kDay + absl::Seconds(1), &o);
  EXPECT_EQ(GrpcErrorReason(s), "BEYOND_HORIZON") << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "members of tier CORE")) << s.error_message();
}

}  // namespace
}  // namespace labshare::booking
