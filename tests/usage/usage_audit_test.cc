// Findings of an audit of the usage figures, each where events fold out of
// order (each replica its own consumer; idle entries claimed by another
// replica; a failed event stays pending while later ones fold) or where a
// figure disagreed with usage.proto (Asia/Shanghai unless said; instruments
// registered 2026-01-01 00:00, 24 available hours a day).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "labshare/usage/v1/usage.pb.h"
#include "services/usage/usage_figures.h"
#include "tests/support/page_tokens.h"
#include "tests/usage/usage_service_fixture.h"
#include "tests/usage/usage_test_events.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
using labshare::type::v1::SharingMode;

constexpr int64_t kDay = 86400;

class UsageAuditTest : public UsageServiceFixture {
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

  // A version of instrument `id` taking effect at `at`.
  void Version(const std::string& id, iv::InstrumentState state, absl::Time at,
               const std::string& owner = "organizations/own") {
    test_events::InstrumentFacts f;
    f.owner = owner;
    f.category = "sem";
    f.state = state;
    f.create_time = At(2026, 1, 1);
    f.update_time = at;
    Fold("inventory", test_events::InstrumentChanged(id, f));
  }

  // lab's u1 used i1 (ON_SITE, reserved [reserved_from, reserved_to)) from
  // session_from to session_to: its BookingCheckedOut, folded.
  void FoldSession(absl::Time reserved_from, absl::Time reserved_to, absl::Time session_from, absl::Time session_to) {
    bk::Booking b;
    b.set_name("bookings/b1");
    b.set_instrument("instruments/i1");
    b.set_mode(labshare::type::v1::ON_SITE);
    b.set_payer_organization("organizations/lab");
    b.set_user("users/u1");
    b.set_state(bk::Booking::COMPLETED);
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(reserved_from);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(reserved_to);
    *b.mutable_session()->mutable_start_time() = ToProto(session_from);
    *b.mutable_session()->mutable_end_time() = ToProto(session_to);
    bk::BookingEvent e;
    *e.mutable_booking_checked_out()->mutable_booking() = b;
    Fold("booking", e);
  }

