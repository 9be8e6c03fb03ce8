// The owner's own use of its instrument when the rate card has no OWNER
// line: inventory's CheckAccess admits it with no rate ("internal use is
// free") and booking books it; billing charged it from LookupRate's answer
// at the OWNER class, NOT_FOUND NO_RATE, so the event failed and was
// retried for ever (the outbox never trimmed past it). Now such a use, and
// its missed-booking fee, charge nothing and the event is applied.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/billing/billing_ledger_fixture.h"

namespace labshare::billing::testing {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;

class BillingOwnerUseTest : public BillingLedgerTest {
 protected:
  // olga, a user of the owner organisation qualified on tem; the rate card
  // has MEMBER lines only.
  std::string AddOwnerUserWithoutOwnerLine() {
    iv::CreateUserRequest cu;
    cu.set_user_id("olga");
    cu.mutable_user()->set_display_name("olga");
    cu.mutable_user()->set_organization("organizations/owner");
    cu.mutable_user()->add_roles(labshare::type::v1::LAB_USER);
    Inv(&iv::InventoryService::Stub::CreateUser, cu);
    iv::GrantQualificationRequest g;
    g.set_instrument("instruments/tem");
    g.set_user("users/olga");
    Inv(&iv::InventoryService::Stub::GrantQualification, g);
    return Token("olga", "owner", {Role::kLabUser});
  }

  std::vector<StreamEvent> StreamEvents() {
    std::vector<StreamEvent> out;
    for (const auto& e : Events()) {
      out.push_back({e.header().event_id(), "labshare.booking.v1.BookingEvent", e.SerializeAsString()});
    }
    return out;
  }

  int ChargeCount() {
    v1::ListChargesRequest r;
    r.set_page_size(100);
    auto charges = billing_->ListCharges(root_, r);
    EXPECT_TRUE(charges.ok()) << charges.status();
    return charges.ok() ? charges->charges_size() : -1;
  }
};

// A completed session of the owner's own user: booked (CheckAccess allows
// it, rate unset), checked in and out, billed: no charge, the event applied.
TEST_F(BillingOwnerUseTest, OwnersUseWithoutOwnerLineChargesNothing) {
  const std::string olga = AddOwnerUserWithoutOwnerLine();
  bk::Booking own;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &own, "", "users/olga").ok());
  ASSERT_EQ(own.payer_class(), labshare::type::v1::OWNER);
  Use(own, olga);  // every event applied (Bill asserts it)
  EXPECT_EQ(ChargeCount(), 0);
  // Applied once: again, nothing either.
  for (const auto& e : StreamEvents()) EXPECT_TRUE(billing_->ApplyBookingEvent(e).ok());
  EXPECT_EQ(ChargeCount(), 0);
}

// A missed booking of the owner's own user (missed_fee_bps 5000 on tem):
// no fee, through the batch path the consumer takes.
TEST_F(BillingOwnerUseTest, OwnersMissedBookingWithoutOwnerLineChargesNothing) {
  AddOwnerUserWithoutOwnerLine();
  bk::Booking own;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &own, "", "users/olga").ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));  // check-in closed: no_show_grace 15 min
  auto swept = manager_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  ASSERT_EQ(*swept, 1);
  const std::vector<StreamEvent> events = StreamEvents();
  bool missed = false;
  for (const auto& e : Events()) missed |= e.has_booking_missed();
  ASSERT_TRUE(missed);
  const std::vector<absl::Status> statuses = billing_->ApplyBookingEvents(events);
  ASSERT_EQ(statuses.size(), events.size());
  for (const auto& s : statuses) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(ChargeCount(), 0);
}

}  // namespace
}  // namespace labshare::billing::testing
