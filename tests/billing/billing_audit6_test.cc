// Billing against black-box probes of 2026-12-07 (billing.proto and
// booking.proto as the contract; every case fails on the code before):
// 1. CreateSubsidyPool checks the pool's currency against ISO 4217 before
//    the cap: "XXY" (a valid shape, not a currency) with a cap in CNY is
//    INVALID_FIELD subsidy_pool.currency_code, not the cap's currency.
// 2. A technical-service order cancelled late is charged the
//    late_cancel_fee_bps in force when it was cancelled, which booking
//    pins on the order (ServiceOrder.late_cancel_fee_bps): a rule changed,
//    or TECHNICAL_SERVICE withdrawn, before billing applies the
//    cancellation does not re-price it. An order cancelled before the fee
//    was pinned is charged at the rule when billing applies it, as before.
//
// Runs billing in process over the booking fixture (real Redis, inventory
// and booking over real gRPC, fake clock).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "tests/billing/billing_ledger_fixture.h"

namespace labshare::billing {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
namespace tv = labshare::type::v1;

class BillingAudit6Test : public testing::BillingLedgerTest {
 protected:
  // ------------------------------------------------------------ pools
  static v1::SubsidyPool CappedPool(const std::string& currency) {
    v1::SubsidyPool pool;
    pool.set_display_name("SME vouchers");
    pool.set_currency_code(currency);
    pool.set_percentage_bps(3000);
    *pool.mutable_cap_per_organization() = MakeMoney("CNY", 500000);
    pool.set_cap_period_kind(v1::MONTHLY);
    return pool;
  }
  // The field of the one BadRequest violation of `s`.
  static std::string FieldOf(const absl::Status& s) {
    const auto violations = FieldViolationsOf(s);
    return violations.size() == 1 ? violations.front().field : "";
  }

