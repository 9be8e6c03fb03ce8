// A scripted month (January 2027, Asia/Shanghai) through the real booking
// and billing code: an on-site session, a missed booking, a joint-research
// session, a technical-service run, a lease across the month boundary and a
// maintenance window. Usage folds the outboxes of inventory, booking and
// billing; every figure is asserted exactly, computed by hand below. The
// same events folded twice, or by a restarted service, give the same figures.
#include <optional>

#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/billing/billing_ledger_fixture.h"
#include "tests/billing/direct_inventory.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
namespace bl = labshare::billing::v1;
using booking::BookingServiceTest;

// Every outbox entry so far, by source.
std::vector<std::pair<std::string, StreamEvent>> OutboxEvents(RedisPool& pool) {
  std::vector<std::pair<std::string, std::string>> streams = {{"inventory", "{inventory}:outbox"},
                                                              {"booking", "{booking}:outbox"},
                                                              {"billing", "{billing}:outbox"}};
  for (int p = 0; p < booking::kPartitions; ++p) streams.push_back({"booking", booking::keys::Outbox(p)});
  std::vector<std::pair<std::string, StreamEvent>> out;
  for (const auto& [source, stream] : streams) {
    auto v = pool.Command({"XRANGE", stream, "-", "+"});
    for (const auto& entry : v->elements) {
      StreamEvent e;
      e.stream_id = entry.elements[0].str;
      e.type = entry.elements[1].elements[1].str;
      e.payload = entry.elements[1].elements[3].str;
      out.push_back({source, std::move(e)});
    }
  }
  return out;
}

class UsageMonthTest : public BookingServiceTest {
 protected:
  void SetUp() override {
    BookingServiceTest::SetUp();
    reader_ = std::make_unique<billing::testing::DirectInventory>(inv_manager_.get());
    bstore_ = std::make_unique<billing::BillingStore>(pool_.get());
    billing_ = std::make_unique<billing::BillingManager>(bstore_.get(), reader_.get(), &clock_,
                                                         *billing::LoadBillingTimeZone("Asia/Shanghai"),
                                                         labshare::testing::TestPageTokens());
    shanghai_ = *billing::LoadBillingTimeZone("Asia/Shanghai");
    figures_ = std::make_unique<UsageFigures>(pool_.get(), &clock_, shanghai_, labshare::testing::TestPageTokens());
    // Reports from the aggregates wherever they apply (a fresh store: nothing to migrate).
    ASSERT_TRUE(figures_->MigrateAggregates().ok());
    auditor_ = Principal{"audrey", "", {Role::kAuditor}, absl::InfiniteFuture()};
  }

