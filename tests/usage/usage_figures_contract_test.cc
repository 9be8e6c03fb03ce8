// The figures as usage.proto ("Definitions", UsageFigures, Dimension) and
// DOMAIN.md define them, where ComputeMany, the reports and the counting
// once disagreed with them (Asia/Shanghai, 2026; every instrument registered
// 2026-01-01 00:00, 24 available hours a day; March has 31 days =
// 2,678,400 s):
//   - use and postings of an instrument not in service in a bucket (retired)
//     still count there; retirement is when the instrument became RETIRED,
//     not its latest update;
//   - user-side keys (sharing mode, user organisation) do not narrow the
//     instrument set;
//   - time in instrument state MAINTENANCE is maintenance, united with the
//     windows;
//   - assessments use the instrument's version at the end of the range;
//   - cancellations count only for confirmed bookings, a lessee's own lease
//     cancellation counts, an outage counts a service order once;
//   - an export with a missing audit entry fails; an unknown granularity is
//     rejected;
//   - ON_SITE time, bookings and users served count for the user's
//     organisation (Booking.user_organization), not for a payer named by
//     owner staff; older events without it count for the payer;
//   - time counts on whole-second instants (fractions dropped before
//     subtracting), so the days of a stretch add up to the stretch;
//   - only LEASE days are capped: the 25-hour day where daylight saving
//     ends counts 25 hours of an on-site session (Europe/Berlin).
#include <gtest/gtest.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "labshare/usage/v1/usage.pb.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_internal.h"
#include "tests/support/page_tokens.h"
#include "tests/usage/usage_service_fixture.h"
#include "tests/usage/usage_test_events.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
using labshare::type::v1::SharingMode;

constexpr int64_t kDay = 86400;
constexpr int64_t kMarch = 31 * kDay;  // 2,678,400

class UsageFiguresContractTest : public UsageServiceFixture {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartStore()); }  // 1 March 2027, aggregates on

  absl::Time At(int y, int m, int d, int h = 0) const { return absl::FromCivil(absl::CivilSecond(y, m, d, h, 0, 0), zone_); }

  template <typename Event>
  StreamEvent Stream(Event event) {
    return test_events::Entry(std::move(event), absl::StrCat("ev", ++next_event_));
  }
  template <typename Event>
  void Fold(const std::string& source, Event event) {
    ASSERT_TRUE(figures_->Fold(source, Stream(std::move(event))).ok());
  }

  // A version of instrument `id` (owner organizations/own unless given),
  // taking effect at `at`.
  void Version(const std::string& id, iv::InstrumentState state, absl::Time at,
               const std::string& owner = "organizations/own", const std::string& category = "sem") {
    test_events::InstrumentFacts f;
    f.owner = owner;
    f.category = category;
    f.state = state;
    f.create_time = At(2026, 1, 1);
    f.update_time = at;
    Fold("inventory", test_events::InstrumentChanged(id, f));
  }
  void Register(const std::string& id, const std::string& owner = "organizations/own") {
    Version(id, iv::ACTIVE, At(2026, 1, 1), owner);
  }

  // Service income of organizations/lab on i<id>, ON_SITE.
  void Income(const std::string& id, int64_t amount, absl::Time at, bool correction) {
    Fold("billing", test_events::ServiceIncome(id, "organizations/lab", "CNY", amount, at, correction));
  }

  static bk::Booking Booking(const std::string& name, const std::string& instrument, SharingMode mode,
                             const std::string& payer, absl::Time start, absl::Time end) {
    bk::Booking b;
    b.set_name("bookings/" + name);
    b.set_instrument("instruments/" + instrument);
    b.set_mode(mode);
    b.set_payer_organization(payer);
    b.set_user("users/u-" + name);
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(end);
    return b;
  }
  // Checked in at its reserved start, not checked out (an open session).
  void CheckedIn(bk::Booking b) {
    b.set_state(bk::Booking::CHECKED_IN);
    *b.mutable_session()->mutable_start_time() = b.reserved_interval().start_time();
    bk::BookingEvent e;
    *e.mutable_booking_checked_in()->mutable_booking() = b;
    Fold("booking", e);
  }
  // A session [start, end) checked out.
  void Used(bk::Booking b) {
    b.set_state(bk::Booking::COMPLETED);
    *b.mutable_session()->mutable_start_time() = b.reserved_interval().start_time();
    *b.mutable_session()->mutable_end_time() = b.reserved_interval().end_time();
    bk::BookingEvent e;
    *e.mutable_booking_checked_out()->mutable_booking() = b;
    Fold("booking", e);
  }
  bk::BookingEvent Cancelled(bk::Booking b, bk::Booking::State previous, bk::Booking::CancellationInitiator initiator,
                             bool outage, const std::string& actor_organization = "") {
    b.set_state(bk::Booking::CANCELLED);
    bk::BookingEvent e;
    e.mutable_header()->set_actor_organization(actor_organization);
    auto* c = e.mutable_booking_cancelled();
    *c->mutable_booking() = b;
    c->set_previous_state(previous);
    c->set_initiator(initiator);
    c->set_cancelled_by_outage(outage);
    return e;
  }

  v1::QueryUsageResponse Query(absl::CivilDay from, absl::CivilDay to, v1::PeriodGranularity g,
                               std::vector<v1::Dimension> dims = {}, const v1::UsageFilter& filter = {}) {
    v1::QueryUsageRequest q;
    *q.mutable_range() = Range(from, to);
    q.set_granularity(g);
    for (auto d : dims) q.add_group_by(d);
    *q.mutable_filter() = filter;
    q.set_page_size(1000);
    auto r = figures_->QueryUsage(auditor_, q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::QueryUsageResponse();
  }
  v1::UsageFigures March(const v1::UsageFilter& filter = {}) {
    return Query(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1), v1::PERIOD_GRANULARITY_RANGE, {}, filter)
        .totals();
  }
  static v1::UsageFilter OnlyInstrument(const std::string& id) {
    v1::UsageFilter f;
    f.add_instruments("instruments/" + id);
    return f;
  }

  int next_event_ = 0;
};

