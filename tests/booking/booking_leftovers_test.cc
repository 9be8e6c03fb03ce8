// Booking defects found by the contract reads of 2026-12-05, each against
// the proto comment that settles it: a quota set mid-period, an outage
// during a technical-service run, CloseLease and its booking, and the
// report's sha256 in DeliverReport.
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;

class LeftoversTest : public BookingFlowsTest {
 protected:
  v1::ServiceOrder GetOrder(const std::string& name) {
    v1::GetServiceOrderRequest g;
    g.set_name(name);
    v1::ServiceOrder o;
    EXPECT_TRUE(Call(stub_.get(), &Stub::GetServiceOrder, g, &o, admin_).ok());
    return o;
  }
  // The booking events about `booking` in the outboxes, by kind.
  std::vector<std::string> EventKindsOf(const std::string& booking) {
    std::vector<std::string> kinds;
    for (const auto& e : Events()) {
      const auto* field = e.GetDescriptor()->FindFieldByNumber(e.payload_case());
      if (field == nullptr) continue;
      const auto& payload = e.GetReflection()->GetMessage(e, field);
      const auto* d = payload.GetDescriptor();
      for (int i = 0; i < d->field_count(); ++i) {
        const auto* f = d->field(i);
        if (f->is_repeated() || f->message_type() != v1::Booking::descriptor()) continue;
        const auto& b = static_cast<const v1::Booking&>(payload.GetReflection()->GetMessage(payload, f));
        if (b.name() == booking) kinds.push_back(field->name());
      }
    }
    return kinds;
  }
  // lab's HARD_LIMIT quota of `hours` per `period` on tem.
  grpc::Status SetLabQuota(int hours, v1::Quota* out, const std::string& request_id = "",
                           v1::Quota::Period period = v1::Quota::MONTH) {
    v1::SetQuotaRequest r;
    r.set_request_id(request_id);
    r.mutable_quota()->set_instrument("instruments/tem");
    r.mutable_quota()->set_organization("organizations/lab");
    r.mutable_quota()->set_period(period);
    r.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
    *r.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(hours));
    return Call(stub_.get(), &Stub::SetQuota, r, out, admin_);
  }
  v1::QuotaUsage Usage(const std::string& quota) {
    v1::GetQuotaUsageRequest r;
    r.set_quota(quota);
    *r.mutable_time() = ToProto(day_);
    v1::QuotaUsage u;
    auto s = Call(stub_.get(), &Stub::GetQuotaUsage, r, &u, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return u;
  }
  // A started run (order IN_PROGRESS, its booking checked in at 9:00).
  v1::ServiceOrder Started() {
    v1::ServiceOrder o = Scheduled(), out;
    clock_.Set(day_ + absl::Hours(9));
    v1::StartServiceRequest st;
    st.set_name(o.name());
    auto s = Call(stub_.get(), &Stub::StartService, st, &out, staff_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
    EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
    return out;
  }
};

// SetQuota charges the counted bookings that exist and start in the quota's
// current period or later (its comment): they count in GetQuotaUsage and
// against the allowance left for later bookings, as used once COMPLETED;
// they are not refused themselves; a cancellation releases what was
// charged; a retry charges nothing twice. (It counted only bookings made
// after the quota.)
TEST_F(LeftoversTest, QuotaSetMidPeriodChargesTheBookingsMadeBeforeIt) {
  v1::Booking done, before, later;
  ASSERT_TRUE(Book(absl::Hours(7), absl::Hours(8), &done).ok());
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(11), &before, "before-1").ok());
  ASSERT_TRUE(Book(absl::Hours(14), absl::Hours(17), &later).ok());
  clock_.Set(day_ + absl::Hours(7));
  v1::CheckInRequest in;
  in.set_name(done.name());
  v1::Booking b;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &b, ana_).ok());
  clock_.Set(day_ + absl::Hours(7) + absl::Minutes(30));
  v1::CheckOutRequest out;
  out.set_name(done.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckOut, out, &b, ana_).ok());
  ASSERT_EQ(b.state(), v1::Booking::COMPLETED);

  // 7 hours a month, HARD_LIMIT: 1 h used, 5 h committed when it is set.
  v1::Quota q;
  ASSERT_TRUE(SetLabQuota(7, &q, "quota-1").ok());
  for (const auto& name : {done.name(), before.name(), later.name()}) {
    const v1::Booking charged = Get(name);
    ASSERT_EQ(charged.quota_charges_size(), 1) << name;
    EXPECT_EQ(charged.quota_charges(0).quota(), q.name());
    EXPECT_EQ(FromProto(charged.quota_charges(0).period_interval().start_time()),
              FromProto(Usage(q.name()).period_interval().start_time()));
  }
  EXPECT_NE(Get(before.name()).etag(), before.etag());
  // A retry of the booking's own request still gets its first answer.
  v1::Booking retried;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(11), &retried, "before-1").ok());
  EXPECT_EQ(retried.SerializeAsString(), before.SerializeAsString());
  v1::QuotaUsage u = Usage(q.name());
  EXPECT_EQ(FromProto(u.used()), absl::Hours(1));
  EXPECT_EQ(FromProto(u.committed()), absl::Hours(5));
  EXPECT_EQ(FromProto(u.remaining()), absl::Hours(1));

  // The same request again: its first answer, nothing charged twice.
  v1::Quota again;
  ASSERT_TRUE(SetLabQuota(7, &again, "quota-1").ok());
  EXPECT_EQ(again.etag(), q.etag());
  EXPECT_EQ(FromProto(Usage(q.name()).committed()), absl::Hours(5));

  // What is left is 1 hour: a 2-hour booking is refused, a 1-hour one fits.
  v1::Booking refused, fits;
  auto s = Book(absl::Hours(18), absl::Hours(20), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "QUOTA_EXCEEDED");
  ASSERT_TRUE(Book(absl::Hours(18), absl::Hours(19), &fits).ok());
  EXPECT_EQ(FromProto(Usage(q.name()).remaining()), absl::ZeroDuration());

  // Cancelling a booking charged by SetQuota gives its hours back.
  v1::CancelBookingRequest cancel;
  cancel.set_name(later.name());
  cancel.set_reason("plans changed");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, cancel, &b, admin_).ok());
  u = Usage(q.name());
  EXPECT_EQ(FromProto(u.used()), absl::Hours(1));
  EXPECT_EQ(FromProto(u.committed()), absl::Hours(3));
  EXPECT_EQ(FromProto(u.remaining()), absl::Hours(3));
}