  v1::QueryUsageResponse Query(absl::CivilDay from, absl::CivilDay to, v1::PeriodGranularity g,
                               const v1::UsageFilter& filter = {}) {
    v1::QueryUsageRequest q;
    *q.mutable_range() = Range(from, to);
    q.set_granularity(g);
    *q.mutable_filter() = filter;
    q.set_page_size(1000);
    auto r = figures_->QueryUsage(auditor_, q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::QueryUsageResponse();
  }
  v1::UsageFigures Month(int y, int m, const v1::UsageFilter& filter = {}) {
    const absl::CivilDay from(y, m, 1);
    return Query(from, absl::CivilDay(absl::CivilMonth(from) + 1), v1::PERIOD_GRANULARITY_RANGE, filter).totals();
  }
  static v1::UsageFilter OnlyInstrument(const std::string& id) {
    v1::UsageFilter f;
    f.add_instruments("instruments/" + id);
    return f;
  }

  int next_event_ = 0;
};

// 1. The retirement (1 March, a new owner too) folded before the instrument's
// registration: the registration is history, not the latest record; March
// has no i1 in service, filtered or not.
TEST_F(UsageAuditTest, AnOlderVersionFoldedLateDoesNotUndoARetirement) {
  Version("i1", iv::RETIRED, At(2026, 3, 1), "organizations/new");
  Version("i1", iv::ACTIVE, At(2026, 1, 1));
  auto latest = pool_->Command({"HGET", "{usage}:instr", "i1"});
  ASSERT_TRUE(latest.ok());
  iv::Instrument in;
  ASSERT_TRUE(in.ParseFromString(latest->str));
  EXPECT_EQ(in.state(), iv::RETIRED);
  EXPECT_EQ(in.owner_organization(), "organizations/new");
  auto attrs = pool_->Command({"HGET", "{usage}:iattr", "i1"});
  ASSERT_TRUE(attrs.ok());
  EXPECT_EQ(attrs->str.substr(0, attrs->str.find('\x1f')), "organizations/new");
  EXPECT_EQ(Month(2026, 3).calendar_seconds(), 0);
  EXPECT_EQ(Month(2026, 3, OnlyInstrument("i1")).calendar_seconds(), 0);
  EXPECT_EQ(Month(2026, 2, OnlyInstrument("i1")).calendar_seconds(), 28 * kDay);  // in service in February
}

// 2. A maintenance window of 2-4 March cancelled; its cancellation folded
// before its declaration: the declaration schedules nothing.
TEST_F(UsageAuditTest, AWindowCancelledBeforeItsDeclarationFoldsStaysCancelled) {
  Version("i1", iv::ACTIVE, At(2026, 1, 1));
  auto window = [&](iv::MaintenanceWindowState state) {
    iv::InventoryEvent e;
    auto* c = e.mutable_maintenance_window_changed();
    c->set_kind(state == iv::SCHEDULED ? iv::CREATED : iv::STATE_CHANGED);
    c->set_instrument("instruments/i1");
    auto* w = c->mutable_maintenance_window();
    w->set_name("instruments/i1/maintenanceWindows/w1");
    *w->mutable_interval()->mutable_start_time() = ToProto(At(2026, 3, 2));
    *w->mutable_interval()->mutable_end_time() = ToProto(At(2026, 3, 4));
    w->set_state(state);
    return e;
  };
  Fold("inventory", window(iv::CANCELLED));
  Fold("inventory", window(iv::SCHEDULED));
  EXPECT_EQ(Month(2026, 3, OnlyInstrument("i1")).maintenance_seconds(), 0);
  EXPECT_EQ(Month(2026, 3).maintenance_seconds(), 0);
}

// 3. Facility staff and a billing admin whose token carries no organisation
// have no own organisation: naming "" as the owner (or user) organisation is
// ORGANIZATION_SCOPE, before the names are looked at, in every scoped method.
TEST_F(UsageAuditTest, ACallerWithoutAnOrganisationIsOutOfScope) {
  for (Role role : {Role::kFacilityStaff, Role::kMemberBillingAdmin}) {
    const Principal p{"nobody", "", {role}, absl::InfiniteFuture()};
    v1::UsageFilter owner, user;
    owner.add_owner_organizations("");
    user.add_user_organizations("");
    for (const v1::UsageFilter& f : {owner, user}) {
      SCOPED_TRACE(f.ShortDebugString());
      v1::GetUsageFiguresRequest g;
      *g.mutable_range() = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
      *g.mutable_filter() = f;
      auto s = figures_->GetUsageFigures(p, g).status();
      EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
      EXPECT_EQ(ErrorReason(s), "ORGANIZATION_SCOPE");
      v1::QueryUsageRequest q;
      *q.mutable_range() = g.range();
      *q.mutable_filter() = f;
      EXPECT_EQ(ErrorReason(figures_->QueryUsage(p, q).status()), "ORGANIZATION_SCOPE");
      v1::GetSharingMatrixRequest m;
      *m.mutable_range() = g.range();
      *m.mutable_filter() = f;
      EXPECT_EQ(ErrorReason(figures_->GetSharingMatrix(p, m).status()), "ORGANIZATION_SCOPE");
    }
    v1::ListIdleInstrumentsRequest idle;
    idle.mutable_filter()->add_owner_organizations("");
    EXPECT_EQ(ErrorReason(figures_->ListIdleInstruments(p, idle).status()), "ORGANIZATION_SCOPE");
    v1::ListUnderSharedInstrumentsRequest under;
    under.mutable_filter()->add_owner_organizations("");
    EXPECT_EQ(ErrorReason(figures_->ListUnderSharedInstruments(p, under).status()), "ORGANIZATION_SCOPE");
    v1::GetAnnualReportRequest report;
    report.set_year(2026);
    report.mutable_scope()->add_owner_organizations("");
    EXPECT_EQ(ErrorReason(figures_->GetAnnualReport(p, report).status()), "ORGANIZATION_SCOPE");
  }
}

// 4. A session from 31 December 2025 22:00 checked out at 1 January 2026
// 00:00:00.5: 7200 s on 31 December; the half second is no whole second of
// use, so nobody is served in January or in 2026.
TEST_F(UsageAuditTest, ADayWithoutAWholeSecondOfUseServesNobody) {
  Version("i1", iv::ACTIVE, At(2025, 1, 1));
  FoldSession(At(2025, 12, 31, 22), At(2026, 1, 1, 1), At(2025, 12, 31, 22), At(2026, 1, 1) + absl::Milliseconds(500));
  const v1::UsageFigures december = Month(2025, 12), january = Month(2026, 1);
  EXPECT_EQ(december.effective_seconds(), 7200);
  EXPECT_EQ(december.users_served(), 1);
  EXPECT_EQ(january.effective_seconds(), 0);
  EXPECT_EQ(january.users_served(), 0);
  EXPECT_EQ(january.organizations_served(), 0);
  EXPECT_EQ(Month(2026, 1, OnlyInstrument("i1")).users_served(), 0);
  const v1::UsageFigures year =
      Query(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1), v1::PERIOD_GRANULARITY_RANGE).totals();
  EXPECT_EQ(year.users_served(), 0);
  EXPECT_EQ(year.external_organizations_served(), 0);
}