// A charge in February, its reversal in March after the instrument was
// retired (1 March): March carries the reversal, the months add up to the
// year, with and without the aggregates.
TEST_F(UsageFiguresContractTest, ReversalAfterRetirementCountsInItsMonth) {
  Register("i1");
  Version("i1", iv::RETIRED, At(2026, 3, 1));
  Income("i1", 100000, At(2026, 2, 20), /*correction=*/false);
  Income("i1", -100000, At(2026, 3, 15), /*correction=*/true);
  for (const v1::UsageFilter& filter : {v1::UsageFilter(), OnlyInstrument("i1")}) {
    const int64_t from_aggregates = figures_->buckets_from_aggregates();
    v1::QueryUsageResponse r =
        Query(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1), v1::PERIOD_GRANULARITY_MONTH, {}, filter);
    // Unfiltered, the months come from the aggregates; filtered, from the counters.
    EXPECT_EQ(figures_->buckets_from_aggregates() > from_aggregates, filter.instruments().empty());
    int64_t sum = 0;
    std::map<int, int64_t> by_month;
    std::map<int, int64_t> count_by_month;
    for (const auto& row : r.rows()) {
      const int month = absl::ToCivilMonth(FromProto(row.period().start_time()), zone_).month();
      by_month[month] = row.figures().service_income().amount_minor();
      count_by_month[month] = row.figures().instrument_count();
      sum += row.figures().service_income().amount_minor();
    }
    EXPECT_EQ(by_month[2], 100000);
    EXPECT_EQ(by_month[3], -100000);
    EXPECT_EQ(count_by_month[2], 1);
    EXPECT_EQ(count_by_month[3], 0);  // not in service in March: no instrument set
    EXPECT_EQ(sum, r.totals().service_income().amount_minor());
    EXPECT_EQ(r.totals().service_income().amount_minor(), 0);
    EXPECT_EQ(March(filter).service_income().amount_minor(), -100000);
    EXPECT_EQ(March(filter).calendar_seconds(), 0);
  }
}

// Retired 1 March; a facility operator change on 1 June sets update_time on
// the retired instrument: April still has no i1 in service.
TEST_F(UsageFiguresContractTest, RetirementIsTheFirstRetiredVersionNotTheLatestUpdate) {
  Register("i1");
  Version("i1", iv::RETIRED, At(2026, 3, 1));
  Version("i1", iv::RETIRED, At(2026, 6, 1));  // operator change
  v1::UsageFigures april =
      Query(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1), v1::PERIOD_GRANULARITY_RANGE, {},
            OnlyInstrument("i1"))
          .totals();
  EXPECT_EQ(april.instrument_count(), 0);
  EXPECT_EQ(april.calendar_seconds(), 0);
  v1::UsageFigures february =
      Query(absl::CivilDay(2026, 2, 1), absl::CivilDay(2026, 3, 1), v1::PERIOD_GRANULARITY_RANGE, {},
            OnlyInstrument("i1"))
          .totals();
  EXPECT_EQ(february.instrument_count(), 1);
  EXPECT_EQ(february.calendar_seconds(), 28 * kDay);
}

// i1 ON_SITE 2 h by organisation x, i2 TECHNICAL_SERVICE 3 h for client y:
// each mode's (and each user organisation's) row has the instrument set of
// both, so the rows add up to the total utilization.
TEST_F(UsageFiguresContractTest, UserSideRowsKeepTheWholeInstrumentSet) {
  Register("i1");
  Register("i2");
  Used(Booking("b1", "i1", labshare::type::v1::ON_SITE, "organizations/x", At(2026, 3, 5, 10), At(2026, 3, 5, 12)));
  Used(Booking("b2", "i2", labshare::type::v1::TECHNICAL_SERVICE, "organizations/y", At(2026, 3, 6, 10),
               At(2026, 3, 6, 13)));
  for (v1::Dimension d : {v1::DIMENSION_SHARING_MODE, v1::DIMENSION_USER_ORGANIZATION}) {
    v1::QueryUsageResponse r =
        Query(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1), v1::PERIOD_GRANULARITY_RANGE, {d});
    ASSERT_EQ(r.rows_size(), 2) << d;
    int64_t eff = 0;
    for (const auto& row : r.rows()) {
      EXPECT_EQ(row.figures().instrument_count(), 2) << d;
      EXPECT_EQ(row.figures().calendar_seconds(), 2 * kMarch) << d;
      EXPECT_EQ(row.figures().available_seconds(), 2 * kMarch) << d;
      EXPECT_EQ(row.figures().utilization().numerator(), row.figures().effective_seconds());
      EXPECT_EQ(row.figures().utilization().denominator(), 2 * kMarch);
      eff += row.figures().effective_seconds();
    }
    EXPECT_EQ(r.rows(0).figures().effective_seconds() + r.rows(1).figures().effective_seconds(), 5 * 3600);
    EXPECT_EQ(r.totals().instrument_count(), 2);
    EXPECT_EQ(r.totals().calendar_seconds(), 2 * kMarch);
    EXPECT_EQ(eff, r.totals().effective_seconds());
  }
  // An instrument-side key still narrows: i1's row has i1 alone.
  v1::QueryUsageResponse by_instrument =
      Query(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1), v1::PERIOD_GRANULARITY_RANGE,
            {v1::DIMENSION_INSTRUMENT, v1::DIMENSION_SHARING_MODE});
  ASSERT_EQ(by_instrument.rows_size(), 2);
  for (const auto& row : by_instrument.rows()) {
    EXPECT_EQ(row.figures().instrument_count(), 1);
    EXPECT_EQ(row.figures().calendar_seconds(), kMarch);
  }
}

// MAINTENANCE from 10 March 00:00 to 12 March 00:00 (+08): 2 days of
// maintenance. i2 also has a window 11 March 12:00 .. 13 March 00:00,
// overlapping: the union is 10 March .. 13 March, 3 days.
TEST_F(UsageFiguresContractTest, TimeInStateMaintenanceIsMaintenance) {
  for (const std::string id : {"i1", "i2"}) {
    Register(id);
    Version(id, iv::MAINTENANCE, At(2026, 3, 10));
    Version(id, iv::ACTIVE, At(2026, 3, 12));
  }
  iv::InventoryEvent w;
  w.mutable_maintenance_window_changed()->set_instrument("instruments/i2");
  auto* mw = w.mutable_maintenance_window_changed()->mutable_maintenance_window();
  mw->set_name("instruments/i2/maintenanceWindows/w1");
  mw->set_state(iv::SCHEDULED);
  *mw->mutable_interval()->mutable_start_time() = ToProto(At(2026, 3, 11, 12));
  *mw->mutable_interval()->mutable_end_time() = ToProto(At(2026, 3, 13));
  Fold("inventory", w);
  v1::UsageFigures i1 = March(OnlyInstrument("i1"));
  EXPECT_EQ(i1.calendar_seconds(), kMarch);
  EXPECT_EQ(i1.maintenance_seconds(), 172800);
  EXPECT_EQ(i1.available_seconds(), 2505600);
  v1::UsageFigures i2 = March(OnlyInstrument("i2"));
  EXPECT_EQ(i2.maintenance_seconds(), 3 * kDay);
  EXPECT_EQ(i2.available_seconds(), kMarch - 3 * kDay);
  // Still in MAINTENANCE at the end of a range: to its end.
  Register("i3");
  Version("i3", iv::MAINTENANCE, At(2026, 3, 30));
  EXPECT_EQ(March(OnlyInstrument("i3")).maintenance_seconds(), 2 * kDay);
}

