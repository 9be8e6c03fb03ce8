// A slot booking is priced with the billing terms booking pinned on it when
// it was created (Booking.billing_terms), not with the instrument's rules
// when billing consumes its event. Billing read the instrument's current
// SlotRules: a mode withdrawn meanwhile (UpdateInstrument) made every event
// of its bookings FAILED_PRECONDITION MODE_NOT_OFFERED, retried for ever
// (never charged, the outbox never trimmed past it); a rule changed between
// the use and its consumption re-priced the use. Bookings made before the
// terms were pinned (no billing_terms) whose mode was withdrawn are priced
// with the withdrawn-mode terms (billing_events.proto) and posted.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "tests/billing/billing_ledger_fixture.h"

namespace labshare::billing::testing {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
namespace tv = labshare::type::v1;

class BillingPinnedTermsTest : public BillingLedgerTest {
 protected:
  // tem's offerings from now on: ON_SITE's slot rules changed by `change`,
  // or ON_SITE withdrawn when `change` is empty (the others stay).
  void ChangeOnSite(const std::function<void(iv::SlotRules*)>& change, const std::string& request_id) {
    const iv::Instrument tem = InventoryInstrument("tem");
    std::vector<iv::ModeOffering> modes;
    for (const auto& m : tem.modes()) {
      if (m.mode() != tv::ON_SITE) {
        modes.push_back(m);
      } else if (change) {
        modes.push_back(m);
        change(modes.back().mutable_slot_rules());
      }
    }
    OfferModes("tem", modes, request_id);
  }

  bk::Booking BookTem(absl::Duration from, absl::Duration to) {
    bk::Booking b;
    grpc::Status s = Book(from, to, &b);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return b;
  }

  // ana checks `b` in at `in` and out at `out` (the service clock's times).
  void Session(const bk::Booking& b, absl::Time in, absl::Time out) {
    bk::Booking done;
    clock_.Set(in);
    bk::CheckInRequest ci;
    ci.set_name(b.name());
    grpc::Status s = Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &done, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    clock_.Set(out);
    bk::CheckOutRequest co;
    co.set_name(b.name());
    s = Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &done, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(done.state(), bk::Booking::COMPLETED);
  }

  // Every booking event so far, as the consumer reads them.
  std::vector<StreamEvent> StreamEvents() {
    std::vector<StreamEvent> out;
    for (const auto& e : Events()) {
      out.push_back({e.header().event_id(), "labshare.booking.v1.BookingEvent", e.SerializeAsString()});
    }
    return out;
  }

  // Applies `events` through the batch path the consumer takes: each must
  // be applied (the consumer acknowledges it) and applied once.
  void ApplyAll(const std::vector<StreamEvent>& events) {
    const std::vector<absl::Status> statuses = billing_->ApplyBookingEvents(events);
    ASSERT_EQ(statuses.size(), events.size());
    for (const auto& s : statuses) EXPECT_TRUE(s.ok()) << s;
    for (const auto& e : events) EXPECT_TRUE(billing_->ApplyBookingEvent(e).ok());
  }

