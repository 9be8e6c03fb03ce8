// Billing against the findings of the audit of 2026-12-06 (billing.proto,
// billing_events.proto and booking_events.proto as the contract):
// 1. a lease closed with damage and no deposit is charged the damage;
// 2. bookings are priced at the payer class and tier booking recorded, not
//    at the organisation's membership when billing reads the event;
// 3. a pool whose balance went negative (a top-up reversed after grants)
//    is exhausted, not an error that blocks every charge;
// 4. granted_total stays "subsidies granted, net of reversals" when a
//    top-up is corrected;
// 5. a fee of 0 bps is no charge;
// 6. CorrectionPosted lists no all-zero income figures.
//
// Runs billing in process over the booking fixture (real Redis, inventory
// and booking over real gRPC, fake clock).
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
namespace tv = labshare::type::v1;
using booking::BookingServiceTest;

constexpr char kLab[] = "organizations/lab";
constexpr char kOwner[] = "organizations/owner";

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& reason) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(ErrorReason(s), reason) << s;
}

class BillingAuditTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    reader_ = std::make_unique<testing::DirectInventory>(inv_manager_.get());
    bstore_ = std::make_unique<BillingStore>(pool_.get());
    billing_ = std::make_unique<BillingManager>(bstore_.get(), reader_.get(), &clock_,
                                                *LoadBillingTimeZone("Asia/Shanghai"),
                                                labshare::testing::TestPageTokens());
  }

  // Every booking event so far, in outbox order (partition by partition).
  std::vector<StreamEvent> BookingEvents() {
    std::vector<StreamEvent> out;
    for (int p = 0; p < booking::kPartitions; ++p) {
      auto raw = pool_->Command({"XRANGE", booking::keys::Outbox(p), "-", "+"});
      EXPECT_TRUE(raw.ok());
      if (!raw.ok()) continue;
      for (const auto& entry : raw->elements) {
        StreamEvent e;
        e.stream_id = entry.elements[0].str;
        e.type = entry.elements[1].elements[1].str;
        e.payload = entry.elements[1].elements[3].str;
        out.push_back(std::move(e));
      }
    }
    return out;
  }

  // Applies every booking event not applied yet (applying twice is a no-op).
  void Drain() {
    for (const auto& e : BookingEvents()) {
      auto s = billing_->ApplyBookingEvent(e);
      EXPECT_TRUE(s.ok()) << e.type << ": " << s;
    }
  }

  // The BillingEvents published so far.
  std::vector<v1::BillingEvent> Published() {
    std::vector<v1::BillingEvent> out;
    auto raw = pool_->Command({"XRANGE", keys::Outbox(), "-", "+"});
    EXPECT_TRUE(raw.ok());
    if (!raw.ok()) return out;
    for (const auto& entry : raw->elements) {
      v1::BillingEvent e;
      EXPECT_TRUE(e.ParseFromString(entry.elements[1].elements[3].str));
      out.push_back(std::move(e));
    }
    return out;
  }
  std::vector<v1::ChargePosted> ChargesPosted() {
    std::vector<v1::ChargePosted> out;
    for (const auto& e : Published()) {
      if (e.has_charge_posted()) out.push_back(e.charge_posted());
    }
    return out;
  }

  // Every charge lab pays, oldest first.
  std::vector<v1::Charge> LabCharges() {
    v1::ListChargesRequest r;
    r.set_payer_organization(kLab);
    r.set_page_size(100);
    auto listed = billing_->ListCharges(admin_p_, r);
    EXPECT_TRUE(listed.ok()) << listed.status();
    if (!listed.ok()) return {};
    return {listed->charges().begin(), listed->charges().end()};
  }

  // Books tem for ana at [from, to) after day_ (min notice 2 h from now).
  bk::Booking BookTem(absl::Duration from, absl::Duration to) {
    bk::Booking b;
    grpc::Status s = Book(from, to, &b);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return b;
  }
  // Checks `b` in at its start and out at its end.
  void UseAsBooked(const bk::Booking& b) {
    bk::Booking done;
    clock_.Set(FromProto(b.reserved_interval().start_time()));
    bk::CheckInRequest ci;
    ci.set_name(b.name());
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &done, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    clock_.Set(FromProto(b.reserved_interval().end_time()));
    bk::CheckOutRequest co;
    co.set_name(b.name());
    s = Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &done, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  void Session(absl::Duration from, absl::Duration to) { UseAsBooked(BookTem(from, to)); }

  // A lease of afm (3000.00 a day) for lab with `deposit`, handed over at
  // day_ + 24 h, returned at day_ + 6 days with `damage`, then closed.
  bk::Lease LeaseReturnedWithDamage(int64_t deposit, int64_t damage, bool returned = true) {
    bk::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 11));
    bk::Lease lease, out;
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, r, &lease, ana_).ok());
    bk::ApproveLeaseRequest a;
    a.set_name(lease.name());
    a.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
    *a.mutable_contract()->mutable_rate() = MakeMoney("CNY", 300000);
    *a.mutable_contract()->mutable_deposit() = MakeMoney("CNY", deposit);
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, a, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("tip new");
    clock_.Set(day_ + absl::Hours(24));
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &out, staff_).ok());
    if (!returned) return out;
    clock_.Set(day_ + absl::Hours(24 * 6));
    bk::RecordReturnRequest ret;
    ret.set_name(lease.name());
    ret.set_condition_notes("stage scratched");
    if (damage > 0) *ret.mutable_damage_amount() = MakeMoney("CNY", damage);
    EXPECT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &out, staff_).ok());
    bk::CloseLeaseRequest c;
    c.set_name(lease.name());
    s = Call(stub_.get(), &bk::BookingService::Stub::CloseLease, c, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  // A pool `id` paying `bps` of every charge, uncapped, topped up with
  // `top_up`; returns the top-up's posting.
  std::string CreatePool(const std::string& id, int32_t bps, int64_t top_up) {
    v1::CreateSubsidyPoolRequest cp;
    cp.set_subsidy_pool_id(id);
    cp.mutable_subsidy_pool()->set_display_name(id);
    cp.mutable_subsidy_pool()->set_currency_code("CNY");
    cp.mutable_subsidy_pool()->set_percentage_bps(bps);
    auto created = billing_->CreateSubsidyPool(admin_p_, cp);
    EXPECT_TRUE(created.ok()) << created.status();
    return TopUp(id, top_up);
  }
  std::string TopUp(const std::string& id, int64_t amount) {
    v1::TopUpSubsidyPoolRequest top;
    top.set_name("subsidyPools/" + id);
    *top.mutable_amount() = MakeMoney("CNY", amount);
    auto topped = billing_->TopUpSubsidyPool(admin_p_, top);
    EXPECT_TRUE(topped.ok()) << topped.status();
    std::string posting;
    for (const auto& e : Published()) {
      if (e.has_subsidy_pool_changed() && e.subsidy_pool_changed().kind() == v1::SubsidyPoolChanged::TOPPED_UP) {
        posting = e.subsidy_pool_changed().posting().name();  // the last one
      }
    }
    return posting;
  }
  v1::SubsidyPool Pool(const std::string& id) {
    v1::GetSubsidyPoolRequest get;
    get.set_name("subsidyPools/" + id);
    auto pool = billing_->GetSubsidyPool(admin_p_, get);
    EXPECT_TRUE(pool.ok()) << pool.status();
    return pool.ok() ? *pool : v1::SubsidyPool();
  }
  absl::StatusOr<v1::PostCorrectionResponse> Reverse(const std::string& posting, const std::string& request_id = "") {
    v1::PostCorrectionRequest fix;
    fix.set_posting(posting);
    fix.set_mode(v1::PostCorrectionRequest::REVERSE);
    fix.set_reason("paid in by mistake");
    fix.set_request_id(request_id);
    return billing_->PostCorrection(admin_p_, fix);
  }

  // A rate line of tem for ON_SITE: `cls` (and `tier`) at `price` an hour.
  std::string AddTemRate(tv::PayerClass cls, const std::string& tier, int64_t price) {
    iv::CreateRateRequest rate;
    rate.set_parent("instruments/tem");
    rate.mutable_rate()->set_mode(tv::ON_SITE);
    rate.mutable_rate()->set_payer_class(cls);
    rate.mutable_rate()->set_tier(tier);
    rate.mutable_rate()->set_unit(iv::PER_HOUR);
    *rate.mutable_rate()->mutable_price() = MakeMoney("CNY", price);
    iv::Rate out;
    grpc::Status s = Call(inventory_.get(), &iv::InventoryService::Stub::CreateRate, rate, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.name();
  }
  void ChangeLabMembership(iv::MembershipState state, const std::string& tier) {
    iv::ChangeMembershipRequest c;
    c.set_name(kLab);
    c.set_membership_state(state);
    c.set_tier(tier);
    c.set_reason("board decision");
    Inv(&iv::InventoryService::Stub::ChangeMembership, c);
  }

  std::unique_ptr<testing::DirectInventory> reader_;
  std::unique_ptr<BillingStore> bstore_;
  std::unique_ptr<BillingManager> billing_;
  Principal admin_p_{"root", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
};

// ================================================================ 1. damage without a deposit

// billing.proto, Deposit: "a zero deposit creates none"; at close billing
// posts "a DAMAGE charge for the damage outstanding", here all of it.
TEST_F(BillingAuditTest, DamageOfALeaseWithoutDepositIsCharged) {
  CreatePool("voucher", 5000, 10000000);  // pays half of what it may
  const bk::Lease lease = LeaseReturnedWithDamage(0, 50000);
  ASSERT_EQ(lease.state(), bk::Lease::CLOSED);
  Drain();
  std::vector<v1::Charge> damage;
  for (const auto& c : LabCharges()) {
    EXPECT_NE(c.fee_kind(), v1::DEPOSIT);
    if (c.fee_kind() == v1::DAMAGE) damage.push_back(c);
  }
  ASSERT_EQ(damage.size(), 1u);
  const v1::Charge& c = damage[0];
  EXPECT_EQ(c.amount().amount_minor(), 50000);
  EXPECT_EQ(c.amount().currency_code(), "CNY");
  EXPECT_EQ(c.payer_organization(), kLab);
  EXPECT_EQ(c.owner_organization(), kOwner);
  EXPECT_EQ(c.source_key(), "damage");
  EXPECT_EQ(c.basis(), v1::ASSESSED);
  // Never subsidised; compensation, not service income.
  EXPECT_EQ(c.subsidy_lines_size(), 0);
  EXPECT_EQ(c.payable_amount().amount_minor(), 50000);
  int posted = 0;
  for (const auto& e : ChargesPosted()) {
    if (e.charge().name() != c.name()) continue;
    ++posted;
    EXPECT_EQ(e.income().compensation().amount_minor(), 50000);
    EXPECT_EQ(e.income().service_income().amount_minor(), 0);
    EXPECT_EQ(e.income().subsidised().amount_minor(), 0);
  }
  EXPECT_EQ(posted, 1);
  // No deposit was held, and none is made up.
  v1::GetDepositRequest gd;
  gd.set_name("deposits/" + lease.name().substr(lease.name().rfind('/') + 1));
  ExpectError(billing_->GetDeposit(admin_p_, gd).status(), absl::StatusCode::kNotFound, "DEPOSIT_NOT_FOUND");
  // Consumed once: draining again charges nothing more.
  Drain();
  int after = 0;
  for (const auto& x : LabCharges()) after += x.fee_kind() == v1::DAMAGE;
  EXPECT_EQ(after, 1);
}

TEST_F(BillingAuditTest, ALeaseWithoutDepositOrDamageChargesNoDamage) {
  LeaseReturnedWithDamage(0, 0);
  Drain();
  for (const auto& c : LabCharges()) {
    EXPECT_NE(c.fee_kind(), v1::DAMAGE);
    EXPECT_NE(c.fee_kind(), v1::DEPOSIT);
  }
}

// ================================================================ 2. the recorded payer class and tier

// billing_events.proto: prices come from LookupRate "using the payer class
// and tier booking recorded on the booking"; booking.proto: "earlier
// bookings keep their class" when a member is suspended.
TEST_F(BillingAuditTest, ABookingOfAMemberSuspendedSinceIsChargedTheMemberLine) {
  AddTemRate(tv::NON_MEMBER, "", 90000);
  const bk::Booking b = BookTem(absl::Hours(9), absl::Hours(10));
  ASSERT_EQ(b.payer_class(), tv::MEMBER);
  ASSERT_EQ(b.payer_tier(), "GENERAL");
  ChangeLabMembership(iv::SUSPENDED, "");
  UseAsBooked(b);
  Drain();
  auto charges = LabCharges();
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(charges[0].fee_kind(), v1::USAGE);
  EXPECT_EQ(charges[0].amount().amount_minor(), 50000);  // 1 h at the member's 500.00, not 900.00
  EXPECT_EQ(charges[0].rate().payer_class(), tv::MEMBER);
  EXPECT_EQ(charges[0].rate().member_tier(), "GENERAL");
  EXPECT_EQ(charges[0].rate().unit_price().amount_minor(), 50000);
}

TEST_F(BillingAuditTest, ABookingIsChargedTheLineOfTheTierItRecorded) {
  const std::string general = AddTemRate(tv::MEMBER, "GENERAL", 40000);
  AddTemRate(tv::MEMBER, "CORE", 30000);
  const bk::Booking b = BookTem(absl::Hours(9), absl::Hours(10));
  ASSERT_EQ(b.payer_tier(), "GENERAL");
  ChangeLabMembership(iv::MEMBER, "CORE");
  UseAsBooked(b);
  Drain();
  auto charges = LabCharges();
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(charges[0].amount().amount_minor(), 40000);
  EXPECT_EQ(charges[0].rate().rate(), general);
  EXPECT_EQ(charges[0].rate().payer_class(), tv::MEMBER);
  EXPECT_EQ(charges[0].rate().member_tier(), "GENERAL");
}

// Events from before booking recorded the class are priced as before: at
// the organisation's class now.
TEST_F(BillingAuditTest, ABookingWithoutARecordedClassIsPricedAtTheClassNow) {
  AddTemRate(tv::NON_MEMBER, "", 90000);
  Session(absl::Hours(9), absl::Hours(10));
  ChangeLabMembership(iv::SUSPENDED, "");
  for (auto e : BookingEvents()) {
    bk::BookingEvent ev;
    ASSERT_TRUE(ev.ParseFromString(e.payload));
    if (ev.has_booking_checked_out()) {
      ev.mutable_booking_checked_out()->mutable_booking()->clear_payer_class();
      ev.mutable_booking_checked_out()->mutable_booking()->clear_payer_tier();
      e.payload = ev.SerializeAsString();
    }
    ASSERT_TRUE(billing_->ApplyBookingEvent(e).ok());
  }
  auto charges = LabCharges();
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(charges[0].amount().amount_minor(), 90000);
  EXPECT_EQ(charges[0].rate().payer_class(), tv::NON_MEMBER);
}

// A service order is priced from its quote; the VAT rate comes from the rate
// card line of the class and tier the order recorded (booking.proto:
// ServiceOrder.payer_class "when ordered"), even if the client was
// suspended before it accepted the report.
TEST_F(BillingAuditTest, AServiceOrderTakesTheTaxRateOfTheClassItRecorded) {
  for (auto [cls, bps] : {std::pair<tv::PayerClass, int32_t>{tv::MEMBER, 600}, {tv::NON_MEMBER, 1300}}) {
    iv::CreateRateRequest rate;
    rate.set_parent("instruments/tem");
    rate.mutable_rate()->set_mode(tv::TECHNICAL_SERVICE);
    rate.mutable_rate()->set_payer_class(cls);
    rate.mutable_rate()->set_service_entry_id("imaging");
    rate.mutable_rate()->set_unit(iv::RATE_PER_SAMPLE);
    *rate.mutable_rate()->mutable_price() = MakeMoney("CNY", 20000);
    rate.mutable_rate()->set_tax_rate_bps(bps);
    Inv(&iv::InventoryService::Stub::CreateRate, rate);
  }
  bk::CreateServiceOrderRequest co;
  co.mutable_service_order()->set_instrument("instruments/tem");
  co.mutable_service_order()->set_service_entry_id("imaging");
  co.mutable_service_order()->set_sample_count(3);
  bk::ServiceOrder o, out;
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CreateServiceOrder, co, &o, ana_).ok());
  ASSERT_EQ(o.payer_class(), tv::MEMBER);
  bk::IssueQuoteRequest q;
  q.set_name(o.name());
  *q.mutable_quote()->mutable_per_sample_fee() = MakeMoney("CNY", 20000);
  *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24 * 14));
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::IssueQuote, q, &out, staff_).ok());
  bk::AcceptQuoteRequest aq;
  aq.set_name(o.name());
  aq.set_quote_etag(out.quote().quote_etag());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::AcceptQuote, aq, &out, ana_).ok());
  bk::ReceiveSamplesRequest rs;
  rs.set_name(o.name());
  rs.set_received_sample_count(3);
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ReceiveSamples, rs, &out, staff_).ok());
  bk::ScheduleServiceRequest sch;
  sch.set_name(o.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ScheduleService, sch, &out, staff_).ok());
  clock_.Set(day_ + absl::Hours(9));
  bk::StartServiceRequest st;
  st.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::StartService, st, &out, staff_).ok());
  bk::DeliverReportRequest dr;
  dr.set_name(o.name());
  dr.mutable_report()->set_uri("s3://reports/1.pdf");
  dr.mutable_report()->set_sha256(std::string(64, 'a'));
  dr.mutable_report()->set_summary("3 grids imaged");
  clock_.Set(day_ + absl::Hours(11));
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::DeliverReport, dr, &out, staff_).ok());
  ChangeLabMembership(iv::SUSPENDED, "");
  bk::AcceptReportRequest ar;
  ar.set_name(o.name());
  grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::AcceptReport, ar, &out, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  Drain();
  auto charges = LabCharges();
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(charges[0].fee_kind(), v1::TECHNICAL_SERVICE);
  EXPECT_EQ(charges[0].amount().amount_minor(), 60000);
  EXPECT_EQ(charges[0].rate().payer_class(), tv::MEMBER);
  ASSERT_TRUE(charges[0].rate().has_tax_rate_bps());
  EXPECT_EQ(charges[0].rate().tax_rate_bps(), 600);
}