  std::vector<std::pair<std::string, StreamEvent>> AllEvents() { return OutboxEvents(*pool_); }
  // Billing consumes booking's events (each once).
  void Bill() {
    for (const auto& [source, e] : AllEvents()) {
      if (source == "booking") {
        ASSERT_TRUE(billing_->ApplyBookingEvent(e).ok());
      }
    }
  }
  void FoldAll(UsageFigures& f) {
    for (const auto& [source, e] : AllEvents()) ASSERT_TRUE(f.Fold(source, e).ok());
  }
  v1::UsageFigures January(const v1::UsageFilter& filter = {}, UsageFigures* figures = nullptr) {
    v1::GetUsageFiguresRequest r;
    *r.mutable_range()->mutable_start_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 1), shanghai_));
    *r.mutable_range()->mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 2, 1), shanghai_));
    *r.mutable_filter() = filter;
    auto out = (figures != nullptr ? figures : figures_.get())->GetUsageFigures(auditor_, r);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->figures() : v1::UsageFigures();
  }

  void Script() {
    // 1. On-site: booked 9:00-11:00Z on day 3, used 9:05-10:20 (4500 s).
    bk::Booking b, out, missed;
    ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(11), &b).ok());
    ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &missed).ok());
    clock_.Set(day_ + absl::Hours(9) + absl::Minutes(5));
    bk::CheckInRequest ci;
    ci.set_name(b.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &out, ana_).ok());
    clock_.Set(day_ + absl::Hours(10) + absl::Minutes(20));
    bk::CheckOutRequest co;
    co.set_name(b.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &out, ana_).ok());
    Bill();  // billing consumes as things happen: postings are dated then
    // 2. Missed: 12:00-13:00Z (booked above); fee 50 % of 500.00.
    clock_.Set(day_ + absl::Hours(13));
    ASSERT_EQ(*manager_->Sweep(), 1);
    Bill();
    // 3. Joint research, lab and owner half each, used 1 h on day 4.
    bk::CreateProjectRequest pr;
    pr.set_project_id("proj");
    pr.mutable_project()->set_title("shared");
    pr.mutable_project()->set_cost_share_template(bk::Project::CUSTOM);
    for (const char* org : {"organizations/lab", "organizations/owner"}) {
      auto* part = pr.mutable_project()->add_participants();
      part->set_organization(org);
      part->set_share_bps(5000);
    }
    *pr.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_);
    *pr.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 20));
    auto* budget = pr.mutable_project()->add_instrument_budgets();
    budget->set_instrument("instruments/tem");
    *budget->mutable_budget() = ToProto(absl::Hours(10));
    bk::Project project;
    auto s = Call(stub_.get(), &bk::BookingService::Stub::CreateProject, pr, &project, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    bk::CreateBookingRequest jr;
    jr.mutable_booking()->set_instrument("instruments/tem");
    jr.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    jr.mutable_booking()->set_project("projects/proj");
    *jr.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(33));
    *jr.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(34));
    bk::Booking j;
    s = Call(stub_.get(), &bk::BookingService::Stub::CreateBooking, jr, &j, ana_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    clock_.Set(day_ + absl::Hours(33));
    ci.set_name(j.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &out, ana_).ok());
    clock_.Set(day_ + absl::Hours(34));
    co.set_name(j.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &out, ana_).ok());
    Bill();
    // 4. Technical service: 3 samples, run 2 h on day 6.
    bk::CreateServiceOrderRequest cso;
    cso.mutable_service_order()->set_instrument("instruments/tem");
    cso.mutable_service_order()->set_service_entry_id("imaging");
    cso.mutable_service_order()->set_sample_count(3);
    bk::ServiceOrder o, oo;
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CreateServiceOrder, cso, &o, ana_).ok());
    bk::IssueQuoteRequest q;
    q.set_name(o.name());
    *q.mutable_quote()->mutable_per_sample_fee() = billing::MakeMoney("CNY", 20000);
    *q.mutable_quote()->mutable_staff_time_fee() = billing::MakeMoney("CNY", 30000);
    *q.mutable_quote()->mutable_consumables() = billing::MakeMoney("CNY", 5001);
    *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24 * 14));
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::IssueQuote, q, &oo, staff_).ok());
    bk::AcceptQuoteRequest aq;
    aq.set_name(o.name());
    aq.set_quote_etag(oo.quote().quote_etag());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::AcceptQuote, aq, &oo, ana_).ok());
    bk::ReceiveSamplesRequest rs;
    rs.set_name(o.name());
    rs.set_received_sample_count(3);
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ReceiveSamples, rs, &oo, staff_).ok());
    bk::ScheduleServiceRequest sch;
    sch.set_name(o.name());
    *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 3 + 9));
    *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 3 + 11));
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ScheduleService, sch, &oo, staff_).ok());
    clock_.Set(day_ + absl::Hours(24 * 3 + 9));
    bk::StartServiceRequest st;
    st.set_name(o.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::StartService, st, &oo, staff_).ok());
    clock_.Set(day_ + absl::Hours(24 * 3 + 11));
    bk::DeliverReportRequest dr;
    dr.set_name(o.name());
    dr.mutable_report()->set_uri("s3://reports/1.pdf");
    dr.mutable_report()->set_sha256(std::string(64, 'a'));
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::DeliverReport, dr, &oo, staff_).ok());
    bk::AcceptReportRequest ar;
    ar.set_name(o.name());
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::AcceptReport, ar, &oo, ana_).ok());
    Bill();
    // 5. Maintenance on tem: 6 h on 2027-01-10 (UTC 00:00-06:00).
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent("instruments/tem");
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() =
        ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 10), absl::UTCTimeZone()));
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() =
        ToProto(absl::FromCivil(absl::CivilHour(2027, 1, 10, 6), absl::UTCTimeZone()));
    mw.mutable_maintenance_window()->set_reason("column alignment");
    Inv(&iv::InventoryService::Stub::CreateMaintenanceWindow, mw);
    // 6. Lease of afm from 2027-01-29 08:00 to 2027-02-05 08:00 Shanghai.
    bk::RequestLeaseRequest rl;
    rl.mutable_lease()->set_instrument("instruments/afm");
    *rl.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 26));
    *rl.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 36));
    bk::Lease lease, lo;
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RequestLease, rl, &lease, ana_).ok());
    bk::ApproveLeaseRequest al;
    al.set_name(lease.name());
    al.mutable_contract()->set_rate_basis(bk::LeaseContract::DAILY);
    *al.mutable_contract()->mutable_rate() = billing::MakeMoney("CNY", 300000);
    *al.mutable_contract()->mutable_deposit() = billing::MakeMoney("CNY", 100000);
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::ApproveLease, al, &lo, staff_).ok());
    clock_.Set(day_ + absl::Hours(24 * 26));
    bk::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("ok");
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordHandover, h, &lo, staff_).ok());
    Bill();
    clock_.Set(day_ + absl::Hours(24 * 33));
    bk::RecordReturnRequest ret;
    ret.set_name(lease.name());
    ret.set_condition_notes("fine");
    ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::RecordReturn, ret, &lo, staff_).ok());
    Bill();
  }

  std::unique_ptr<billing::testing::DirectInventory> reader_;
  std::unique_ptr<billing::BillingStore> bstore_;
  std::unique_ptr<billing::BillingManager> billing_;
  std::unique_ptr<UsageFigures> figures_;
  absl::TimeZone shanghai_;
  Principal auditor_;
};