// Bookings of an earlier period instance are history: a quota set later
// does not charge them; nor bookings of another paying organisation.
TEST_F(LeftoversTest, QuotaSetLaterLeavesEarlierPeriodsUncharged) {
  v1::Booking earlier;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(11), &earlier).ok());
  clock_.Set(day_ + absl::Hours(24 * 40));  // a later month
  v1::Quota q;
  ASSERT_TRUE(SetLabQuota(10, &q).ok());
  EXPECT_EQ(Get(earlier.name()).quota_charges_size(), 0);
  EXPECT_EQ(Get(earlier.name()).etag(), earlier.etag());
  EXPECT_EQ(FromProto(Usage(q.name()).committed()), absl::ZeroDuration());
}

// SetQuota while bookings are being created: every booking ends up charged
// exactly once by each quota, by its create step (made after the quota) or
// by SetQuota (made before), and the counters hold exactly the charged
// hours. Four quotas are set one after another while the creates run.
TEST_F(LeftoversTest, QuotaSetDuringCreatesChargesEveryBookingOnce) {
  constexpr int kThreads = 4, kEach = 16;
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  std::vector<std::vector<std::string>> made(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const absl::Duration from = absl::Hours(24 * i + 2 * t);  // a slot of its own
        v1::Booking b;
        auto s = Book(from, from + absl::Hours(1), &b);
        EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
        if (s.ok()) made[t].push_back(b.name());
        created.fetch_add(1);
      }
    });
  }
  while (created.load() < kThreads) std::this_thread::yield();  // the creates are under way
  for (auto period : {v1::Quota::WEEK, v1::Quota::MONTH, v1::Quota::QUARTER, v1::Quota::YEAR}) {
    v1::Quota q;
    auto s = SetLabQuota(1000, &q, "", period);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
  }
  for (auto& th : threads) th.join();
  // And one booking made after all four: charged by its own create step.
  v1::Booking last;
  ASSERT_TRUE(Book(absl::Hours(24 * kEach), absl::Hours(24 * kEach + 1), &last).ok());
  EXPECT_EQ(last.quota_charges_size(), 4);
  EXPECT_EQ(last.etag(), "1");
  made[0].push_back(last.name());
  int charged_later = 0;  // by SetQuota, after their creation
  for (const auto& names : made) {
    for (const auto& name : names) charged_later += Get(name).etag() != "1";
  }
  EXPECT_GE(charged_later, kThreads) << "the bookings made before the first quota";
  // Hours charged per (quota, period instance).
  std::map<std::pair<std::string, absl::Time>, absl::Duration> charged;
  for (const auto& names : made) {
    for (const auto& name : names) {
      const v1::Booking b = Get(name);
      ASSERT_EQ(b.quota_charges_size(), 4) << name;
      for (const auto& c : b.quota_charges()) {
        charged[{c.quota(), FromProto(c.period_interval().start_time())}] += absl::Hours(1);
      }
    }
  }
  for (const auto& [at, hours] : charged) {
    v1::GetQuotaUsageRequest r;
    r.set_quota(at.first);
    *r.mutable_time() = ToProto(at.second);
    v1::QuotaUsage u;
    ASSERT_TRUE(Call(stub_.get(), &Stub::GetQuotaUsage, r, &u, admin_).ok());
    EXPECT_EQ(FromProto(u.committed()), hours) << at.first << " " << at.second;
  }
}

