// Figures of a day taken with what was in force on that day, not with the
// latest record (usage.proto "Use record" LEASE, "Aggregation over several
// instruments"): a lease's counted hours per day are the instrument
// version's in force at the start of the handover's day, whenever its
// events are folded (the booking stream may run behind inventory's, a
// return may fold before its handover); an open session counts in each
// stretch of the instrument's attributes it spans, compared with the owner
// of that stretch (Asia/Shanghai; instruments registered 2026-01-01).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "labshare/usage/v1/usage.pb.h"
#include "services/usage/usage_figures.h"
#include "tests/usage/usage_service_fixture.h"
#include "tests/usage/usage_test_events.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
using labshare::type::v1::SharingMode;

constexpr int64_t kHour = 3600;

class UsageInForceTest : public UsageServiceFixture {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartStore()); }  // 1 March 2027, aggregates on

  absl::Time At(int y, int m, int d, int h = 0) const {
    return absl::FromCivil(absl::CivilSecond(y, m, d, h, 0, 0), zone_);
  }

  template <typename Event>
  void Fold(const std::string& source, Event event) {
    auto s = figures_->Fold(source, test_events::Entry(std::move(event), absl::StrCat("ev", ++next_event_)));
    ASSERT_TRUE(s.ok()) << s;
  }

  // A version of instrument `id` of `owner` counting `lease_hours` a lease
  // day (0: no LEASE mode), in effect from `at` (registered 2026-01-01).
  void Version(const std::string& id, const std::string& owner, int lease_hours, absl::Time at) {
    test_events::InstrumentFacts f;
    f.owner = owner;
    f.category = "sem";
    f.state = iv::ACTIVE;
    f.create_time = At(2026, 1, 1);
    f.update_time = at;
    iv::InventoryEvent e = test_events::InstrumentChanged(id, f);
    if (lease_hours > 0) {
      auto* m = e.mutable_instrument_changed()->mutable_instrument()->add_modes();
      m->set_mode(labshare::type::v1::LEASE);
      m->mutable_lease_rules()->set_counted_hours_per_day(lease_hours);
    }
    Fold("inventory", e);
  }

  // bookings/<name> on instruments/<instrument> by users/u-<name> of `org`,
  // reserved [start, end).
  static bk::Booking Booking(const std::string& name, const std::string& instrument, SharingMode mode,
                             const std::string& org, absl::Time start, absl::Time end) {
    bk::Booking b;
    b.set_name("bookings/" + name);
    b.set_instrument("instruments/" + instrument);
    b.set_mode(mode);
    b.set_payer_organization(org);
    b.set_user_organization(org);
    b.set_user("users/u-" + name);
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(end);
    return b;
  }
  // Checked in (handed over) at `start`.
  void CheckedIn(bk::Booking b, absl::Time start) {
    b.set_state(bk::Booking::CHECKED_IN);
    *b.mutable_session()->mutable_start_time() = ToProto(start);
    bk::BookingEvent e;
    *e.mutable_booking_checked_in()->mutable_booking() = std::move(b);
    Fold("booking", e);
  }
  // Checked out (returned): the session [start, end).
  void CheckedOut(bk::Booking b, absl::Time start, absl::Time end) {
    b.set_state(bk::Booking::COMPLETED);
    *b.mutable_session()->mutable_start_time() = ToProto(start);
    *b.mutable_session()->mutable_end_time() = ToProto(end);
    bk::BookingEvent e;
    *e.mutable_booking_checked_out()->mutable_booking() = std::move(b);
    Fold("booking", e);
  }

  v1::QueryUsageResponse Query(absl::CivilDay from, absl::CivilDay to, std::vector<v1::Dimension> dims = {},
                               const v1::UsageFilter& filter = {}) {
    v1::QueryUsageRequest q;
    *q.mutable_range() = Range(from, to);
    q.set_granularity(v1::PERIOD_GRANULARITY_RANGE);
    for (auto d : dims) q.add_group_by(d);
    *q.mutable_filter() = filter;
    q.set_page_size(1000);
    auto r = figures_->QueryUsage(auditor_, q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::QueryUsageResponse();
  }
  v1::UsageFigures Totals(absl::CivilDay from, absl::CivilDay to, const v1::UsageFilter& filter = {}) {
    return Query(from, to, {}, filter).totals();
  }
  static v1::UsageFilter Owner(const std::string& owner) {
    v1::UsageFilter f;
    f.add_owner_organizations(owner);
    return f;
  }
  static v1::UsageFilter Instrument(const std::string& id) {
    v1::UsageFilter f;
    f.add_instruments("instruments/" + id);
    return f;
  }

  Principal admin_{"users/ada", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  int next_event_ = 0;
};

// LEASE: "counted_hours_per_day is the instrument's
// LeaseRules.counted_hours_per_day (inventory) in force at handover", and
// versions resolve to the day. The lathe counts 6 h a lease day until 1
// March 2026, 12 h from then; inventory's change is folded before the
// leases of February (the booking stream behind): they count 6 h a day.
TEST_F(UsageInForceTest, ALeaseDayCountsTheHoursInForceAtHandoverNotTheLatest) {
  Version("lathe", "organizations/own", 6, At(2026, 1, 1));
  Version("lathe", "organizations/own", 12, At(2026, 3, 1));
  // l1: handed over 10 Feb 00:00, returned 12 Feb 12:00 (handover and
  // return folded in order): 6 + 6 + 6 h.
  const bk::Booking l1 =
      Booking("l1", "lathe", labshare::type::v1::LEASE, "organizations/lab", At(2026, 2, 10), At(2026, 2, 20));
  CheckedIn(l1, At(2026, 2, 10));
  CheckedOut(l1, At(2026, 2, 10), At(2026, 2, 12, 12));
  // l2: handed over 20 Feb 00:00, returned 21 Feb 00:00; its return folded
  // before its handover (two replicas): 6 h, and the handover opens nothing.
  const bk::Booking l2 =
      Booking("l2", "lathe", labshare::type::v1::LEASE, "organizations/lab", At(2026, 2, 20), At(2026, 2, 25));
  CheckedOut(l2, At(2026, 2, 20), At(2026, 2, 21));
  CheckedIn(l2, At(2026, 2, 20));
  // l3: handed over 10 Mar, returned 11 Mar 12:00, under the new rules:
  // 12 + 12 h.
  const bk::Booking l3 =
      Booking("l3", "lathe", labshare::type::v1::LEASE, "organizations/lab", At(2026, 3, 10), At(2026, 3, 20));
  CheckedIn(l3, At(2026, 3, 10));
  CheckedOut(l3, At(2026, 3, 10), At(2026, 3, 11, 12));
  // A change during the day of a handover takes effect from the next
  // midnight: l4, handed over 1 Apr 12:00 after a change to 3 h at 10:00,
  // returned 2 Apr 00:00, counts 12 h of its 12 h that day.
  Version("lathe", "organizations/own", 3, At(2026, 4, 1, 10));
  const bk::Booking l4 =
      Booking("l4", "lathe", labshare::type::v1::LEASE, "organizations/lab", At(2026, 4, 1, 12), At(2026, 4, 5));
  CheckedIn(l4, At(2026, 4, 1, 12));
  CheckedOut(l4, At(2026, 4, 1, 12), At(2026, 4, 2));
  EXPECT_EQ(pool_->Command({"HLEN", "{usage}:open"})->integer, 0);
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    const v1::UsageFigures feb = Totals(absl::CivilDay(2026, 2, 1), absl::CivilDay(2026, 3, 1));
    EXPECT_EQ(feb.effective_seconds(), (3 * 6 + 6) * kHour);
    EXPECT_EQ(feb.external_seconds(), (3 * 6 + 6) * kHour);
    EXPECT_EQ(feb.completed_bookings(), 2);
    EXPECT_EQ(Totals(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1)).effective_seconds(), 2 * 12 * kHour);
    EXPECT_EQ(Totals(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1)).effective_seconds(), 12 * kHour);
  }
}