  std::vector<v1::Charge> ChargesOf(const std::string& booking) {
    v1::ListChargesRequest r;
    r.set_reference(booking);
    auto charges = billing_->ListCharges(root_, r);
    EXPECT_TRUE(charges.ok()) << charges.status();
    if (!charges.ok()) return {};
    return {charges->charges().begin(), charges->charges().end()};
  }
};

// `events` as a booking made before booking pinned billing terms published
// them: the bookings they carry have no billing_terms.
std::vector<StreamEvent> Strip(const std::vector<bk::BookingEvent>& events) {
  std::vector<StreamEvent> out;
  for (auto e : events) {
    if (e.has_booking_created()) e.mutable_booking_created()->mutable_booking()->clear_billing_terms();
    if (e.has_booking_checked_out()) e.mutable_booking_checked_out()->mutable_booking()->clear_billing_terms();
    if (e.has_booking_missed()) e.mutable_booking_missed()->mutable_booking()->clear_billing_terms();
    if (e.has_booking_cancelled()) e.mutable_booking_cancelled()->mutable_booking()->clear_billing_terms();
    out.push_back({e.header().event_id(), "labshare.booking.v1.BookingEvent", e.SerializeAsString()});
  }
  return out;
}

// (1) ana's ON_SITE booking 09:00-10:00 on tem (ACTUAL_TIME, 15 min unit,
// 500.00 an hour); ON_SITE is withdrawn; she uses 09:00-09:50. Charged on
// the pinned terms: 50 min rounded up to 60 min, 500.00, and every event is
// applied (it was MODE_NOT_OFFERED, retried for ever).
TEST_F(BillingPinnedTermsTest, AUseAfterItsModeWasWithdrawnIsChargedOnThePinnedTerms) {
  const bk::Booking b = BookTem(absl::Hours(9), absl::Hours(10));
  ASSERT_TRUE(b.has_billing_terms());
  ChangeOnSite(nullptr, "no-on-site");
  Session(b, day_ + absl::Hours(9), day_ + absl::Hours(9) + absl::Minutes(50));
  ApplyAll(StreamEvents());
  const std::vector<v1::Charge> charges = ChargesOf(b.name());
  ASSERT_EQ(charges.size(), 1u);
  const v1::Charge& c = charges[0];
  EXPECT_EQ(c.fee_kind(), v1::USAGE);
  EXPECT_EQ(c.basis(), v1::ACTUAL_TIME);
  EXPECT_EQ(FromProto(c.billed_duration()), absl::Hours(1));
  EXPECT_EQ(FromProto(c.billing_increment()), absl::Minutes(15));
  EXPECT_EQ(c.amount().amount_minor(), 50000);
  EXPECT_FALSE(c.posting().empty());
}

// (2) Booked under RESERVED_TIME; the rule becomes ACTUAL_TIME before the
// check-out. Charged on the reserved hour (500.00), not on the 20 minutes
// used (rounded to 30: 250.00).
TEST_F(BillingPinnedTermsTest, ABasisChangedAfterBookingDoesNotRepriceTheUse) {
  ChangeOnSite([](iv::SlotRules* r) { r->set_billing_basis(iv::RESERVED_TIME); }, "reserved");
  const bk::Booking b = BookTem(absl::Hours(9), absl::Hours(10));
  ASSERT_EQ(b.billing_terms().billing_basis(), bk::BillingTerms::RESERVED_TIME);
  clock_.Set(day_ + absl::Hours(8));
  ChangeOnSite([](iv::SlotRules* r) { r->set_billing_basis(iv::ACTUAL_TIME); }, "actual");
  Session(b, day_ + absl::Hours(9), day_ + absl::Hours(9) + absl::Minutes(20));
  ApplyAll(StreamEvents());
  const std::vector<v1::Charge> charges = ChargesOf(b.name());
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(charges[0].basis(), v1::RESERVED_TIME);
  EXPECT_EQ(FromProto(charges[0].billed_duration()), absl::Hours(1));
  EXPECT_EQ(charges[0].amount().amount_minor(), 50000);
}

// (3) A booking missed under missed_fee_bps 5000, the rule set to 0 before
// billing consumes MISSED: the pinned 50 % of the reserved hour, 250.00. A
// late cancellation under late_cancel_fee_bps 2500, the rule raised to
// 10000: the pinned 25 %, 125.00.
TEST_F(BillingPinnedTermsTest, FeesChangedBeforeBillingConsumesThemAreThePinnedOnes) {
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
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));  // no_show_grace 15 min
  auto swept = manager_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  ASSERT_EQ(*swept, 1);
  ChangeOnSite(
      [](iv::SlotRules* r) {
        r->set_missed_fee_bps(0);
        r->set_late_cancel_fee_bps(10000);
      },
      "fees-changed");
  ApplyAll(StreamEvents());
  const std::vector<v1::Charge> fee = ChargesOf(missed.name());
  ASSERT_EQ(fee.size(), 1u);
  EXPECT_EQ(fee[0].fee_kind(), v1::MISSED_BOOKING_FEE);
  EXPECT_EQ(fee[0].fee_bps(), 5000);
  EXPECT_EQ(fee[0].base_amount().amount_minor(), 50000);
  EXPECT_EQ(fee[0].amount().amount_minor(), 25000);
  const std::vector<v1::Charge> late = ChargesOf(cancelled.name());
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].fee_kind(), v1::LATE_CANCELLATION_FEE);
  EXPECT_EQ(late[0].fee_bps(), 2500);
  EXPECT_EQ(late[0].amount().amount_minor(), 12500);
}