// Transferred from organisation a to b (and from category sem to xrd) on
// 1 February 2027: the 2026 assessments are of the 2026 version.
TEST_F(UsageFiguresContractTest, AssessmentsUseTheVersionAtTheEndOfTheRange) {
  Version("i1", iv::ACTIVE, At(2026, 1, 1), "organizations/a", "sem");
  Version("i1", iv::ACTIVE, At(2027, 2, 1), "organizations/b", "xrd");
  v1::ListIdleInstrumentsRequest idle;
  *idle.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 7, 1));
  idle.mutable_filter()->add_owner_organizations("organizations/a");
  auto listed = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->instruments_size(), 1);
  EXPECT_EQ(listed->instruments(0).owner_organization(), "organizations/a");
  EXPECT_EQ(listed->instruments(0).category(), "sem");
  EXPECT_TRUE(listed->instruments(0).idle());
  idle.mutable_filter()->set_owner_organizations(0, "organizations/b");
  listed = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->instruments_size(), 0);

  v1::GetAnnualReportRequest report;
  report.set_year(2026);
  report.set_page_size(100);
  auto annual = figures_->GetAnnualReport(auditor_, report);
  ASSERT_TRUE(annual.ok()) << annual.status();
  ASSERT_EQ(annual->instruments_size(), 1);
  EXPECT_EQ(annual->instruments(0).owner_organization(), "organizations/a");
  EXPECT_EQ(annual->instruments(0).category(), "sem");
  ASSERT_EQ(annual->category_summaries_size(), 1);
  EXPECT_EQ(annual->category_summaries(0).key().category(), "sem");
  EXPECT_EQ(annual->category_summaries(0).counts().idle(), 1);
  report.mutable_scope()->add_owner_organizations("organizations/a");
  annual = figures_->GetAnnualReport(auditor_, report);
  ASSERT_TRUE(annual.ok()) << annual.status();
  ASSERT_EQ(annual->instruments_size(), 1);
  EXPECT_EQ(annual->instruments(0).instrument(), "instruments/i1");
}

// cancelled_bookings and outage_cancelled_bookings are "Of those"
// (confirmed bookings): a request cancelled while pending is none of them;
// UNSPECIFIED (older streams) is confirmed.
TEST_F(UsageFiguresContractTest, OnlyConfirmedBookingsCountAsCancelled) {
  Register("i1");
  const auto on_site = labshare::type::v1::ON_SITE;
  auto b = [&](const std::string& name) {
    return Booking(name, "i1", on_site, "organizations/lab", At(2026, 3, 20, 9), At(2026, 3, 20, 10));
  };
  Fold("booking", Cancelled(b("p1"), bk::Booking::PENDING_APPROVAL, bk::Booking::BOOKER, false));
  Fold("booking", Cancelled(b("p2"), bk::Booking::PENDING_APPROVAL, bk::Booking::PARENT_RESOURCE, true));
  Fold("booking", Cancelled(b("c1"), bk::Booking::CONFIRMED, bk::Booking::BOOKER, false));
  Fold("booking", Cancelled(b("c2"), bk::Booking::STATE_UNSPECIFIED, bk::Booking::BOOKER, false));
  Fold("booking", Cancelled(b("c3"), bk::Booking::CONFIRMED, bk::Booking::PARENT_RESOURCE, true));
  v1::UsageFigures m = March();
  EXPECT_EQ(m.cancelled_bookings(), 2);
  EXPECT_EQ(m.outage_cancelled_bookings(), 1);
}

// CancelLease names the lease (PARENT_RESOURCE) as initiator whoever cancels:
// the lessee's own cancellation after approval is a cancellation by the user
// side, the owner's is not.
TEST_F(UsageFiguresContractTest, ALesseeCancellingAnApprovedLeaseCounts) {
  Register("i1");
  const auto lease = labshare::type::v1::LEASE;
  auto b = [&](const std::string& name) {
    return Booking(name, "i1", lease, "organizations/lab", At(2026, 3, 20), At(2026, 3, 25));
  };
  Fold("booking", Cancelled(b("l1"), bk::Booking::CONFIRMED, bk::Booking::PARENT_RESOURCE, false, "organizations/lab"));
  Fold("booking", Cancelled(b("l2"), bk::Booking::CONFIRMED, bk::Booking::PARENT_RESOURCE, false, "organizations/own"));
  Fold("booking",
       Cancelled(b("l3"), bk::Booking::PENDING_APPROVAL, bk::Booking::PARENT_RESOURCE, false, "organizations/lab"));
  EXPECT_EQ(March().cancelled_bookings(), 1);
}

// A service order is one booking however often its run is rescheduled: two
// runs of order o1 cancelled by outages count once (in the month its quote
// was accepted); two runs of o2 cancelled in one fold step, once too.
TEST_F(UsageFiguresContractTest, AnOutageCountsAServiceOrderOnce) {
  Register("i1");
  const auto ts = labshare::type::v1::TECHNICAL_SERVICE;
  for (const std::string order : {"o1", "o2"}) {
    Fold("booking",
         test_events::QuoteAccepted(test_events::ServiceOrder(order, "i1", "organizations/lab", At(2026, 3, 1)),
                                    At(2026, 3, 2)));
  }
  auto run = [&](const std::string& name, const std::string& order, int day) {
    bk::Booking b = Booking(name, "i1", ts, "organizations/lab", At(2026, 4, day, 9), At(2026, 4, day, 12));
    b.set_service_order("serviceOrders/" + order);
    return Cancelled(b, bk::Booking::CONFIRMED, bk::Booking::PARENT_RESOURCE, true);
  };
  Fold("booking", run("r1", "o1", 10));
  Fold("booking", run("r2", "o1", 15));
  std::vector<absl::Status> batch =
      figures_->FoldBatch("booking", {Stream(run("r3", "o2", 10)), Stream(run("r4", "o2", 15))});
  for (const auto& s : batch) EXPECT_TRUE(s.ok()) << s;
  v1::UsageFigures m = March();
  EXPECT_EQ(m.bookings(), 2);
  EXPECT_EQ(m.outage_cancelled_bookings(), 2);
}

// rejected_requests counts a service order the owner's side cancels "before
// its quote was accepted". o1's quote was accepted, then re-quoted (booking
// clears quote_accept_time, state QUOTED) and the owner cancels it: it
// counted as a booking at the acceptance and is no rejected request; o3 the
// same with its acceptance and cancellation in one batch. o2, never
// accepted, is one.
TEST_F(UsageFiguresContractTest, AnOwnerCancellingAfterAReQuoteRejectsNothing) {
  Register("i1");
  const auto quoted = bk::ServiceOrder::QUOTED;
  const std::string lab = "organizations/lab", own = "organizations/own";
  const bk::ServiceOrder o1 = test_events::ServiceOrder("o1", "i1", lab, At(2026, 3, 1));
  const bk::ServiceOrder o2 = test_events::ServiceOrder("o2", "i1", lab, At(2026, 3, 3));
  const bk::ServiceOrder o3 = test_events::ServiceOrder("o3", "i1", lab, At(2026, 3, 5));
  Fold("booking", test_events::QuoteAccepted(o1, At(2026, 3, 2)));
  Fold("booking", test_events::OrderCancelled(o1, quoted, own));
  Fold("booking", test_events::OrderCancelled(o2, quoted, own));
  std::vector<absl::Status> batch =
      figures_->FoldBatch("booking", {Stream(test_events::QuoteAccepted(o3, At(2026, 3, 6))),
                                      Stream(test_events::OrderCancelled(o3, quoted, own))});
  for (const auto& s : batch) EXPECT_TRUE(s.ok()) << s;
  v1::UsageFigures m = March();
  EXPECT_EQ(m.bookings(), 2);
  EXPECT_EQ(m.rejected_requests(), 1);
  EXPECT_EQ(m.cancelled_bookings(), 0);
}