// inventory.proto, LookupRate: a named payer_class (and tier) picks that
// class's line whatever the organisation is now; an unknown class is
// INVALID_FIELD.
TEST_F(BillingAuditTest, LookupRateAtARecordedClassAndTier) {
  AddTemRate(tv::NON_MEMBER, "", 90000);
  const std::string core = AddTemRate(tv::MEMBER, "CORE", 30000);
  ChangeLabMembership(iv::SUSPENDED, "");
  iv::LookupRateRequest r;
  r.set_instrument("instruments/tem");
  r.set_mode(tv::ON_SITE);
  r.set_payer_organization(kLab);
  auto now = reader_->LookupRate(r);
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(now->payer_class(), tv::NON_MEMBER);
  EXPECT_EQ(now->rate().price().amount_minor(), 90000);
  r.set_payer_class(tv::MEMBER);
  r.set_payer_tier("CORE");
  auto recorded = reader_->LookupRate(r);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(recorded->payer_class(), tv::MEMBER);
  EXPECT_EQ(recorded->rate().name(), core);
  r.set_payer_tier("GENERAL");  // no line of its own: the line without tier
  recorded = reader_->LookupRate(r);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(recorded->rate().price().amount_minor(), 50000);
  EXPECT_EQ(recorded->rate().tier(), "");
  r.set_payer_class(tv::OWNER);  // no OWNER line on tem
  ExpectError(reader_->LookupRate(r).status(), absl::StatusCode::kNotFound, "NO_RATE");
  r.set_payer_class(static_cast<tv::PayerClass>(42));
  ExpectError(reader_->LookupRate(r).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
}

// ================================================================ 3. a pool overdrawn by a reversed top-up

// Top up 10.00, grant 3.00, reverse the top-up: the balance is -3.00. The
// pool is exhausted; later charges post without its subsidy (before: every
// subsidisable charge failed INVALID_ARGUMENT and was retried forever).
TEST_F(BillingAuditTest, APoolWithANegativeBalanceIsExhaustedNotAnError) {
  const std::string top_up = CreatePool("voucher", 60, 1000);  // 0.6 %: 3.00 of a 500.00 hour
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  auto charges = LabCharges();
  ASSERT_EQ(charges.size(), 1u);
  ASSERT_EQ(charges[0].subsidy_lines_size(), 1);
  EXPECT_EQ(charges[0].subsidy_lines(0).amount().amount_minor(), 300);
  ASSERT_TRUE(Reverse(top_up).ok());
  v1::SubsidyPool pool = Pool("voucher");
  EXPECT_EQ(pool.balance().amount_minor(), -300);
  EXPECT_EQ(pool.state(), v1::SubsidyPool::EXHAUSTED);

  Session(absl::Hours(12), absl::Hours(13));
  for (const auto& e : BookingEvents()) ASSERT_TRUE(billing_->ApplyBookingEvent(e).ok()) << e.type;
  charges = LabCharges();
  ASSERT_EQ(charges.size(), 2u);
  const v1::Charge& later = charges[0].subsidy_lines_size() == 0 ? charges[0] : charges[1];
  EXPECT_EQ(later.amount().amount_minor(), 50000);
  EXPECT_EQ(later.subsidy_lines_size(), 0);
  EXPECT_EQ(later.payable_amount().amount_minor(), 50000);
  EXPECT_EQ(Pool("voucher").balance().amount_minor(), -300);  // untouched
  // A top-up brings it back: the next charge is subsidised again.
  TopUp("voucher", 1000);
  EXPECT_EQ(Pool("voucher").balance().amount_minor(), 700);
  EXPECT_EQ(Pool("voucher").state(), v1::SubsidyPool::ACTIVE);
  Session(absl::Hours(15), absl::Hours(16));
  Drain();
  charges = LabCharges();
  ASSERT_EQ(charges.size(), 3u);
  int subsidised = 0;
  for (const auto& c : charges) subsidised += c.subsidy_lines_size();
  EXPECT_EQ(subsidised, 2);
  EXPECT_EQ(Pool("voucher").balance().amount_minor(), 400);
}

// ================================================================ 4. granted_total after corrections of top-ups

TEST_F(BillingAuditTest, AReversedTopUpGrantedNothing) {
  const std::string top_up = CreatePool("voucher", 60, 1000);
  auto fixed = Reverse(top_up, "undo-top-up");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  v1::SubsidyPool pool = Pool("voucher");
  EXPECT_EQ(pool.balance().amount_minor(), 0);
  EXPECT_EQ(pool.topped_up_total().amount_minor(), 0);
  EXPECT_EQ(pool.granted_total().amount_minor(), 0);
  EXPECT_EQ(pool.granted_total().currency_code(), "CNY");
  // A retry gets the first answer and moves nothing again.
  auto again = Reverse(top_up, "undo-top-up");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->correction().name(), fixed->correction().name());
  EXPECT_EQ(Pool("voucher").topped_up_total().amount_minor(), 0);
  // The pool may be topped up to the full limit again.
  v1::TopUpSubsidyPoolRequest top;
  top.set_name("subsidyPools/voucher");
  *top.mutable_amount() = MakeMoney("CNY", kMaxAmountMinor);
  EXPECT_TRUE(billing_->TopUpSubsidyPool(admin_p_, top).ok());
}