// ApplyMaintenanceWindow during a run IN_PROGRESS: the run's session is
// checked out at the window start (interrupted_by_outage); the order stays
// IN_PROGRESS, as the comments of ApplyMaintenanceWindow and ServiceOrder
// now say, and DeliverReport moves it on without touching the booking.
TEST_F(LeftoversTest, OutageDuringARunLeavesTheOrderForItsReport) {
  const v1::ServiceOrder order = Started();
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(10));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  mw.mutable_maintenance_window()->set_reason("cooling failure");
  mw.mutable_maintenance_window()->set_outage(true);
  iv::MaintenanceWindow window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  v1::ApplyMaintenanceWindowRequest apply;
  apply.set_maintenance_window(window.name());
  apply.set_request_id("outage-1");
  v1::ApplyMaintenanceWindowResponse result;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, &result, admin_).ok());
  ASSERT_EQ(result.interrupted_bookings_size(), 1);
  EXPECT_EQ(result.interrupted_bookings(0), order.booking());
  EXPECT_EQ(result.unscheduled_orders_size(), 0);
  const v1::Booking run = Get(order.booking());
  EXPECT_EQ(run.state(), v1::Booking::COMPLETED);
  EXPECT_TRUE(run.interrupted_by_outage());
  EXPECT_EQ(FromProto(run.session().end_time()), day_ + absl::Hours(10));
  EXPECT_EQ(GetOrder(order.name()).state(), v1::ServiceOrder::IN_PROGRESS);

  clock_.Set(day_ + absl::Hours(13));
  v1::DeliverReportRequest dr;
  dr.set_name(order.name());
  dr.mutable_report()->set_uri("dms://reports/partial-run");
  dr.mutable_report()->set_summary("two of three grids imaged before the outage");
  dr.set_request_id("deliver-1");
  v1::ServiceOrder delivered;
  auto s = Call(stub_.get(), &Stub::DeliverReport, dr, &delivered, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
  EXPECT_EQ(delivered.state(), v1::ServiceOrder::REPORT_DELIVERED);
  EXPECT_EQ(Get(order.booking()).etag(), run.etag());
}