// 5. One order of validation in every figure method (usage.proto): the
// range, the method's other fields, the filter's names, the page token.
TEST_F(UsageAuditTest, FigureMethodsValidateTheRangeAndFieldsBeforeTheNames) {
  labshare::type::v1::Interval unaligned = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
  *unaligned.mutable_end_time() = ToProto(FromProto(unaligned.end_time()) + absl::Hours(1));
  v1::UsageFilter bad;
  bad.add_instruments("instruments/..");
  v1::GetUsageFiguresRequest g;
  *g.mutable_range() = unaligned;
  *g.mutable_filter() = bad;
  EXPECT_EQ(ErrorReason(figures_->GetUsageFigures(auditor_, g).status()), "RANGE_NOT_ALIGNED");
  v1::GetSharingMatrixRequest m;
  *m.mutable_range() = unaligned;
  *m.mutable_filter() = bad;
  EXPECT_EQ(ErrorReason(figures_->GetSharingMatrix(auditor_, m).status()), "RANGE_NOT_ALIGNED");
  m.set_page_token("not-a-token");
  *m.mutable_range() = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
  EXPECT_EQ(ErrorReason(figures_->GetSharingMatrix(auditor_, m).status()), "INVALID_NAME");
  v1::QueryUsageRequest q;
  *q.mutable_range() = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
  *q.mutable_filter() = bad;
  q.set_granularity(static_cast<v1::PeriodGranularity>(99));
  auto s = figures_->QueryUsage(auditor_, q).status();
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD") << s;
  q.set_granularity(v1::PERIOD_GRANULARITY_DAY);
  *q.mutable_range() = Range(absl::CivilDay(2025, 1, 1), absl::CivilDay(2026, 4, 1));
  EXPECT_EQ(ErrorReason(figures_->QueryUsage(auditor_, q).status()), "RANGE_TOO_LARGE");
  q.set_granularity(v1::PERIOD_GRANULARITY_MONTH);
  q.set_page_token("not-a-token");
  EXPECT_EQ(ErrorReason(figures_->QueryUsage(auditor_, q).status()), "INVALID_NAME");
  v1::ExportUsageRequest x;
  *x.mutable_range() = q.range();
  *x.mutable_filter() = bad;
  s = figures_->ExportUsage(auditor_, x, [](const v1::ExportUsageResponse&) { return absl::OkStatus(); });
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD") << s;  // no format
  v1::ListIdleInstrumentsRequest idle;
  idle.mutable_filter()->add_instruments("instruments/..");
  idle.mutable_threshold_override()->set_idle_effective_seconds_per_year(-1);
  s = figures_->ListIdleInstruments(auditor_, idle).status();
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD") << s;
  *idle.mutable_range() = unaligned;
  EXPECT_EQ(ErrorReason(figures_->ListIdleInstruments(auditor_, idle).status()), "RANGE_NOT_ALIGNED");
  v1::ListUnderSharedInstrumentsRequest under;
  under.mutable_filter()->add_instruments("instruments/..");
  under.mutable_threshold_override()->set_min_sharing_rate_bp(10001);
  EXPECT_EQ(ErrorReason(figures_->ListUnderSharedInstruments(auditor_, under).status()), "INVALID_FIELD");
  under.clear_threshold_override();
  under.set_page_token("not-a-token");
  EXPECT_EQ(ErrorReason(figures_->ListUnderSharedInstruments(auditor_, under).status()), "INVALID_NAME");
}