  // ------------------------------------------------------------ orders
  // ana's order of 3 samples on tem, quoted (3 x 200.00 + 300.00 staff
  // time + 50.00 consumables), accepted, samples received, its run
  // scheduled over [day + 9 h, day + 11 h).
  bk::ServiceOrder ScheduledOrder() {
    bk::CreateServiceOrderRequest co;
    co.mutable_service_order()->set_instrument("instruments/tem");
    co.mutable_service_order()->set_service_entry_id("imaging");
    co.mutable_service_order()->set_sample_count(3);
    co.mutable_service_order()->set_sample_description("membrane protein grids");
    bk::ServiceOrder o, out;
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::CreateServiceOrder, co, &o, ana_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::IssueQuoteRequest q;
    q.set_name(o.name());
    *q.mutable_quote()->mutable_per_sample_fee() = MakeMoney("CNY", 20000);
    *q.mutable_quote()->mutable_staff_time_fee() = MakeMoney("CNY", 30000);
    *q.mutable_quote()->mutable_consumables() = MakeMoney("CNY", 5000);
    *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24 * 14));
    s = Call(stub_.get(), &bk::BookingService::Stub::IssueQuote, q, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::AcceptQuoteRequest a;
    a.set_name(o.name());
    a.set_quote_etag(out.quote().quote_etag());
    s = Call(stub_.get(), &bk::BookingService::Stub::AcceptQuote, a, &out, ana_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::ReceiveSamplesRequest rs;
    rs.set_name(o.name());
    rs.set_received_sample_count(3);
    s = Call(stub_.get(), &bk::BookingService::Stub::ReceiveSamples, rs, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    bk::ScheduleServiceRequest sch;
    sch.set_name(o.name());
    *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
    *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
    s = Call(stub_.get(), &bk::BookingService::Stub::ScheduleService, sch, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  // `o` cancelled at `at` by `token`.
  bk::ServiceOrder Cancel(const bk::ServiceOrder& o, absl::Time at, const std::string& token) {
    clock_.Set(at);
    bk::CancelOrderRequest c;
    c.set_name(o.name());
    c.set_reason("samples degraded");
    bk::ServiceOrder out;
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::CancelOrder, c, &out, token);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.state(), bk::ServiceOrder::CANCELLED);
    return out;
  }
  // tem's TECHNICAL_SERVICE offering from now on: its slot rules changed
  // by `change`, or withdrawn (with its service catalogue) when `change`
  // is empty.
  void ChangeTechnicalService(const std::function<void(iv::SlotRules*)>& change, const std::string& request_id) {
    const iv::Instrument tem = InventoryInstrument("tem");
    iv::UpdateInstrumentRequest u;
    u.mutable_instrument()->set_name("instruments/tem");
    for (const auto& m : tem.modes()) {
      if (m.mode() != tv::TECHNICAL_SERVICE) {
        *u.mutable_instrument()->add_modes() = m;
      } else if (change) {
        iv::ModeOffering* changed = u.mutable_instrument()->add_modes();
        *changed = m;
        change(changed->mutable_slot_rules());
      }
    }
    u.mutable_update_mask()->add_paths("modes");
    if (!change) u.mutable_update_mask()->add_paths("service_catalogue");
    u.set_request_id(request_id);
    Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  }
  // Every booking event so far, `edit`ed, applied once each.
  void ApplyAll(const std::function<void(bk::BookingEvent&)>& edit = nullptr) {
    std::vector<StreamEvent> events;
    for (auto e : Events()) {
      if (edit) edit(e);
      events.push_back({e.header().event_id(), "labshare.booking.v1.BookingEvent", e.SerializeAsString()});
    }
    const std::vector<absl::Status> statuses = billing_->ApplyBookingEvents(events);
    ASSERT_EQ(statuses.size(), events.size());
    for (const auto& s : statuses) EXPECT_TRUE(s.ok()) << s;
  }
  std::vector<v1::Charge> LateFees(const std::string& order) {
    v1::ListChargesRequest r;
    r.set_reference(order);
    auto charges = billing_->ListCharges(root_, r);
    EXPECT_TRUE(charges.ok()) << charges.status();
    std::vector<v1::Charge> out;
    if (!charges.ok()) return out;
    for (const auto& c : charges->charges()) {
      if (c.fee_kind() == v1::LATE_CANCELLATION_FEE) out.push_back(c);
    }
    return out;
  }
};

// ------------------------------------------------------------ 1. pool currency first

// CreateSubsidyPool: "currency_code empty or not ISO 4217". "XXY" with a
// cap in CNY was INVALID_FIELD subsidy_pool.cap_per_organization
// .currency_code (the shape passed, the cap was checked, the ISO list
// after it).
TEST_F(BillingAudit6Test, ACurrencyNotInIso4217IsNamedBeforeTheCap) {
  v1::CreateSubsidyPoolRequest r;
  r.set_subsidy_pool_id("sme");
  *r.mutable_subsidy_pool() = CappedPool("XXY");
  absl::Status s = billing_->CreateSubsidyPool(root_, r).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD") << s;
  EXPECT_EQ(FieldOf(s), "subsidy_pool.currency_code") << s;
  // Without a cap, and for a bad shape, as before.
  r.mutable_subsidy_pool()->clear_cap_per_organization();
  EXPECT_EQ(FieldOf(billing_->CreateSubsidyPool(root_, r).status()), "subsidy_pool.currency_code");
  *r.mutable_subsidy_pool() = CappedPool("cny");
  EXPECT_EQ(FieldOf(billing_->CreateSubsidyPool(root_, r).status()), "subsidy_pool.currency_code");
  // An ISO currency with a cap in another one: the cap's currency.
  *r.mutable_subsidy_pool() = CappedPool("USD");
  EXPECT_EQ(FieldOf(billing_->CreateSubsidyPool(root_, r).status()),
            "subsidy_pool.cap_per_organization.currency_code");
  // Still checked after display_name and percentage_bps.
  *r.mutable_subsidy_pool() = CappedPool("XXY");
  r.mutable_subsidy_pool()->set_percentage_bps(0);
  EXPECT_EQ(FieldOf(billing_->CreateSubsidyPool(root_, r).status()), "subsidy_pool.percentage_bps");
  // Nothing was created.
  v1::GetSubsidyPoolRequest g;
  g.set_name("subsidyPools/sme");
  EXPECT_EQ(billing_->GetSubsidyPool(root_, g).status().code(), absl::StatusCode::kNotFound);
  // The valid pool is created.
  *r.mutable_subsidy_pool() = CappedPool("CNY");
  EXPECT_TRUE(billing_->CreateSubsidyPool(root_, r).ok());
}

// ------------------------------------------------------------ 2. an order's pinned late fee

// ana cancels 1 h before the run (late_cancel_notice 24 h) while the
// TECHNICAL_SERVICE rule says 2500 bps; the rule becomes 5000 bps before
// billing applies the cancellation. Charged 25 % of the quote's total
// (600.00 + 300.00 + 50.00 = 950.00): 237.50, not 475.00.
TEST_F(BillingAudit6Test, ALateCancelledOrderIsChargedTheFeeInForceWhenItWasCancelled) {
  const bk::ServiceOrder o = ScheduledOrder();
  const bk::ServiceOrder cancelled = Cancel(o, day_ + absl::Hours(8), ana_);
  ASSERT_TRUE(cancelled.late_cancellation());
  ASSERT_TRUE(cancelled.has_late_cancel_fee_bps());
  EXPECT_EQ(cancelled.late_cancel_fee_bps(), 2500);
  ChangeTechnicalService([](iv::SlotRules* r) { r->set_late_cancel_fee_bps(5000); }, "fee-5000");
  ApplyAll();
  const std::vector<v1::Charge> fees = LateFees(o.name());
  ASSERT_EQ(fees.size(), 1u);
  EXPECT_EQ(fees[0].amount().amount_minor(), 23750);
  EXPECT_EQ(fees[0].rate().unit_price().amount_minor(), 95000);
}

// TECHNICAL_SERVICE withdrawn after the late cancellation: still charged
// at the pinned 2500 bps (it was 0: nothing charged).
TEST_F(BillingAudit6Test, ALateCancelledOrderIsChargedAfterTheModeWasWithdrawn) {
  const bk::ServiceOrder o = ScheduledOrder();
  ASSERT_TRUE(Cancel(o, day_ + absl::Hours(8), ana_).late_cancellation());
  ChangeTechnicalService(nullptr, "no-technical-service");
  ApplyAll();
  const std::vector<v1::Charge> fees = LateFees(o.name());
  ASSERT_EQ(fees.size(), 1u);
  EXPECT_EQ(fees[0].amount().amount_minor(), 23750);
}

// Cancellations that are not late pin nothing: early by the client, late
// by owner staff.
TEST_F(BillingAudit6Test, OnlyALateCancellationPinsAFee) {
  const bk::ServiceOrder early = Cancel(ScheduledOrder(), day_ - absl::Hours(20), ana_);
  EXPECT_FALSE(early.late_cancellation());
  EXPECT_FALSE(early.has_late_cancel_fee_bps());
  const bk::ServiceOrder by_staff = Cancel(ScheduledOrder(), day_ + absl::Hours(8), staff_);
  EXPECT_FALSE(by_staff.late_cancellation());
  EXPECT_FALSE(by_staff.has_late_cancel_fee_bps());
  ApplyAll();
  EXPECT_TRUE(LateFees(early.name()).empty());
  EXPECT_TRUE(LateFees(by_staff.name()).empty());
}

// An order cancelled late by code that did not pin the fee (its events
// carry no late_cancel_fee_bps): the rule when billing applies it, 50 %.
TEST_F(BillingAudit6Test, AnOrderCancelledBeforeTheFeeWasPinnedIsChargedTheRuleWhenApplied) {
  const bk::ServiceOrder o = ScheduledOrder();
  ASSERT_TRUE(Cancel(o, day_ + absl::Hours(8), ana_).late_cancellation());
  ChangeTechnicalService([](iv::SlotRules* r) { r->set_late_cancel_fee_bps(5000); }, "fee-5000");
  ApplyAll([](bk::BookingEvent& e) {
    if (e.has_service_order_cancelled()) e.mutable_service_order_cancelled()->mutable_service_order()->clear_late_cancel_fee_bps();
  });
  const std::vector<v1::Charge> fees = LateFees(o.name());
  ASSERT_EQ(fees.size(), 1u);
  EXPECT_EQ(fees[0].amount().amount_minor(), 47500);
}

}  // namespace
}  // namespace labshare::billing