TEST_F(UsageMonthTest, EveryFigureOfTheScriptedMonth) {
  Script();
  FoldAll(*figures_);
  v1::UsageFilter tem;
  tem.add_instruments("instruments/tem");
  const v1::UsageFigures f = January(tem);
  // Use: on-site 4500 s + joint research 3600 s + service run 7200 s, all by lab.
  EXPECT_EQ(f.effective_seconds(), 15300);
  EXPECT_EQ(f.external_seconds(), 15300);
  EXPECT_EQ(f.sharing_rate().basis_points(), 10000);
  // In service from its registration (2027-01-01 08:00 Shanghai): 31 days - 8 h.
  EXPECT_EQ(f.calendar_seconds(), 736 * 3600);
  EXPECT_EQ(f.maintenance_seconds(), 6 * 3600);
  EXPECT_EQ(f.available_seconds(), 730 * 3600);
  EXPECT_EQ(f.utilization().numerator(), 15300);
  EXPECT_EQ(f.utilization().denominator(), 730 * 3600);
  EXPECT_EQ(f.utilization().basis_points(), 58);  // 0.58219 %
  // Income: session 62500 + missed fee 25000 + lab's half of 50000 + service 95001.
  EXPECT_EQ(f.service_income().amount_minor(), 207501);
  EXPECT_EQ(f.penalty_income().amount_minor(), 25000);
  EXPECT_EQ(f.in_kind_contribution().amount_minor(), 25000);
  EXPECT_EQ(f.original_value().amount_minor(), 100000000);
  EXPECT_EQ(f.revenue_rate().basis_points(), 21);  // 207501 / 100000000
  EXPECT_EQ(f.bookings(), 4);
  EXPECT_EQ(f.completed_bookings(), 3);
  EXPECT_EQ(f.missed_bookings(), 1);
  EXPECT_EQ(f.users_served(), 1);
  EXPECT_EQ(f.organizations_served(), 1);
  EXPECT_EQ(f.external_organizations_served(), 1);
  EXPECT_EQ(f.instrument_count(), 1);

  // afm: leased out from Jan 29 08:00; counted 8 h a day: Jan 29, 30, 31.
  v1::UsageFilter afm;
  afm.add_instruments("instruments/afm");
  const v1::UsageFigures a = January(afm);
  EXPECT_EQ(a.effective_seconds(), 3 * 8 * 3600);
  EXPECT_EQ(a.bookings(), 1);
  EXPECT_EQ(a.service_income().amount_minor(), 0);  // rent of January is posted in February

  // By mode: the three uses of tem apart.
  v1::QueryUsageRequest q;
  *q.mutable_range()->mutable_start_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 1), shanghai_));
  *q.mutable_range()->mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 2, 1), shanghai_));
  *q.mutable_filter() = tem;
  q.add_group_by(v1::DIMENSION_SHARING_MODE);
  auto rows = figures_->QueryUsage(auditor_, q);
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::map<int, int64_t> by_mode;
  for (const auto& row : rows->rows()) by_mode[row.key().mode()] = row.figures().effective_seconds();
  EXPECT_EQ(by_mode[labshare::type::v1::ON_SITE], 4500);
  EXPECT_EQ(by_mode[labshare::type::v1::JOINT_RESEARCH], 3600);
  EXPECT_EQ(by_mode[labshare::type::v1::TECHNICAL_SERVICE], 7200);
  EXPECT_EQ(rows->totals().effective_seconds(), 15300);
  // By day: the on-site session is on 2027-01-03 (Shanghai).
  q.clear_group_by();
  q.set_granularity(v1::PERIOD_GRANULARITY_DAY);
  rows = figures_->QueryUsage(auditor_, q);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->rows_size(), 31);
  EXPECT_EQ(rows->rows(2).figures().effective_seconds(), 4500);
  EXPECT_EQ(rows->rows(0).figures().calendar_seconds(), 16 * 3600);

  // Delivered twice, or folded by a restarted service: the same figures.
  FoldAll(*figures_);
  UsageFigures restarted(pool_.get(), &clock_, shanghai_, labshare::testing::TestPageTokens());
  FoldAll(restarted);
  EXPECT_EQ(January(tem).SerializeAsString(), f.SerializeAsString());
}