// rejected_requests counts "requests the owner rejected (... service order
// declined: cancelled by the owner's side before its quote was accepted)".
// The owner's side is owner staff (booking.proto: the instrument's owner or
// operator organisation). Orders of organizations/lab, QUOTED, cancelled in
// March: by a CONSORTIUM_ADMIN (the platform operator's organisation) and
// with no actor organisation, no rejection; by the owner's staff (the
// order's instrument_owner, or the owner of usage's record when the order
// does not carry it) and by the operator's staff, one each; an internal
// order withdrawn by the owner's own organisation, none. Per instrument (i1
// fast fold, i2 step by step).
TEST_F(UsageFiguresContractTest, OnlyTheOwnersSideRejectsAServiceOrder) {
  const auto quoted = bk::ServiceOrder::QUOTED;
  const std::string lab = "organizations/lab", own = "organizations/own", ops = "organizations/ops",
                    platform = "organizations/platform";
  for (const bool fast : {true, false}) {
    const std::string id = fast ? "i1" : "i2";
    figures_->set_fast_fold_for_testing(fast);
    test_events::InstrumentFacts f;
    f.state = iv::ACTIVE;
    f.create_time = At(2026, 1, 1);
    f.update_time = At(2026, 1, 1);
    iv::InventoryEvent registered = test_events::InstrumentChanged(id, f);
    registered.mutable_instrument_changed()->mutable_instrument()->set_operator_organization(ops);
    Fold("inventory", registered);
    auto order = [&](const std::string& name, const std::string& client, int day) {
      bk::ServiceOrder o = test_events::ServiceOrder(name + "-" + id, id, client, At(2026, 3, day));
      o.set_instrument_owner(own);
      return o;
    };
    Fold("booking", test_events::OrderCancelled(order("admin", lab, 2), quoted, platform));
    Fold("booking", test_events::OrderCancelled(order("nobody", lab, 3), quoted, ""));
    Fold("booking", test_events::OrderCancelled(order("internal", own, 4), quoted, own));
    Fold("booking", test_events::OrderCancelled(order("staff", lab, 5), quoted, own));
    bk::ServiceOrder unnamed = order("unnamed", lab, 6);
    unnamed.clear_instrument_owner();
    Fold("booking", test_events::OrderCancelled(unnamed, bk::ServiceOrder::REQUESTED, own));
    Fold("booking", test_events::OrderCancelled(order("operator", lab, 7), quoted, ops));
  }
  for (const bool aggregates : {true, false}) {
    figures_->set_use_aggregates(aggregates);
    for (const std::string id : {"i1", "i2"}) {
      SCOPED_TRACE(absl::StrCat(id, aggregates ? " aggregates" : " counters"));
      const v1::UsageFigures m = March(OnlyInstrument(id));
      EXPECT_EQ(m.rejected_requests(), 3);
      EXPECT_EQ(m.bookings(), 0);
      EXPECT_EQ(m.cancelled_bookings(), 0);
    }
    EXPECT_EQ(March().rejected_requests(), 6);
    // Each in its client's row: the internal order's row has none.
    const v1::QueryUsageResponse by_org = Query(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1),
                                                v1::PERIOD_GRANULARITY_RANGE, {v1::DIMENSION_USER_ORGANIZATION});
    for (const auto& row : by_org.rows()) {
      EXPECT_EQ(row.figures().rejected_requests(), row.key().user_organization() == lab ? 6 : 0)
          << row.key().user_organization();
    }
  }
}

// cancelled_bookings counts "a service order cancelled by its client after
// accepting the quote", in the period its booking counts in (the first
// acceptance). Per instrument (i1 fast fold, i2 step by step): o1 accepted
// 2 March, re-quoted (QUOTED, quote_accept_time cleared), cancelled late by
// its client in April; o2 the same with acceptance and cancellation in one
// batch (accepted 6 March, not late); o3 quoted, never accepted, withdrawn
// by its client: no booking, no cancellation, no rejected request.
TEST_F(UsageFiguresContractTest, AClientCancellingAfterAReQuoteCancelsTheBooking) {
  const auto quoted = bk::ServiceOrder::QUOTED;
  const std::string lab = "organizations/lab";
  for (const bool fast : {true, false}) {
    const std::string id = fast ? "i1" : "i2";
    figures_->set_fast_fold_for_testing(fast);
    Register(id);
    const bk::ServiceOrder o1 = test_events::ServiceOrder("o1-" + id, id, lab, At(2026, 3, 1));
    const bk::ServiceOrder o2 = test_events::ServiceOrder("o2-" + id, id, lab, At(2026, 3, 5));
    const bk::ServiceOrder o3 = test_events::ServiceOrder("o3-" + id, id, lab, At(2026, 3, 7));
    Fold("booking", test_events::QuoteAccepted(o1, At(2026, 3, 2)));
    bk::BookingEvent late = test_events::OrderCancelled(o1, quoted, lab);
    late.mutable_service_order_cancelled()->set_late_cancellation(true);
    *late.mutable_header()->mutable_event_time() = ToProto(At(2026, 4, 10));
    Fold("booking", late);
    std::vector<absl::Status> batch =
        figures_->FoldBatch("booking", {Stream(test_events::QuoteAccepted(o2, At(2026, 3, 6))),
                                        Stream(test_events::OrderCancelled(o2, quoted, lab)),
                                        Stream(test_events::OrderCancelled(o3, quoted, lab))});
    for (const auto& s : batch) EXPECT_TRUE(s.ok()) << s;
  }
  for (const std::string id : {"i1", "i2"}) {
    SCOPED_TRACE(id);
    v1::UsageFigures m = March(OnlyInstrument(id));
    EXPECT_EQ(m.bookings(), 2);
    EXPECT_EQ(m.cancelled_bookings(), 2);
    EXPECT_EQ(m.late_cancelled_bookings(), 1);
    EXPECT_EQ(m.rejected_requests(), 0);
    v1::UsageFigures april = Query(absl::CivilDay(2026, 4, 1), absl::CivilDay(2026, 5, 1),
                                   v1::PERIOD_GRANULARITY_RANGE, {}, OnlyInstrument(id))
                                 .totals();
    EXPECT_EQ(april.cancelled_bookings(), 0);
    EXPECT_EQ(april.late_cancelled_bookings(), 0);
  }
  // Unfiltered (the aggregates): both instruments.
  EXPECT_EQ(March().cancelled_bookings(), 4);
  EXPECT_EQ(March().late_cancelled_bookings(), 2);
}