// The same for a lease still out: the open lease records the hours in force
// at its handover (6 h), not those of a version folded before the handover
// that takes effect later (12 h from 1 Feb 2027); each day up to the
// computation time (1 March 2027) counts 6 h.
TEST_F(UsageInForceTest, AnOpenLeaseCountsTheHoursInForceAtHandover) {
  Version("mill", "organizations/own", 6, At(2026, 1, 1));
  Version("mill", "organizations/own", 12, At(2027, 2, 1));
  const bk::Booking l =
      Booking("l1", "mill", labshare::type::v1::LEASE, "organizations/lab", At(2027, 1, 30), At(2027, 6, 1));
  CheckedIn(l, At(2027, 1, 30));
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    // 30 and 31 January, then the 28 days of February.
    EXPECT_EQ(Totals(absl::CivilDay(2027, 1, 1), absl::CivilDay(2027, 2, 1)).effective_seconds(), 2 * 6 * kHour);
    EXPECT_EQ(Totals(absl::CivilDay(2027, 2, 1), absl::CivilDay(2027, 3, 1)).effective_seconds(), 28 * 6 * kHour);
  }
}

// Thresholds.default_lease_counted_hours_per_day (thresholds keep no
// history): "taken as it stands when usage folds the lease's handover and
// recorded with the open lease ... changing it does not rewrite days
// already counted or leases already out". The press has no hours of its
// own: l1, handed over (8 h, the default) before the change to 6 h and
// returned after it, counts 8 h a day; l2, handed over after it, 6 h.
TEST_F(UsageInForceTest, AThresholdsChangeLeavesLeasesAlreadyOut) {
  Version("press", "organizations/own", 0, At(2026, 1, 1));
  const bk::Booking l1 =
      Booking("l1", "press", labshare::type::v1::LEASE, "organizations/lab", At(2026, 5, 4), At(2026, 5, 10));
  CheckedIn(l1, At(2026, 5, 4));
  v1::UpdateThresholdsRequest u;
  u.mutable_thresholds()->set_name("thresholds");
  u.mutable_thresholds()->set_default_lease_counted_hours_per_day(6);
  u.mutable_update_mask()->add_paths("default_lease_counted_hours_per_day");
  u.set_request_id("six-hours");
  ASSERT_TRUE(figures_->UpdateThresholds(admin_, u).ok());
  CheckedOut(l1, At(2026, 5, 4), At(2026, 5, 6));
  const bk::Booking l2 =
      Booking("l2", "press", labshare::type::v1::LEASE, "organizations/lab", At(2026, 6, 1), At(2026, 6, 10));
  CheckedIn(l2, At(2026, 6, 1));
  CheckedOut(l2, At(2026, 6, 1), At(2026, 6, 3));
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    EXPECT_EQ(Totals(absl::CivilDay(2026, 5, 1), absl::CivilDay(2026, 6, 1)).effective_seconds(), 2 * 8 * kHour);
    EXPECT_EQ(Totals(absl::CivilDay(2026, 6, 1), absl::CivilDay(2026, 7, 1)).effective_seconds(), 2 * 6 * kHour);
  }
}