TEST_F(BillingAuditTest, GrantedTotalIsTheGrantsNetOfReversalsWhateverHappensToTheTopUps) {
  const std::string top_up = CreatePool("voucher", 60, 1000);
  TopUp("voucher", 500);
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  v1::SubsidyPool pool = Pool("voucher");
  EXPECT_EQ(pool.granted_total().amount_minor(), 300);
  EXPECT_EQ(pool.topped_up_total().amount_minor(), 1500);
  ASSERT_TRUE(Reverse(top_up).ok());
  pool = Pool("voucher");
  EXPECT_EQ(pool.balance().amount_minor(), 200);
  EXPECT_EQ(pool.topped_up_total().amount_minor(), 500);
  EXPECT_EQ(pool.granted_total().amount_minor(), 300);
  // Reversing the charge gives the grant back: nothing granted, net.
  const v1::Charge charge = LabCharges()[0];
  ASSERT_TRUE(Reverse(charge.posting()).ok());
  pool = Pool("voucher");
  EXPECT_EQ(pool.balance().amount_minor(), 500);
  EXPECT_EQ(pool.granted_total().amount_minor(), 0);
  EXPECT_EQ(pool.topped_up_total().amount_minor(), 500);
}

// An ADJUST of a top-up that moves the pool's funds counts as funding, and
// may not take the pool's top-ups below 0.
TEST_F(BillingAuditTest, AnAdjustedTopUpMovesTheToppedUpTotal) {
  const std::string top_up = CreatePool("voucher", 60, 1000);
  auto adjust = [&](int64_t withdrawn) {
    v1::PostCorrectionRequest fix;
    fix.set_posting(top_up);
    fix.set_mode(v1::PostCorrectionRequest::ADJUST);
    fix.set_reason("part of the grant was never paid in");
    v1::Entry* funds = fix.add_entries();
    funds->set_account("subsidyPools/voucher/accounts/pool-funds");
    *funds->mutable_debit() = MakeMoney("CNY", withdrawn);
    v1::Entry* cash = fix.add_entries();
    cash->set_account("subsidyPools/voucher/accounts/pool-cash");
    *cash->mutable_credit() = MakeMoney("CNY", withdrawn);
    return billing_->PostCorrection(admin_p_, fix);
  };
  auto fixed = adjust(400);
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  v1::SubsidyPool pool = Pool("voucher");
  EXPECT_EQ(pool.balance().amount_minor(), 600);
  EXPECT_EQ(pool.topped_up_total().amount_minor(), 600);
  EXPECT_EQ(pool.granted_total().amount_minor(), 0);
  const std::string etag = pool.etag();
  ExpectError(adjust(601).status(), absl::StatusCode::kInvalidArgument, "INVALID_FIELD");
  pool = Pool("voucher");
  EXPECT_EQ(pool.topped_up_total().amount_minor(), 600);
  EXPECT_EQ(pool.balance().amount_minor(), 600);
  EXPECT_EQ(pool.etag(), etag);  // nothing written
}