// "Well-formed names in the filter that usage has never seen match nothing
// ...: zero figures, not NOT_FOUND": GetUsageFigures' figures and
// QueryUsage's totals are set, as a row of zeros shows them (money in the
// reporting currency, undefined 0/0 ratios, the instrument set in the
// auditor's view), also on an empty store.
TEST_F(UsageFiguresContractTest, NamesNeverSeenGiveZeroFiguresNotAnUnsetMessage) {
  auto expect_zero = [](const v1::UsageFigures& f) {
    EXPECT_EQ(f.effective_seconds(), 0);
    EXPECT_EQ(f.bookings(), 0);
    EXPECT_EQ(f.instrument_count(), 0);
    for (const auto* m : {&f.service_income(), &f.penalty_income(), &f.subsidized_income(),
                          &f.in_kind_contribution(), &f.original_value()}) {
      EXPECT_EQ(m->currency_code(), "CNY");
      EXPECT_EQ(m->amount_minor(), 0);
    }
    EXPECT_TRUE(f.has_service_income());
    EXPECT_TRUE(f.has_original_value());
    for (const auto* r : {&f.utilization(), &f.revenue_rate(), &f.sharing_rate()}) {
      EXPECT_FALSE(r->defined());
      EXPECT_EQ(r->denominator(), 0);
    }
    EXPECT_TRUE(f.has_utilization());
    EXPECT_TRUE(f.has_sharing_rate());
  };
  for (const bool registered : {false, true}) {
    SCOPED_TRACE(registered);
    if (registered) Register("i1");
    v1::GetUsageFiguresRequest g;
    *g.mutable_range() = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
    g.mutable_filter()->add_instruments("instruments/never-seen");
    auto got = figures_->GetUsageFigures(auditor_, g);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(got->has_figures());
    expect_zero(got->figures());
    v1::QueryUsageResponse q = Query(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1),
                                     v1::PERIOD_GRANULARITY_MONTH, {v1::DIMENSION_INSTRUMENT},
                                     OnlyInstrument("never-seen"));
    EXPECT_EQ(q.rows_size(), 0);
    EXPECT_TRUE(q.has_totals());
    expect_zero(q.totals());
  }
}

// "Rows are ordered by period start": also before 1970 in the reporting zone
// (Asia/Shanghai's 1969-12-30 starts at -115,200 s), across pages, and a
// position in the form tokens carried before (a negative start as "%020d")
// resumes after its row.
TEST_F(UsageFiguresContractTest, RowsBefore1970AreOrderedByPeriodStart) {
  test_events::InstrumentFacts f;
  f.state = iv::ACTIVE;
  f.create_time = At(1969, 1, 1);
  Fold("inventory", test_events::InstrumentChanged("i1", f));
  v1::QueryUsageRequest q;
  *q.mutable_range() = Range(absl::CivilDay(1969, 12, 29), absl::CivilDay(1970, 1, 3));
  q.set_granularity(v1::PERIOD_GRANULARITY_DAY);
  q.set_page_size(2);
  std::vector<int64_t> starts;
  for (int page = 0; page < 5; ++page) {
    auto r = figures_->QueryUsage(auditor_, q);
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& row : r->rows()) starts.push_back(row.period().start_time().seconds());
    if (r->next_page_token().empty()) break;
    q.set_page_token(r->next_page_token());
  }
  EXPECT_EQ(starts, (std::vector<int64_t>{-288000, -201600, -115200, -28800, 57600}));
  // A token issued before, positioned after 1969-12-30 in the old form.
  q.set_page_token(testing::TestPageTokens().Make(q, auditor_, "-0000000000000201600"));
  auto resumed = figures_->QueryUsage(auditor_, q);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_EQ(resumed->rows_size(), 2);
  EXPECT_EQ(resumed->rows(0).period().start_time().seconds(), -115200);
  EXPECT_EQ(resumed->rows(1).period().start_time().seconds(), -28800);
  EXPECT_LT(PeriodSortKey(-201600), PeriodSortKey(-115200));
  EXPECT_LT(PeriodSortKey(-28800), PeriodSortKey(0));
  EXPECT_EQ(PeriodSortKey(57600), "00000000000000057600");  // as before
  EXPECT_EQ(UpgradeRowSortKey("-0000000000000201600\x1fx"), PeriodSortKey(-201600) + "\x1fx");
  EXPECT_EQ(UpgradeRowSortKey(PeriodSortKey(-201600)), PeriodSortKey(-201600));
  EXPECT_EQ(UpgradeRowSortKey("00000000000000057600"), "00000000000000057600");
}

// Queries keep an instrument's parsed versions while {usage}:ihv names the
// same writer: a version folded after a query (a new owner from 16 March)
// is in the next one, also with the aggregates off; a store emptied and
// refilled with the same number of versions (other events) is read again.
TEST_F(UsageFiguresContractTest, AVersionFoldedAfterAQueryIsInTheNext) {
  const auto on_site = labshare::type::v1::ON_SITE;
  auto effective_of = [&](const std::string& owner) {
    const v1::QueryUsageResponse r = Query(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1),
                                           v1::PERIOD_GRANULARITY_RANGE, {v1::DIMENSION_OWNER_ORGANIZATION});
    int64_t s = 0;
    for (const auto& row : r.rows()) {
      if (row.key().owner_organization() == owner) s += row.figures().effective_seconds();
    }
    return s;
  };
  Register("i1");
  Used(Booking("b1", "i1", on_site, "organizations/lab", At(2026, 3, 20, 9), At(2026, 3, 20, 11)));
  EXPECT_EQ(effective_of("organizations/own"), 2 * 3600);
  Version("i1", iv::ACTIVE, At(2026, 3, 16), "organizations/other");
  EXPECT_EQ(effective_of("organizations/own"), 0);
  EXPECT_EQ(effective_of("organizations/other"), 2 * 3600);
  figures_->set_use_aggregates(false);
  EXPECT_EQ(effective_of("organizations/other"), 2 * 3600);
  figures_->set_use_aggregates(true);

  testing::FlushAll(*redis_);
  ASSERT_TRUE(figures_->MigrateAggregates().ok());
  Register("i1", "organizations/third");
  Version("i1", iv::ACTIVE, At(2026, 3, 2), "organizations/third");
  Used(Booking("b2", "i1", on_site, "organizations/lab", At(2026, 3, 20, 9), At(2026, 3, 20, 12)));
  EXPECT_EQ(effective_of("organizations/other"), 0);
  EXPECT_EQ(effective_of("organizations/third"), 3 * 3600);
}