// "external_seconds compares the user organisation with the owner of then",
// "use ... of a day count with the version in force at the start of that
// day", also for a session still open: the SEM passes from own to lab at 16
// March 2026 00:00 while lab's session (reserved 15 Mar 20:00 - 16 Mar
// 04:00, checked in at 20:00) is open; at 16 Mar 02:00 its 4 h of 15 March
// are external use of own's instrument, its 2 h of 16 March lab's own use.
TEST_F(UsageInForceTest, AnOpenSessionCountsInEachOwnersStretch) {
  Version("sem", "organizations/own", 0, At(2026, 1, 1));
  Version("sem", "organizations/lab", 0, At(2026, 3, 16));
  const bk::Booking b =
      Booking("b1", "sem", labshare::type::v1::ON_SITE, "organizations/lab", At(2026, 3, 15, 20), At(2026, 3, 16, 4));
  CheckedIn(b, At(2026, 3, 15, 20));
  clock_.Set(At(2026, 3, 16, 2));
  const absl::CivilDay mar(2026, 3, 1), apr(2026, 4, 1);
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    const v1::UsageFigures all = Totals(mar, apr);
    EXPECT_EQ(all.effective_seconds(), 6 * kHour);
    EXPECT_EQ(all.external_seconds(), 4 * kHour);
    EXPECT_EQ(all.completed_bookings(), 1);
    EXPECT_EQ(all.users_served(), 1);
    EXPECT_EQ(all.external_users_served(), 1);
    // The earlier owner's figures hold its stretch of the open session and
    // the completed booking (reserved start 15 March, in its stretch).
    const v1::UsageFigures own = Totals(mar, apr, Owner("organizations/own"));
    EXPECT_EQ(own.effective_seconds(), 4 * kHour);
    EXPECT_EQ(own.external_seconds(), 4 * kHour);
    EXPECT_EQ(own.completed_bookings(), 1);
    EXPECT_EQ(own.users_served(), 1);
    EXPECT_EQ(own.external_organizations_served(), 1);
    const v1::UsageFigures lab = Totals(mar, apr, Owner("organizations/lab"));
    EXPECT_EQ(lab.effective_seconds(), 2 * kHour);
    EXPECT_EQ(lab.external_seconds(), 0);
    EXPECT_EQ(lab.completed_bookings(), 0);
    EXPECT_EQ(lab.users_served(), 1);
    EXPECT_EQ(lab.external_users_served(), 0);
    // By owner organisation: one row each.
    const v1::QueryUsageResponse by_owner = Query(mar, apr, {v1::DIMENSION_OWNER_ORGANIZATION});
    ASSERT_EQ(by_owner.rows_size(), 2);
    EXPECT_EQ(by_owner.rows(0).key().owner_organization(), "organizations/lab");
    EXPECT_EQ(by_owner.rows(0).figures().effective_seconds(), 2 * kHour);
    EXPECT_EQ(by_owner.rows(0).figures().external_seconds(), 0);
    EXPECT_EQ(by_owner.rows(1).key().owner_organization(), "organizations/own");
    EXPECT_EQ(by_owner.rows(1).figures().effective_seconds(), 4 * kHour);
    EXPECT_EQ(by_owner.rows(1).figures().external_seconds(), 4 * kHour);
    EXPECT_EQ(by_owner.rows(1).figures().completed_bookings(), 1);
  }
  // Checked out at 03:00: the closed session counts the same way (5 h).
  CheckedOut(b, At(2026, 3, 15, 20), At(2026, 3, 16, 3));
  clock_.Set(At(2026, 3, 20));
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates, closed" : "counters, closed");
    const v1::UsageFigures own = Totals(mar, apr, Owner("organizations/own"));
    EXPECT_EQ(own.effective_seconds(), 4 * kHour);
    EXPECT_EQ(own.external_seconds(), 4 * kHour);
    EXPECT_EQ(own.completed_bookings(), 1);
    const v1::UsageFigures lab = Totals(mar, apr, Owner("organizations/lab"));
    EXPECT_EQ(lab.effective_seconds(), 3 * kHour);
    EXPECT_EQ(lab.external_seconds(), 0);
  }
}