// (4) Bookings made before booking pinned terms (their events carry no
// billing_terms), ON_SITE then withdrawn: the use 09:00-09:50 is charged on
// the withdrawn-mode terms (actual time, no unit: 50 min, 416.67); the
// missed one is charged no fee; every event is applied (no eternal retry).
TEST_F(BillingPinnedTermsTest, AnOldBookingOfAWithdrawnModeIsPricedWithTheFallbackAndPosted) {
  const bk::Booking used = BookTem(absl::Hours(9), absl::Hours(10));
  const bk::Booking missed = BookTem(absl::Hours(12), absl::Hours(13));
  ChangeOnSite(nullptr, "no-on-site");
  Session(used, day_ + absl::Hours(9), day_ + absl::Hours(9) + absl::Minutes(50));
  // No ON_SITE rules, no grace: the check-in window closes at the reserved end.
  clock_.Set(day_ + absl::Hours(13));
  auto swept = manager_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  ASSERT_EQ(*swept, 1);
  const std::vector<bk::BookingEvent> events = Events();
  bool saw_missed = false, saw_checked_out = false;
  for (const auto& e : events) {
    saw_missed |= e.has_booking_missed();
    saw_checked_out |= e.has_booking_checked_out();
  }
  ASSERT_TRUE(saw_missed && saw_checked_out);
  ApplyAll(Strip(events));
  const std::vector<v1::Charge> charges = ChargesOf(used.name());
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(charges[0].fee_kind(), v1::USAGE);
  EXPECT_EQ(charges[0].basis(), v1::ACTUAL_TIME);
  EXPECT_EQ(FromProto(charges[0].billed_duration()), absl::Minutes(50));
  EXPECT_EQ(FromProto(charges[0].billing_increment()), absl::ZeroDuration());
  EXPECT_EQ(charges[0].amount().amount_minor(), 41667);
  EXPECT_FALSE(charges[0].posting().empty());
  EXPECT_TRUE(ChargesOf(missed.name()).empty());
}

// An old booking whose mode is still offered: the instrument's rules of its
// mode when billing consumes the event, as before (ACTUAL_TIME, 15 min unit).
TEST_F(BillingPinnedTermsTest, AnOldBookingOfAnOfferedModeIsPricedWithTheCurrentRules) {
  const bk::Booking b = BookTem(absl::Hours(9), absl::Hours(10));
  ChangeOnSite([](iv::SlotRules* r) { *r->mutable_billing_unit() = ToProto(absl::Minutes(10)); }, "ten-minutes");
  Session(b, day_ + absl::Hours(9), day_ + absl::Hours(9) + absl::Minutes(41));
  ApplyAll(Strip(Events()));
  const std::vector<v1::Charge> charges = ChargesOf(b.name());
  ASSERT_EQ(charges.size(), 1u);
  EXPECT_EQ(FromProto(charges[0].billed_duration()), absl::Minutes(50));
  EXPECT_EQ(charges[0].amount().amount_minor(), 41667);
}

}  // namespace
}  // namespace labshare::billing::testing