// An unknown granularity is not treated as RANGE.
TEST_F(UsageFiguresContractTest, AnOutOfEnumGranularityIsRejected) {
  v1::QueryUsageRequest q;
  *q.mutable_range() = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
  q.set_granularity(static_cast<v1::PeriodGranularity>(7));
  auto r = figures_->QueryUsage(auditor_, q);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(r.status()), "INVALID_FIELD");
  v1::ExportUsageRequest x;
  *x.mutable_range() = q.range();
  x.set_granularity(static_cast<v1::PeriodGranularity>(7));
  x.set_format(v1::EXPORT_FORMAT_ROWS);
  int messages = 0;
  absl::Status s = figures_->ExportUsage(auditor_, x, [&](const v1::ExportUsageResponse&) {
    ++messages;
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD");
  EXPECT_EQ(messages, 0);
}

// An entry missing inside the exported range: AUDIT_CORRUPTED, as for the
// link entry before it, not a file whose trailer skips it.
TEST_F(UsageFiguresContractTest, AnAuditExportWithAMissingEntryFails) {
  AuditChainOptions o;
  o.clock = &clock_;
  AuditChain chain(pool_.get(), labshare::testing::TestPageTokens(), o);
  for (int i = 0; i < 3; ++i) {
    iv::InventoryEvent e;
    e.mutable_header()->set_event_id(absl::StrCat("audit", i));
    ASSERT_TRUE(chain.Append("inventory", {"1-0", "labshare.inventory.v1.InventoryEvent", e.SerializeAsString()}).ok());
  }
  ASSERT_TRUE(chain.ExportJsonlString(0, 0).ok());
  ASSERT_TRUE(pool_->Command({"DEL", audit_keys::Entry(2)}).ok());
  auto text = chain.ExportJsonlString(0, 0);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrorReason(text.status()), "AUDIT_CORRUPTED");
  ASSERT_TRUE(pool_->Command({"SET", audit_keys::Entry(2), "not an entry"}).ok());
  EXPECT_EQ(ErrorReason(chain.ExportJsonlString(0, 0).status()), "AUDIT_CORRUPTED");
}

// "SME and start-up counts use the organisation's size class (inventory)
// at the time of use": organizations/lab is an SME from 1 January 2026
// and LARGE from 10 March 00:00 (update_time), both folded before the use.
// Per instrument (i1 fast fold, i2 step by step): a session 8 March 10:00 to
// 12 March 10:00 checked out (folded after the change), an open session
// 9 March 10:00 to 11 March 10:00 (counted at query time), and a session on
// 20 March. 8 and 9 March count lab's users as SME users, 10 March not;
// March has two SME users (the first two) of three.
TEST_F(UsageFiguresContractTest, SmeCountsUseTheSizeClassOfTheDayOfUse) {
  const std::string lab = "organizations/lab", own = "organizations/own";
  auto org_changed = [&](iv::SizeClass size, std::optional<absl::Time> updated) {
    iv::InventoryEvent e;
    auto* o = e.mutable_organization_changed()->mutable_organization();
    o->set_name(lab);
    o->set_size_class(size);
    *o->mutable_create_time() = ToProto(At(2026, 1, 1));
    if (updated) *o->mutable_update_time() = ToProto(*updated);
    Fold("inventory", e);
  };
  org_changed(iv::SME, std::nullopt);
  org_changed(iv::LARGE, At(2026, 3, 10));
  const auto on_site = labshare::type::v1::ON_SITE;
  for (const bool fast : {true, false}) {
    const std::string id = fast ? "i1" : "i2";
    figures_->set_fast_fold_for_testing(fast);
    Register(id);
    bk::Booking closed = Booking("c-" + id, id, on_site, lab, At(2026, 3, 8, 10), At(2026, 3, 12, 10));
    closed.set_user_organization(lab);
    Used(closed);
    bk::Booking late = Booking("l-" + id, id, on_site, lab, At(2026, 3, 20, 10), At(2026, 3, 20, 12));
    late.set_user_organization(lab);
    Used(late);
    bk::Booking open = Booking("o-" + id, id, on_site, lab, At(2026, 3, 9, 10), At(2026, 3, 11, 10));
    open.set_user_organization(lab);
    open.set_state(bk::Booking::CHECKED_IN);
    *open.mutable_session()->mutable_start_time() = open.reserved_interval().start_time();
    bk::BookingEvent ci;
    *ci.mutable_booking_checked_in()->mutable_booking() = open;
    Fold("booking", ci);
  }
  for (const std::string id : {"i1", "i2"}) {
    SCOPED_TRACE(id);
    const v1::QueryUsageResponse days = Query(absl::CivilDay(2026, 3, 8), absl::CivilDay(2026, 3, 11),
                                              v1::PERIOD_GRANULARITY_DAY, {}, OnlyInstrument(id));
    ASSERT_EQ(days.rows_size(), 3);
    EXPECT_EQ(days.rows(0).figures().users_served(), 1);  // 8 March: the closed session
    EXPECT_EQ(days.rows(0).figures().sme_users_served(), 1);
    EXPECT_EQ(days.rows(0).figures().sme_organizations_served(), 1);
    EXPECT_EQ(days.rows(1).figures().users_served(), 2);  // 9 March: and the open one
    EXPECT_EQ(days.rows(1).figures().sme_users_served(), 2);
    EXPECT_EQ(days.rows(2).figures().users_served(), 2);  // 10 March: LARGE
    EXPECT_EQ(days.rows(2).figures().sme_users_served(), 0);
    EXPECT_EQ(days.rows(2).figures().sme_organizations_served(), 0);
    const v1::UsageFigures m = March(OnlyInstrument(id));
    EXPECT_EQ(m.users_served(), 3);
    EXPECT_EQ(m.sme_users_served(), 2);
    EXPECT_EQ(m.sme_organizations_served(), 1);
    EXPECT_EQ(m.startup_organizations_served(), 0);
  }
  // Unfiltered (the aggregates): both instruments' users.
  const v1::UsageFigures all = March();
  EXPECT_EQ(all.users_served(), 6);
  EXPECT_EQ(all.sme_users_served(), 4);
  EXPECT_EQ(all.sme_organizations_served(), 1);
}