TEST_F(UsageMonthTest, RangesMustBeWholeDaysAndMembersSeeOnlyTheirOwn) {
  v1::GetUsageFiguresRequest r;
  *r.mutable_range()->mutable_start_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 1), absl::UTCTimeZone()));
  *r.mutable_range()->mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 2, 1), absl::UTCTimeZone()));
  EXPECT_EQ(ErrorReason(figures_->GetUsageFigures(auditor_, r).status()), "RANGE_NOT_ALIGNED");
  *r.mutable_range()->mutable_start_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 1), shanghai_));
  *r.mutable_range()->mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 2, 1), shanghai_));
  Principal lab{"lena", "lab", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  EXPECT_EQ(ErrorReason(figures_->GetUsageFigures(lab, r).status()), "ORGANIZATION_SCOPE");
  r.mutable_filter()->add_user_organizations("organizations/lab");
  Script();
  FoldAll(*figures_);
  auto mine = figures_->GetUsageFigures(lab, r);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->figures().effective_seconds(), 15300 + 3 * 8 * 3600);
  EXPECT_EQ(mine->figures().calendar_seconds(), 0);  // other owners' capacity stays hidden
  Principal staff{"sam", "owner", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  r.mutable_filter()->clear_user_organizations();
  r.mutable_filter()->add_owner_organizations("organizations/owner");
  auto owner = figures_->GetUsageFigures(staff, r);
  ASSERT_TRUE(owner.ok()) << owner.status();
  EXPECT_EQ(owner->figures().instrument_count(), 2);
}

// The booking event as booking wrote it before Booking.user_organization
// existed: the field cleared in every booking it carries (counted in
// *cleared).
std::string WithoutUserOrganization(const std::string& payload, int* cleared) {
  bk::BookingEvent e;
  if (!e.ParseFromString(payload)) return payload;
  const auto* refl = e.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  refl->ListFields(e, &fields);
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) continue;
    google::protobuf::Message* m = refl->MutableMessage(&e, f);
    const auto* booking = m->GetDescriptor()->FindFieldByName("booking");
    if (booking == nullptr || booking->message_type() != bk::Booking::descriptor()) continue;
    auto* b = static_cast<bk::Booking*>(m->GetReflection()->MutableMessage(m, booking));
    if (!b->user_organization().empty()) ++*cleared;
    b->clear_user_organization();
  }
  return e.SerializeAsString();
}