// 6. Europe/Berlin, 15 March to 14 April 2026 (30 calendar days; daylight
// saving starts on 29 March, so 2,588,400 s): an instrument in service on
// all 30 days is assessed against minimum_assessed_days 30 (listed idle);
// one registered at noon on the first day is not.
TEST_F(UsageAuditTest, MinimumAssessedDaysCountsCalendarDaysAcrossADaylightSavingChange) {
  ASSERT_TRUE(absl::LoadTimeZone("Europe/Berlin", &zone_));
  figures_ = std::make_unique<UsageFigures>(pool_.get(), &clock_, zone_, labshare::testing::TestPageTokens());
  ASSERT_TRUE(figures_->MigrateAggregates().ok());
  Version("i1", iv::ACTIVE, At(2026, 1, 1));
  test_events::InstrumentFacts late;
  late.create_time = At(2026, 3, 15, 12);
  Fold("inventory", test_events::InstrumentChanged("i2", late));
  v1::ListIdleInstrumentsRequest r;
  *r.mutable_range() = Range(absl::CivilDay(2026, 3, 15), absl::CivilDay(2026, 4, 14));
  ASSERT_EQ(FromProto(r.range().end_time()) - FromProto(r.range().start_time()), absl::Seconds(2588400));
  auto idle = figures_->ListIdleInstruments(auditor_, r);
  ASSERT_TRUE(idle.ok()) << idle.status();
  ASSERT_EQ(idle->instruments_size(), 1);
  EXPECT_EQ(idle->instruments(0).instrument(), "instruments/i1");
  EXPECT_TRUE(idle->instruments(0).assessed());
  EXPECT_EQ(idle->instruments(0).figures().calendar_seconds(), 2588400);
}

// 7. i1 owned by organizations/old until 16 March 2026, then transferred to
// organizations/own; organizations/lab used it 1 h on 5 March. Its March
// assessment for an auditor filtering on own is its own figures: the hour
// before the transfer counts. own's staff (scoped) see own's stretch only:
// the hour was old's (its user, its income), not theirs (Authorization);
// the instrument's capacity in the range is counted for both.
TEST_F(UsageAuditTest, AnAssessmentCountsTheInstrumentsStretchesBeforeATransfer) {
  Version("i1", iv::ACTIVE, At(2026, 1, 1), "organizations/old");
  Version("i1", iv::ACTIVE, At(2026, 3, 16), "organizations/own");
  FoldSession(At(2026, 3, 5, 9), At(2026, 3, 5, 10), At(2026, 3, 5, 9), At(2026, 3, 5, 10));
  const Principal staff{"sam", "own", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  for (const Principal& p : {staff, auditor_}) {
    SCOPED_TRACE(p.user_id);
    const bool overseer = p.user_id != staff.user_id;
    v1::ListIdleInstrumentsRequest r;
    *r.mutable_range() = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
    r.mutable_filter()->add_owner_organizations("organizations/own");
    auto idle = figures_->ListIdleInstruments(p, r);
    ASSERT_TRUE(idle.ok()) << idle.status();
    ASSERT_EQ(idle->instruments_size(), 1);
    EXPECT_EQ(idle->instruments(0).owner_organization(), "organizations/own");
    EXPECT_EQ(idle->instruments(0).figures().effective_seconds(), overseer ? 3600 : 0);
    EXPECT_EQ(idle->instruments(0).figures().external_seconds(), overseer ? 3600 : 0);
    EXPECT_EQ(idle->instruments(0).figures().calendar_seconds(), 31 * kDay);
    v1::GetAnnualReportRequest report;
    report.set_year(2026);
    report.mutable_scope()->add_owner_organizations("organizations/own");
    auto annual = figures_->GetAnnualReport(p, report);
    ASSERT_TRUE(annual.ok()) << annual.status();
    ASSERT_EQ(annual->instruments_size(), 1);
    EXPECT_EQ(annual->instruments(0).figures().effective_seconds(), overseer ? 3600 : 0);
  }
}

}  // namespace
}  // namespace labshare::usage