// CloseLease changes the lease alone: the lease's booking (COMPLETED since
// the return) keeps its etag and update_time, and no booking event but
// LeaseClosed is published for it.
TEST_F(LeftoversTest, CloseLeaseDoesNotRewriteItsBooking) {
  v1::Lease lease, out;
  ASSERT_TRUE(Request(1, 11, &lease).ok());
  ASSERT_TRUE(Approve(lease.name(), &lease).ok());
  clock_.Set(day_);
  v1::RecordHandoverRequest h;
  h.set_name(lease.name());
  h.set_condition_notes("probe holder complete");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_).ok());
  clock_.Set(day_ + absl::Hours(24 * 5));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as handed over");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_).ok());
  const v1::Booking returned = BookingOf(lease);
  ASSERT_EQ(returned.state(), v1::Booking::COMPLETED);
  const std::vector<std::string> booking_events = EventKindsOf(lease.booking());
  const size_t events_before = Events().size();

  clock_.Set(day_ + absl::Hours(24 * 6));
  v1::CloseLeaseRequest close;
  close.set_name(lease.name());
  close.set_request_id("close-1");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CloseLease, close, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::Lease::CLOSED);
  const v1::Booking closed = BookingOf(lease);
  EXPECT_EQ(closed.etag(), returned.etag());
  EXPECT_EQ(FromProto(closed.update_time()), FromProto(returned.update_time()));
  EXPECT_EQ(closed.SerializeAsString(), returned.SerializeAsString());
  // One event, LeaseClosed; none about the booking (it did not change).
  const std::vector<v1::BookingEvent> events = Events();
  ASSERT_EQ(events.size(), events_before + 1);
  EXPECT_TRUE(events.back().has_lease_closed());
  EXPECT_EQ(events.back().lease_closed().lease().name(), lease.name());
  EXPECT_EQ(EventKindsOf(lease.booking()), booking_events);
  // A retry answers the same lease and changes nothing.
  v1::Lease again;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CloseLease, close, &again, staff_).ok());
  EXPECT_EQ(again.SerializeAsString(), out.SerializeAsString());
  EXPECT_EQ(Events().size(), events_before + 1);
  EXPECT_EQ(BookingOf(lease).etag(), returned.etag());
}

// DeliverReport: ServiceReport.sha256 is "Hex SHA-256 of the report file";
// when given it must be 64 hex digits (INVALID_FIELD naming report.sha256),
// and it may be left empty.
TEST_F(LeftoversTest, DeliverReportChecksTheReportSha256) {
  const v1::ServiceOrder order = Started();
  clock_.Set(day_ + absl::Hours(10));
  v1::DeliverReportRequest dr;
  dr.set_name(order.name());
  dr.mutable_report()->set_uri("dms://reports/run-1");
  v1::ServiceOrder out;
  for (const std::string& bad : {std::string("abc"), std::string(63, 'a'), std::string(65, 'a'),
                                std::string(63, 'a') + "g", std::string(64, ' ')}) {
    dr.mutable_report()->set_sha256(bad);
    auto s = Call(stub_.get(), &Stub::DeliverReport, dr, &out, staff_);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "sha256 \"" << bad << "\"";
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << "sha256 \"" << bad << "\"";
    EXPECT_TRUE(absl::StartsWith(s.error_message(), "report.sha256")) << s.error_message();
  }
  EXPECT_EQ(GetOrder(order.name()).state(), v1::ServiceOrder::IN_PROGRESS);
  const std::string digest = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
  dr.mutable_report()->set_sha256(digest);
  auto s = Call(stub_.get(), &Stub::DeliverReport, dr, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
  EXPECT_EQ(out.state(), v1::ServiceOrder::REPORT_DELIVERED);
  ASSERT_EQ(out.reports_size(), 1);
  EXPECT_EQ(out.reports(0).sha256(), digest);
}

// An empty sha256 is allowed (the comment asks for the uri only).
TEST_F(LeftoversTest, DeliverReportWithoutSha256) {
  const v1::ServiceOrder order = Started();
  v1::DeliverReportRequest dr;
  dr.set_name(order.name());
  dr.mutable_report()->set_uri("dms://reports/run-1");
  v1::ServiceOrder out;
  auto s = Call(stub_.get(), &Stub::DeliverReport, dr, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
  EXPECT_EQ(out.state(), v1::ServiceOrder::REPORT_DELIVERED);
}

}  // namespace
}  // namespace labshare::booking