// Owner staff book ON_SITE for ana (organizations/lab) and name the owner as
// payer (CreateBooking: "another payer may be named only by owner staff"):
// the use records' user organisation is lab, ana's organisation, so the
// time is external (lab is not the owner) and counts under lab and none
// under the owner, for a closed session and for one still open. The same
// events as booking wrote them before it recorded the user's organisation
// count for the payer, as they did then.
TEST_F(UsageMonthTest, OnSiteBookedForAUserWithAnotherPayerCountsForTheUsersOrganisation) {
  auto book = [&](absl::Duration from, absl::Duration to, bk::Booking* b) {
    bk::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    r.mutable_booking()->set_user("users/ana");
    r.mutable_booking()->set_payer_organization("organizations/owner");
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    auto s = Call(stub_.get(), &bk::BookingService::Stub::CreateBooking, r, b, staff_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  };
  bk::Booking closed, open, out;
  ASSERT_NO_FATAL_FAILURE(book(absl::Hours(9), absl::Hours(11), &closed));
  ASSERT_NO_FATAL_FAILURE(book(absl::Hours(12), absl::Hours(14), &open));
  EXPECT_EQ(closed.user_organization(), "organizations/lab");
  EXPECT_EQ(closed.payer_organization(), "organizations/owner");
  // Closed: 9:05-10:20 (4500 s). Open: checked in at 12:00, computed at 13:00 (3600 s).
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(5));
  bk::CheckInRequest ci;
  ci.set_name(closed.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(20));
  bk::CheckOutRequest co;
  co.set_name(closed.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckOut, co, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(12));
  ci.set_name(open.name());
  ASSERT_TRUE(Call(stub_.get(), &bk::BookingService::Stub::CheckIn, ci, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(13));
  FoldAll(*figures_);

  auto only = [](const std::string& org) {
    v1::UsageFilter f;
    f.add_instruments("instruments/tem");
    f.add_user_organizations(org);
    return f;
  };
  const v1::UsageFigures lab = January(only("organizations/lab"));
  EXPECT_EQ(lab.effective_seconds(), 4500 + 3600);
  EXPECT_EQ(lab.external_seconds(), 4500 + 3600);
  EXPECT_EQ(lab.bookings(), 2);
  EXPECT_EQ(lab.completed_bookings(), 2);  // "with at least one check-in": the open one too
  EXPECT_EQ(lab.users_served(), 1);
  EXPECT_EQ(lab.external_users_served(), 1);
  EXPECT_EQ(lab.organizations_served(), 1);
  EXPECT_EQ(lab.external_organizations_served(), 1);
  const v1::UsageFigures owner = January(only("organizations/owner"));
  EXPECT_EQ(owner.effective_seconds(), 0);
  EXPECT_EQ(owner.bookings(), 0);
  EXPECT_EQ(owner.users_served(), 0);
  EXPECT_EQ(owner.organizations_served(), 0);
  v1::QueryUsageRequest q;
  *q.mutable_range()->mutable_start_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 1, 1), shanghai_));
  *q.mutable_range()->mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 2, 1), shanghai_));
  q.mutable_filter()->add_instruments("instruments/tem");
  q.add_group_by(v1::DIMENSION_USER_ORGANIZATION);
  auto rows = figures_->QueryUsage(auditor_, q);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->rows_size(), 1);
  EXPECT_EQ(rows->rows(0).key().user_organization(), "organizations/lab");
  EXPECT_EQ(rows->rows(0).figures().effective_seconds(), 4500 + 3600);
  EXPECT_EQ(rows->totals().sharing_rate().basis_points(), 10000);

  // Without the field (the events of older bookings): the payer's, internal.
  auto events = AllEvents();
  labshare::testing::FlushAll(*redis_);
  UsageFigures older(pool_.get(), &clock_, shanghai_, labshare::testing::TestPageTokens());
  ASSERT_TRUE(older.MigrateAggregates().ok());
  int cleared = 0;
  for (auto& [source, e] : events) {
    if (source == "booking") e.payload = WithoutUserOrganization(e.payload, &cleared);
    ASSERT_TRUE(older.Fold(source, e).ok());
  }
  EXPECT_GE(cleared, 4);  // two created, a check-in, a check-out, a check-in
  const v1::UsageFigures paid = January(only("organizations/owner"), &older);
  EXPECT_EQ(paid.effective_seconds(), 4500 + 3600);
  EXPECT_EQ(paid.external_seconds(), 0);
  EXPECT_EQ(paid.bookings(), 2);
  EXPECT_EQ(January(only("organizations/lab"), &older).effective_seconds(), 0);
}

// ================================================================ subsidy reversals

// Billing in process (the ledger fixture: the voucher pool pays 10 % of
// every charge; tem at 500.00 an hour for members) folded by usage.
// usage.proto UsageFigures.subsidized_income: net of subsidy reversals; a
// subsidy reversed on its own lowers it and leaves service_income as it is,
// and a charge reversed after it takes out only what is left, in whichever
// order the postings are reversed; billing_events.proto
// CorrectionPosted.income_deltas: the events of a charge sum to the charge
// as it finally stands.
class UsageSubsidyReversalTest : public billing::testing::BillingLedgerTest {
 protected:
  void SetUp() override {
    BillingLedgerTest::SetUp();
    shanghai_ = *billing::LoadBillingTimeZone("Asia/Shanghai");
    figures_ = std::make_unique<UsageFigures>(pool_.get(), &clock_, shanghai_, labshare::testing::TestPageTokens());
    ASSERT_TRUE(figures_->MigrateAggregates().ok());
  }

  // ana's session on tem, 09:00-10:00 of day_, used and billed: its charge
  // (50000, of which the voucher pays 5000).
  bl::Charge Session() {
    bk::Booking b;
    EXPECT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
    Use(b, ana_);
    return ChargeOf(b.name());
  }

  absl::Status Reverse(const std::string& posting) {
    bl::PostCorrectionRequest fix;
    fix.set_posting(posting);
    fix.set_mode(bl::PostCorrectionRequest::REVERSE);
    fix.set_reason("granted in error");
    return billing_->PostCorrection(root_, fix).status();
  }