// Owner staff book ON_SITE for a user of organizations/lab and name the
// owner (organizations/own) as payer: the time, the bookings, their
// outcomes and the users served are lab's (external: lab is not the
// owner), none are own's, in QueryUsage by user organisation, with a
// user-organisation filter, in the sharing matrix and the annual report,
// through the fast fold and the step-by-step fold, for a closed and an
// open session. A JOINT_RESEARCH booking counts for the participant that
// booked (its payer) whoever uses it.
TEST_F(UsageFiguresContractTest, OnSiteUseCountsForTheUsersOrganisationNotAnotherPayer) {
  iv::InventoryEvent sme;
  sme.mutable_organization_changed()->mutable_organization()->set_name("organizations/lab");
  sme.mutable_organization_changed()->mutable_organization()->set_size_class(iv::SME);
  Fold("inventory", sme);
  const std::string lab = "organizations/lab", own = "organizations/own";
  auto created = [](bk::Booking b) {
    b.set_state(bk::Booking::CONFIRMED);
    bk::BookingEvent e;
    *e.mutable_booking_created()->mutable_booking() = b;
    return e;
  };
  // i1: fast fold; i2: step by step. Each: one session 10:00-12:00 on
  // 5 March, one missed booking 14:00-15:00, one open session 10:00-13:00 on
  // 6 March (checked in, not out: counts up to its reserved end).
  for (const bool fast : {true, false}) {
    const std::string id = fast ? "i1" : "i2";
    figures_->set_fast_fold_for_testing(fast);
    Register(id);
    const auto on_site = labshare::type::v1::ON_SITE;
    bk::Booking used = Booking("u-" + id, id, on_site, own, At(2026, 3, 5, 10), At(2026, 3, 5, 12));
    used.set_user_organization(lab);
    bk::Booking missed = Booking("m-" + id, id, on_site, own, At(2026, 3, 5, 14), At(2026, 3, 5, 15));
    missed.set_user_organization(lab);
    bk::Booking open = Booking("o-" + id, id, on_site, own, At(2026, 3, 6, 10), At(2026, 3, 6, 13));
    open.set_user_organization(lab);
    for (const bk::Booking& b : {used, missed, open}) Fold("booking", created(b));
    Used(used);
    missed.set_state(bk::Booking::MISSED);
    bk::BookingEvent m;
    *m.mutable_booking_missed()->mutable_booking() = missed;
    Fold("booking", m);
    open.set_state(bk::Booking::CHECKED_IN);
    *open.mutable_session()->mutable_start_time() = open.reserved_interval().start_time();
    bk::BookingEvent ci;
    *ci.mutable_booking_checked_in()->mutable_booking() = open;
    Fold("booking", ci);
  }
  EXPECT_GT(figures_->fast_fold_steps(), 0);
  const absl::CivilDay from(2026, 3, 1), to(2026, 4, 1);
  for (const std::string id : {"i1", "i2"}) {
    SCOPED_TRACE(id);
    v1::QueryUsageResponse r = Query(from, to, v1::PERIOD_GRANULARITY_RANGE, {v1::DIMENSION_USER_ORGANIZATION},
                                     OnlyInstrument(id));
    ASSERT_EQ(r.rows_size(), 1);
    EXPECT_EQ(r.rows(0).key().user_organization(), lab);
    const v1::UsageFigures& f = r.rows(0).figures();
    EXPECT_EQ(f.effective_seconds(), 5 * 3600);  // 2 h closed + 3 h open
    EXPECT_EQ(f.external_seconds(), 5 * 3600);   // lab is not the owner
    EXPECT_EQ(f.sharing_rate().numerator(), 5 * 3600);
    EXPECT_EQ(f.bookings(), 3);
    EXPECT_EQ(f.completed_bookings(), 2);  // checked in: the open session too
    EXPECT_EQ(f.missed_bookings(), 1);
    EXPECT_EQ(f.users_served(), 2);  // u-<id> and o-<id>
    EXPECT_EQ(f.external_users_served(), 2);
    EXPECT_EQ(f.sme_users_served(), 2);
    EXPECT_EQ(f.organizations_served(), 1);
    EXPECT_EQ(f.external_organizations_served(), 1);
    EXPECT_EQ(f.sme_organizations_served(), 1);
    // The payer's filter finds none of it.
    v1::UsageFilter payer = OnlyInstrument(id);
    payer.add_user_organizations(own);
    const v1::UsageFigures p = March(payer);
    EXPECT_EQ(p.effective_seconds(), 0);
    EXPECT_EQ(p.bookings(), 0);
    EXPECT_EQ(p.missed_bookings(), 0);
    EXPECT_EQ(p.organizations_served(), 0);
    v1::UsageFilter user = OnlyInstrument(id);
    user.add_user_organizations(lab);
    EXPECT_EQ(March(user).effective_seconds(), 5 * 3600);
  }
  // The whole platform (aggregates where they apply), the matrix, the report.
  const v1::UsageFigures all = March();
  EXPECT_EQ(all.effective_seconds(), 10 * 3600);
  EXPECT_EQ(all.external_seconds(), 10 * 3600);
  EXPECT_EQ(all.external_organizations_served(), 1);
  v1::GetSharingMatrixRequest mr;
  *mr.mutable_range() = Range(from, to);
  mr.set_include_internal(true);
  auto matrix = figures_->GetSharingMatrix(auditor_, mr);
  ASSERT_TRUE(matrix.ok()) << matrix.status();
  ASSERT_EQ(matrix->cells_size(), 1);
  EXPECT_EQ(matrix->cells(0).owner_organization(), own);
  EXPECT_EQ(matrix->cells(0).user_organization(), lab);
  EXPECT_EQ(matrix->cells(0).effective_seconds(), 10 * 3600);
  EXPECT_EQ(matrix->cells(0).bookings(), 6);
  v1::GetAnnualReportRequest ar;
  ar.set_year(2026);
  auto report = figures_->GetAnnualReport(auditor_, ar);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->platform_figures().effective_seconds(), 10 * 3600);
  EXPECT_EQ(report->platform_figures().external_seconds(), 10 * 3600);

  // JOINT_RESEARCH: the participant that booked (the payer), whoever uses it.
  Register("i3");
  bk::Booking joint =
      Booking("j", "i3", labshare::type::v1::JOINT_RESEARCH, own, At(2026, 3, 7, 10), At(2026, 3, 7, 11));
  joint.set_user_organization(lab);
  Fold("booking", created(joint));
  Used(joint);
  v1::QueryUsageResponse j = Query(from, to, v1::PERIOD_GRANULARITY_RANGE, {v1::DIMENSION_USER_ORGANIZATION},
                                   OnlyInstrument("i3"));
  ASSERT_EQ(j.rows_size(), 1);
  EXPECT_EQ(j.rows(0).key().user_organization(), own);
  EXPECT_EQ(j.rows(0).figures().effective_seconds(), 3600);
  EXPECT_EQ(j.rows(0).figures().external_seconds(), 0);
  EXPECT_EQ(j.rows(0).figures().bookings(), 1);
}

// Events of bookings created before booking recorded user_organization
// carry none: their time, bookings and open sessions count for the payer,
// as before (fast and step-by-step folds).
TEST_F(UsageFiguresContractTest, OnSiteEventsWithoutAUserOrganisationCountForThePayer) {
  const std::string lab = "organizations/lab", own = "organizations/own";
  for (const bool fast : {true, false}) {
    const std::string id = fast ? "i1" : "i2";
    figures_->set_fast_fold_for_testing(fast);
    Register(id);
    bk::Booking used = Booking("u-" + id, id, labshare::type::v1::ON_SITE, lab, At(2026, 3, 5, 10), At(2026, 3, 5, 12));
    bk::BookingEvent c;
    used.set_state(bk::Booking::CONFIRMED);
    *c.mutable_booking_created()->mutable_booking() = used;
    Fold("booking", c);
    Used(used);
    bk::Booking open = Booking("o-" + id, id, labshare::type::v1::ON_SITE, lab, At(2026, 3, 6, 10), At(2026, 3, 6, 13));
    open.set_state(bk::Booking::CHECKED_IN);
    *open.mutable_session()->mutable_start_time() = open.reserved_interval().start_time();
    bk::BookingEvent ci;
    *ci.mutable_booking_checked_in()->mutable_booking() = open;
    Fold("booking", ci);
    v1::QueryUsageResponse r = Query(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1),
                                     v1::PERIOD_GRANULARITY_RANGE, {v1::DIMENSION_USER_ORGANIZATION},
                                     OnlyInstrument(id));
    ASSERT_EQ(r.rows_size(), 1) << id;
    EXPECT_EQ(r.rows(0).key().user_organization(), lab) << id;
    EXPECT_EQ(r.rows(0).figures().effective_seconds(), 5 * 3600) << id;
    EXPECT_EQ(r.rows(0).figures().external_seconds(), 5 * 3600) << id;
    EXPECT_EQ(r.rows(0).figures().bookings(), 1) << id;
  }
}