// An open lease across an owner change: each stretch its days (capped by
// the hours in force at handover) and its owner; a period of the earlier
// owner alone (March) holds its part, the later one's (April) the rest.
TEST_F(UsageInForceTest, AnOpenLeaseAcrossAnOwnerChangeCountsForEachOwner) {
  Version("lathe", "organizations/own", 8, At(2026, 1, 1));
  Version("lathe", "organizations/lab", 8, At(2026, 4, 1));
  const bk::Booking l =
      Booking("l1", "lathe", labshare::type::v1::LEASE, "organizations/lab", At(2026, 3, 30), At(2026, 6, 1));
  CheckedIn(l, At(2026, 3, 30));
  clock_.Set(At(2026, 4, 3, 4));  // 30, 31 Mar, 1, 2 Apr whole, 3 Apr 4 h
  for (bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    SCOPED_TRACE(aggregates ? "aggregates" : "counters");
    const v1::UsageFigures range = Totals(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 5, 1));
    EXPECT_EQ(range.effective_seconds(), (4 * 8 + 4) * kHour);
    EXPECT_EQ(range.external_seconds(), 2 * 8 * kHour);
    const v1::UsageFigures march = Totals(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
    EXPECT_EQ(march.effective_seconds(), 2 * 8 * kHour);
    EXPECT_EQ(march.external_seconds(), 2 * 8 * kHour);
    EXPECT_EQ(march.completed_bookings(), 1);
    const v1::UsageFigures own =
        Totals(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 5, 1), Owner("organizations/own"));
    EXPECT_EQ(own.effective_seconds(), 2 * 8 * kHour);
    EXPECT_EQ(own.completed_bookings(), 1);
    const v1::UsageFigures lab =
        Totals(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 5, 1), Owner("organizations/lab"));
    EXPECT_EQ(lab.effective_seconds(), (2 * 8 + 4) * kHour);
    EXPECT_EQ(lab.external_seconds(), 0);
    EXPECT_EQ(lab.completed_bookings(), 0);
  }
}

}  // namespace
}  // namespace labshare::usage