  // tem's figures of the days around day_, with every event so far folded
  // (each once: usage keeps the events it applied).
  v1::UsageFigures Tem() {
    for (const auto& [source, e] : OutboxEvents(*pool_)) {
      auto folded = figures_->Fold(source, e);
      EXPECT_TRUE(folded.ok()) << folded;
    }
    const absl::CivilDay day = absl::ToCivilDay(day_, shanghai_);
    v1::QueryUsageRequest q;
    *q.mutable_range()->mutable_start_time() = ToProto(absl::FromCivil(day - 1, shanghai_));
    *q.mutable_range()->mutable_end_time() = ToProto(absl::FromCivil(day + 2, shanghai_));
    q.mutable_filter()->add_instruments("instruments/tem");
    auto rows = figures_->QueryUsage(auditor_, q);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? rows->totals() : v1::UsageFigures();
  }

  // tem's service and subsidised income as they stand (every event folded)
  // and, when given, the voucher pool's balance.
  void ExpectStanding(int64_t income, int64_t subsidised, std::optional<int64_t> pool_balance = std::nullopt) {
    const v1::UsageFigures f = Tem();
    EXPECT_EQ(f.service_income().amount_minor(), income);
    EXPECT_EQ(f.subsidized_income().amount_minor(), subsidised);
    if (pool_balance) {
      EXPECT_EQ(Pool("subsidyPools/voucher").balance().amount_minor(), *pool_balance);
    }
  }

  std::unique_ptr<UsageFigures> figures_;
  absl::TimeZone shanghai_;
  Principal auditor_{"audrey", "", {Role::kAuditor}, absl::InfiniteFuture()};
};

TEST_F(UsageSubsidyReversalTest, ASubsidyReversedAloneThenItsChargeCountsEachOnce) {
  const bl::Charge charge = Session();
  ASSERT_EQ(charge.amount().amount_minor(), 50000);
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  ASSERT_EQ(charge.subsidy_total().amount_minor(), 5000);
  ExpectStanding(50000, 5000);

  // The subsidy alone: the payer owes all of it again; the owner's income
  // is what it was, none of it subsidised.
  ASSERT_TRUE(Reverse(charge.subsidy_postings(0)).ok());
  ExpectStanding(50000, 0);

  // Then the charge: its income goes, the subsidy is not taken out twice.
  ASSERT_TRUE(Reverse(charge.posting()).ok());
  ExpectStanding(0, 0, 1000000);
}

TEST_F(UsageSubsidyReversalTest, AChargeReversedFirstTakesItsSubsidyWithItOnce) {
  const bl::Charge charge = Session();
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  ASSERT_TRUE(Reverse(charge.posting()).ok());
  ExpectStanding(0, 0);
  // The subsidy went with its charge: reversing it again is refused and
  // changes nothing.
  const absl::Status again = Reverse(charge.subsidy_postings(0));
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
  EXPECT_EQ(ErrorReason(again), "ALREADY_REVERSED");
  ExpectStanding(0, 0, 1000000);
}

// Undoing a subsidy's reversal (reversing the reversal) gives the subsidy
// back, to the ledger and to the figures alike; the charge's reversal then
// takes it out with the rest.
TEST_F(UsageSubsidyReversalTest, AReversalOfASubsidysReversalGivesItBack) {
  const bl::Charge charge = Session();
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  bl::PostCorrectionRequest fix;
  fix.set_posting(charge.subsidy_postings(0));
  fix.set_mode(bl::PostCorrectionRequest::REVERSE);
  fix.set_reason("granted in error");
  auto reversal = billing_->PostCorrection(root_, fix);
  ASSERT_TRUE(reversal.ok()) << reversal.status();
  EXPECT_EQ(Tem().subsidized_income().amount_minor(), 0);
  ASSERT_TRUE(Reverse(reversal->correction().name()).ok());
  ExpectStanding(50000, 5000, 1000000 - 5000);
  ASSERT_TRUE(Reverse(charge.posting()).ok());
  ExpectStanding(0, 0, 1000000);
}

// Reversals of SUBSIDY postings stored by billing before they moved the
// subsidised parts (ReverseSubsidyTheOldWay: no subsidised_delta_sent, a
// CorrectionPosted with no income_deltas) moved none: usage still counts
// such a subsidy. billing_events.proto CorrectionPosted.income_deltas: the
// charge's later reversal takes it out, and reversing such a reversal moves
// no subsidised part; either way the charge adds up to what it stands at.
class UsageOldSubsidyReversalTest : public UsageSubsidyReversalTest {
 protected:
  // The income_deltas of the last CorrectionPosted published.
  std::vector<bl::IncomeFigures> LastDeltas() {
    std::vector<bl::IncomeFigures> out;
    for (const auto& e : Published()) {
      if (!e.has_correction_posted()) continue;
      out.assign(e.correction_posted().income_deltas().begin(), e.correction_posted().income_deltas().end());
    }
    return out;
  }