// ================================================================ 5. a fee of 0 bps

TEST_F(BillingAuditTest, AFeeOfZeroBpsIsNoCharge) {
  iv::Instrument tem = InventoryInstrument("tem");
  std::vector<iv::ModeOffering> modes(tem.modes().begin(), tem.modes().end());
  for (auto& m : modes) {
    if (m.mode() != tv::ON_SITE) continue;
    m.mutable_slot_rules()->set_missed_fee_bps(0);
    m.mutable_slot_rules()->set_late_cancel_fee_bps(0);
  }
  OfferModes("tem", modes, "free-of-fees");
  const bk::Booking missed = BookTem(absl::Hours(9), absl::Hours(10));
  const bk::Booking cancelled = BookTem(absl::Hours(12), absl::Hours(13));
  clock_.Set(day_ + absl::Hours(8));  // within the 24 h notice: late
  bk::CancelBookingRequest cancel;
  cancel.set_name(cancelled.name());
  cancel.set_reason("sample not ready");
  bk::Booking out;
  grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::CancelBooking, cancel, &out, ana_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(out.late_cancellation());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(20));
  ASSERT_GE(*manager_->Sweep(), 1);
  bool saw_missed = false;
  for (const auto& e : Events()) saw_missed |= e.has_booking_missed();
  ASSERT_TRUE(saw_missed);
  Drain();
  EXPECT_TRUE(LabCharges().empty());
  EXPECT_TRUE(ChargesPosted().empty());
}