// Instants count to the whole second, fractions dropped, before they are
// subtracted (usage.proto "Units"): i1 registered 2 March 10:00:00.4 is in
// service end.seconds - create_time.seconds = 50400 s that day, of which a
// window 12:00:00.7-13:00:00.2 is 3600 s of maintenance; a session
// 23:30:00.5-00:30:00.2 counts 1800 s on each day, 3600 s in all, closed
// (fast and step-by-step folds) and open.
TEST_F(UsageFiguresContractTest, SubSecondInstantsCountOnWholeSeconds) {
  test_events::InstrumentFacts facts;
  facts.state = iv::ACTIVE;
  facts.create_time = At(2026, 3, 2, 10) + absl::Milliseconds(400);
  Fold("inventory", test_events::InstrumentChanged("i1", facts));
  iv::InventoryEvent w;
  w.mutable_maintenance_window_changed()->set_instrument("instruments/i1");
  auto* mw = w.mutable_maintenance_window_changed()->mutable_maintenance_window();
  mw->set_name("instruments/i1/maintenanceWindows/w1");
  mw->set_state(iv::SCHEDULED);
  *mw->mutable_interval()->mutable_start_time() = ToProto(At(2026, 3, 2, 12) + absl::Milliseconds(700));
  *mw->mutable_interval()->mutable_end_time() = ToProto(At(2026, 3, 2, 13) + absl::Milliseconds(200));
  Fold("inventory", w);
  const v1::UsageFigures day = Query(absl::CivilDay(2026, 3, 2), absl::CivilDay(2026, 3, 3),
                                     v1::PERIOD_GRANULARITY_RANGE, {}, OnlyInstrument("i1"))
                                   .totals();
  const int64_t end_seconds = absl::ToUnixSeconds(absl::FromCivil(absl::CivilDay(2026, 3, 3), zone_));
  const auto created = ToProto(facts.create_time);
  ASSERT_EQ(created.nanos(), 400000000);
  EXPECT_EQ(day.calendar_seconds(), end_seconds - created.seconds());
  EXPECT_EQ(day.calendar_seconds(), 50400);
  EXPECT_EQ(day.maintenance_seconds(), 3600);
  EXPECT_EQ(day.available_seconds(), 46800);

  const auto on_site = labshare::type::v1::ON_SITE;
  const absl::Time start = At(2026, 3, 5, 23) + absl::Minutes(30) + absl::Milliseconds(500);
  const absl::Time end = At(2026, 3, 6) + absl::Minutes(30) + absl::Milliseconds(200);
  for (const bool fast : {true, false}) {
    const std::string id = fast ? "i2" : "i3";
    figures_->set_fast_fold_for_testing(fast);
    Register(id);
    Used(Booking("c-" + id, id, on_site, "organizations/lab", start, end));
  }
  Register("i4");
  CheckedIn(Booking("o-i4", "i4", on_site, "organizations/lab", start, end));
  for (const std::string id : {"i2", "i3", "i4"}) {
    SCOPED_TRACE(id);
    const v1::QueryUsageResponse days = Query(absl::CivilDay(2026, 3, 5), absl::CivilDay(2026, 3, 7),
                                              v1::PERIOD_GRANULARITY_DAY, {}, OnlyInstrument(id));
    ASSERT_EQ(days.rows_size(), 2);
    EXPECT_EQ(days.rows(0).figures().effective_seconds(), 1800);
    EXPECT_EQ(days.rows(1).figures().effective_seconds(), 1800);
    EXPECT_EQ(days.totals().effective_seconds(), 3600);
    EXPECT_EQ(March(OnlyInstrument(id)).effective_seconds(), 3600);
  }
  EXPECT_EQ(March().effective_seconds(), 3 * 3600);  // the aggregates agree
}

// Europe/Berlin, Sunday 25 October 2026: daylight saving ends, the day has
// 25 hours (90000 s). An ON_SITE session over the whole day counts 90000 s
// (actual time; only LEASE days are capped), closed through either fold and
// open; a lease that day counts its counted hours (default 8 h).
TEST_F(UsageFiguresContractTest, AOnSiteSessionOnThe25HourDayCountsActualTime) {
  ASSERT_TRUE(absl::LoadTimeZone("Europe/Berlin", &zone_));
  figures_ = std::make_unique<UsageFigures>(pool_.get(), &clock_, zone_, labshare::testing::TestPageTokens());
  ASSERT_TRUE(figures_->MigrateAggregates().ok());
  const absl::CivilDay sunday(2026, 10, 25), monday(2026, 10, 26);
  const absl::Time from = absl::FromCivil(sunday, zone_), to = absl::FromCivil(monday, zone_);
  ASSERT_EQ(to - from, absl::Hours(25));
  const auto on_site = labshare::type::v1::ON_SITE;
  for (const bool fast : {true, false}) {
    const std::string id = fast ? "i1" : "i2";
    figures_->set_fast_fold_for_testing(fast);
    Register(id);
    Used(Booking("c-" + id, id, on_site, "organizations/lab", from, to));
  }
  Register("i3");
  CheckedIn(Booking("o-i3", "i3", on_site, "organizations/lab", from, to));
  Register("i4");
  Used(Booking("l-i4", "i4", labshare::type::v1::LEASE, "organizations/lab", from, to));
  for (const std::string id : {"i1", "i2", "i3"}) {
    SCOPED_TRACE(id);
    const v1::UsageFigures f =
        Query(sunday, monday, v1::PERIOD_GRANULARITY_RANGE, {}, OnlyInstrument(id)).totals();
    EXPECT_EQ(f.effective_seconds(), 90000);
    EXPECT_EQ(f.calendar_seconds(), 90000);
    EXPECT_EQ(f.utilization().basis_points(), 10000);
  }
  EXPECT_EQ(Query(sunday, monday, v1::PERIOD_GRANULARITY_RANGE, {}, OnlyInstrument("i4")).totals().effective_seconds(),
            8 * 3600);
  const v1::UsageFigures october =
      Query(absl::CivilDay(2026, 10, 1), absl::CivilDay(2026, 11, 1), v1::PERIOD_GRANULARITY_RANGE).totals();
  EXPECT_EQ(october.effective_seconds(), 3 * 90000 + 8 * 3600);
}

}  // namespace
}  // namespace labshare::usage