  bl::Posting Posting(const std::string& name) {
    bl::GetPostingRequest g;
    g.set_name(name);
    auto posting = billing_->GetPosting(root_, g);
    EXPECT_TRUE(posting.ok()) << posting.status();
    return posting.ok() ? *posting : bl::Posting();
  }

  // The last correction's delta is exactly the charge's income figures
  // `income` and `subsidised` (one owner, one payer share: lab).
  void ExpectDelta(int64_t income, int64_t subsidised) {
    const std::vector<bl::IncomeFigures> deltas = LastDeltas();
    ASSERT_EQ(deltas.size(), 1u);
    EXPECT_EQ(deltas[0].owner_organization(), "organizations/owner");
    EXPECT_EQ(deltas[0].service_income().amount_minor(), income);
    EXPECT_EQ(deltas[0].subsidised().amount_minor(), subsidised);
    ASSERT_EQ(deltas[0].shares_size(), 1);
    EXPECT_EQ(deltas[0].shares(0).payer_organization(), "organizations/lab");
    EXPECT_EQ(deltas[0].shares(0).service_income().amount_minor(), income);
    EXPECT_EQ(deltas[0].shares(0).subsidised().amount_minor(), subsidised);
  }
};

TEST_F(UsageOldSubsidyReversalTest, AChargeReversedAfterAnOldSubsidyReversalTakesItsSubsidisedPartOut) {
  const bl::Charge charge = Session();
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  const std::string old = ReverseSubsidyTheOldWay(charge.subsidy_postings(0));
  ASSERT_FALSE(old.empty());
  // As the old deployment left it: the figures kept the subsidy.
  ExpectStanding(50000, 5000, 1000000);

  // The charge's reversal takes out its income and the subsidised part
  // still counted; it reverses no subsidy again (the pool is as it was).
  ASSERT_TRUE(Reverse(charge.posting()).ok());
  ExpectDelta(-50000, -5000);
  ExpectStanding(0, 0, 1000000);
  EXPECT_EQ(ChargeOf(charge.booking()).state(), bl::Charge::REVERSED);
  // The old reversal's part has gone with the charge: it is marked so.
  EXPECT_TRUE(Posting(old).subsidised_delta_sent());
}

TEST_F(UsageOldSubsidyReversalTest, UndoingAnOldSubsidyReversalMovesNoSubsidisedPart) {
  const bl::Charge charge = Session();
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  const std::string old = ReverseSubsidyTheOldWay(charge.subsidy_postings(0));
  ASSERT_FALSE(old.empty());
  EXPECT_EQ(Tem().subsidized_income().amount_minor(), 5000);

  // The subsidy stands again; the figures held it all along.
  bl::PostCorrectionRequest fix;
  fix.set_posting(old);
  fix.set_mode(bl::PostCorrectionRequest::REVERSE);
  fix.set_reason("granted after all");
  auto undo = billing_->PostCorrection(root_, fix);
  ASSERT_TRUE(undo.ok()) << undo.status();
  EXPECT_FALSE(undo->correction().subsidised_delta_sent());
  EXPECT_TRUE(LastDeltas().empty());
  ExpectStanding(50000, 5000, 1000000 - 5000);

  // Reversed on its own again, now as reversals are: its part goes.
  ASSERT_TRUE(Reverse(undo->correction().name()).ok());
  ExpectDelta(0, -5000);
  ExpectStanding(50000, 0, 1000000);

  // And the charge: its income only.
  ASSERT_TRUE(Reverse(charge.posting()).ok());
  ExpectDelta(-50000, 0);
  ExpectStanding(0, 0, 1000000);
}

// With the old reversal undone, the charge's reversal takes the subsidy
// with it as any standing one.
TEST_F(UsageOldSubsidyReversalTest, AChargeReversedAfterAnOldSubsidyReversalWasUndoneTakesItOnce) {
  const bl::Charge charge = Session();
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  const std::string old = ReverseSubsidyTheOldWay(charge.subsidy_postings(0));
  ASSERT_FALSE(old.empty());
  ASSERT_TRUE(Reverse(old).ok());
  ASSERT_TRUE(Reverse(charge.posting()).ok());
  ExpectDelta(-50000, -5000);
  ExpectStanding(0, 0, 1000000);
}