// ================================================================ 6. no all-zero income figures

// billing_events.proto, CorrectionPosted.income_deltas: one per owner whose
// income accounts the corrections touch, "(empty if none)". A DEPOSIT charge
// is no one's income. Its hold is not reversed (PostCorrection
// NOT_CORRECTABLE: the lease's close releases or applies it); an ADJUST
// mirroring its entries changes no income either.
TEST_F(BillingAuditTest, ADepositHoldIsCorrectedNeitherByReverseNorByAdjust) {
  LeaseReturnedWithDamage(100000, 0, /*returned=*/false);
  Drain();
  std::string deposit_posting;
  for (const auto& c : LabCharges()) {
    if (c.fee_kind() == v1::DEPOSIT) deposit_posting = c.posting();
  }
  ASSERT_FALSE(deposit_posting.empty());
  ExpectError(Reverse(deposit_posting).status(), absl::StatusCode::kFailedPrecondition, "NOT_CORRECTABLE");
  v1::GetPostingRequest get;
  get.set_name(deposit_posting);
  auto hold = billing_->GetPosting(admin_p_, get);
  ASSERT_TRUE(hold.ok()) << hold.status();
  // Its mirror as an ADJUST would leave the Deposit HELD and the close would
  // release what the ledger no longer holds: refused as well.
  v1::PostCorrectionRequest fix;
  fix.set_posting(deposit_posting);
  fix.set_mode(v1::PostCorrectionRequest::ADJUST);
  fix.set_reason("deposit waived");
  for (const auto& e : ReverseEntries({hold->entries().begin(), hold->entries().end()})) *fix.add_entries() = e;
  ExpectError(billing_->PostCorrection(admin_p_, fix).status(), absl::StatusCode::kFailedPrecondition,
              "NOT_CORRECTABLE");
  for (const auto& e : Published()) EXPECT_FALSE(e.has_correction_posted());
}

// A reversed usage charge still lists its owner's negated figures.
TEST_F(BillingAuditTest, AReversedUsageChargeListsTheOwnersNegatedIncome) {
  Session(absl::Hours(9), absl::Hours(10));
  Drain();
  auto charges = LabCharges();
  ASSERT_EQ(charges.size(), 1u);
  ASSERT_TRUE(Reverse(charges[0].posting()).ok());
  int corrections = 0;
  for (const auto& e : Published()) {
    if (!e.has_correction_posted()) continue;
    ++corrections;
    ASSERT_EQ(e.correction_posted().income_deltas_size(), 1);
    EXPECT_EQ(e.correction_posted().income_deltas(0).owner_organization(), kOwner);
    EXPECT_EQ(e.correction_posted().income_deltas(0).service_income().amount_minor(), -50000);
  }
  EXPECT_EQ(corrections, 1);
}

}  // namespace
}  // namespace labshare::billing