// An ADJUST of a SUBSIDY posting stored the old way moved no subsidised
// part; its reversal moves none either (the charge's reversal then takes out
// the subsidy as posted, as the figures hold it).
TEST_F(UsageOldSubsidyReversalTest, ReversingAnOldAdjustOfASubsidyMovesNoSubsidisedPart) {
  const bl::Charge charge = Session();
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  // The pool pays 1000 less of it: the payer owes them to the owner again.
  bl::PostCorrectionRequest fix;
  fix.set_posting(charge.subsidy_postings(0));
  fix.set_mode(bl::PostCorrectionRequest::ADJUST);
  fix.set_reason("subsidy capped lower");
  auto entry = [&](const std::string& counterparty, bool debit) {
    bl::Entry* e = fix.add_entries();
    e->set_account("organizations/owner/accounts/receivable");
    e->set_counterparty(counterparty);
    *(debit ? e->mutable_debit() : e->mutable_credit()) = billing::MakeMoney("CNY", 1000);
  };
  entry("organizations/lab", true);
  entry("subsidyPools/voucher", false);
  const std::string old = PostTheOldWay(fix);
  ASSERT_FALSE(old.empty());
  EXPECT_EQ(Tem().subsidized_income().amount_minor(), 5000);

  ASSERT_TRUE(Reverse(old).ok());
  EXPECT_TRUE(LastDeltas().empty());
  ExpectStanding(50000, 5000);

  ASSERT_TRUE(Reverse(charge.posting()).ok());
  ExpectDelta(-50000, -5000);
  ExpectStanding(0, 0);
}

// The same ADJUST posted now moves the subsidised part and is marked; its
// reversal moves it back.
TEST_F(UsageOldSubsidyReversalTest, AnAdjustOfASubsidyPostedNowMovesItsPartAndItsReversalMovesItBack) {
  const bl::Charge charge = Session();
  ASSERT_EQ(charge.subsidy_postings_size(), 1);
  bl::PostCorrectionRequest fix;
  fix.set_posting(charge.subsidy_postings(0));
  fix.set_mode(bl::PostCorrectionRequest::ADJUST);
  fix.set_reason("subsidy capped lower");
  auto entry = [&](const std::string& counterparty, bool debit) {
    bl::Entry* e = fix.add_entries();
    e->set_account("organizations/owner/accounts/receivable");
    e->set_counterparty(counterparty);
    *(debit ? e->mutable_debit() : e->mutable_credit()) = billing::MakeMoney("CNY", 1000);
  };
  entry("organizations/lab", true);
  entry("subsidyPools/voucher", false);
  auto adjust = billing_->PostCorrection(root_, fix);
  ASSERT_TRUE(adjust.ok()) << adjust.status();
  EXPECT_TRUE(adjust->correction().subsidised_delta_sent());
  ExpectDelta(0, -1000);
  EXPECT_EQ(Tem().subsidized_income().amount_minor(), 4000);
  ASSERT_TRUE(Reverse(adjust->correction().name()).ok());
  ExpectDelta(0, 1000);
  EXPECT_EQ(Tem().subsidized_income().amount_minor(), 5000);
}

// Reversals posted now are marked: on its own, and with its charge.
TEST_F(UsageOldSubsidyReversalTest, ReversalsOfSubsidiesArePostedMarked) {
  const bl::Charge first = Session();
  ASSERT_EQ(first.subsidy_postings_size(), 1);
  bl::PostCorrectionRequest fix;
  fix.set_posting(first.subsidy_postings(0));
  fix.set_mode(bl::PostCorrectionRequest::REVERSE);
  fix.set_reason("granted in error");
  auto alone = billing_->PostCorrection(root_, fix);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_TRUE(alone->correction().subsidised_delta_sent());
  EXPECT_TRUE(Posting(alone->correction().name()).subsidised_delta_sent());
  ExpectDelta(0, -5000);

  bk::Booking b;
  ASSERT_TRUE(Book(absl::Hours(24 + 9), absl::Hours(24 + 10), &b).ok());
  Use(b, ana_);
  const bl::Charge second = ChargeOf(b.name());
  ASSERT_EQ(second.subsidy_postings_size(), 1);
  fix.set_posting(second.posting());
  auto whole = billing_->PostCorrection(root_, fix);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_FALSE(whole->correction().subsidised_delta_sent());  // a CHARGE posting's: no subsidised part of its own
  ASSERT_EQ(whole->related_corrections_size(), 1);
  EXPECT_TRUE(whole->related_corrections(0).subsidised_delta_sent());
  EXPECT_TRUE(Posting(whole->related_corrections(0).name()).subsidised_delta_sent());
  ExpectDelta(-50000, -5000);
}

}  // namespace
}  // namespace labshare::usage
