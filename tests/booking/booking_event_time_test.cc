// EventHeader.event_time (types.proto): "Service clock time of the state
// change". Each booking event's time is the instant its change stamped on
// the resource the payload carries: its update_time (for a create also its
// create_time; and the time the change records, such as cancel_time,
// decide_time or quote_time), in the snapshot and in the stored resource.
// The events were stamped from a later reading of the clock than the
// resource, so with a clock that moves on every reading they differed.
// QuotaDeleted and MaintenanceApplied change no stamped resource: they are
// only counted.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;

// The fixture's clock plus one microsecond more on every reading: two
// readings within one call never agree, and the test still moves time by
// moving the fixture's clock.
class TickingClock final : public Clock {
 public:
  explicit TickingClock(const Clock* base) : base_(base) {}
  absl::Time Now() const override { return base_->Now() + absl::Microseconds(++ticks_); }

 private:
  const Clock* base_;
  mutable std::atomic<int64_t> ticks_{0};
};

class EventTimeTest : public BookingFlowsTest {
 protected:
  void SetUp() override {
    BookingFlowsTest::SetUp();
    if (HasFatalFailure()) return;
    // The booking service again, its manager on the ticking clock (inventory
    // and the token checks keep the fixture's).
    server_.reset();
    service_.reset();
    manager_ = std::make_unique<BookingManager>(store_.get(), inv_client_.get(), &tick_, testing::TestPageTokens());
    service_ = std::make_unique<BookingService>(manager_.get(), auth_.get());
    server_ = Start("booking", auth_.get(), service_.get());
    stub_ = v1::BookingService::NewStub(Channel(*server_));
    admin_p_ = Principal{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(24 * 400)};
  }
  void TearDown() override {
    // Nothing may read the ticking clock once it is gone.
    server_.reset();
    service_.reset();
    manager_.reset();
  }

  // Every event both outbox kinds hold (instrument partitions and projects).
  std::vector<v1::BookingEvent> AllEvents() {
    std::vector<v1::BookingEvent> out = Events();
    auto v = pool_->Command({"XRANGE", keys::ProjectOutbox(), "-", "+"});
    for (const auto& entry : v->elements) {
      v1::BookingEvent e;
      e.ParseFromString(entry.elements[1].elements[3].str);
      out.push_back(std::move(e));
    }
    return out;
  }

  // The resource an event's payload carries, by its kind (a lease event's
  // lease, an order event's order, ...); nullptr for an event that carries
  // no stamped resource.
  static const google::protobuf::Message* SnapshotOf(const v1::BookingEvent& e) {
    const int n = static_cast<int>(e.payload_case());
    const char* field = n < 30 ? "booking" : n < 50 ? "lease" : n < 60 ? "project" : n < 80 ? "service_order"
                        : n == v1::BookingEvent::kQuotaSet ? "quota" : nullptr;
    if (field == nullptr) return nullptr;
    const auto* payload_field = e.GetDescriptor()->FindFieldByNumber(n);
    const auto& payload = e.GetReflection()->GetMessage(e, payload_field);
    const auto* f = payload.GetDescriptor()->FindFieldByName(field);
    if (f == nullptr) return nullptr;
    return &payload.GetReflection()->GetMessage(payload, f);
  }
  static google::protobuf::Timestamp UpdateTimeOf(const google::protobuf::Message& m) {
    const auto* f = m.GetDescriptor()->FindFieldByName("update_time");
    google::protobuf::Timestamp t;
    if (f != nullptr) t.CopyFrom(m.GetReflection()->GetMessage(m, f));
    return t;
  }
  static std::string NameOf(const google::protobuf::Message& m) {
    const auto* f = m.GetDescriptor()->FindFieldByName("name");
    return f == nullptr ? "" : m.GetReflection()->GetString(m, f);
  }
  // The resource as stored now (bookings, leases, orders, projects).
  std::optional<google::protobuf::Timestamp> StoredUpdateTime(const google::protobuf::Message& snapshot) {
    const std::string name = NameOf(snapshot);
    const auto* d = snapshot.GetDescriptor();
    if (d == v1::Booking::descriptor()) {
      v1::GetBookingRequest g;
      g.set_name(name);
      auto got = manager_->GetBooking(admin_p_, g);
      EXPECT_TRUE(got.ok()) << name << ": " << got.status();
      if (got.ok()) return got->update_time();
    } else if (d == v1::Lease::descriptor()) {
      v1::GetLeaseRequest g;
      g.set_name(name);
      auto got = manager_->GetLease(admin_p_, g);
      EXPECT_TRUE(got.ok()) << name << ": " << got.status();
      if (got.ok()) return got->update_time();
    } else if (d == v1::ServiceOrder::descriptor()) {
      v1::GetServiceOrderRequest g;
      g.set_name(name);
      auto got = manager_->GetServiceOrder(admin_p_, g);
      EXPECT_TRUE(got.ok()) << name << ": " << got.status();
      if (got.ok()) return got->update_time();
    } else if (d == v1::Project::descriptor()) {
      v1::GetProjectRequest g;
      g.set_name(name);
      auto got = manager_->GetProject(admin_p_, g);
      EXPECT_TRUE(got.ok()) << name << ": " << got.status();
      if (got.ok()) return got->update_time();
    }
    return std::nullopt;
  }

  // The events `what` published (those not seen before): each one's
  // event_time is its snapshot's update_time; with `each_once` (`what`
  // changed each resource once) the stored resource's too; with `one_step`
  // (the events are one step's) all of them share it. Returns that time
  // for the caller to compare with what the change recorded.
  google::protobuf::Timestamp Published(const std::string& what, bool one_step = true, bool each_once = true) {
    google::protobuf::Timestamp step_time;
    int fresh = 0;
    for (const auto& e : AllEvents()) {
      if (!seen_.insert(e.header().event_id()).second) continue;
      ++fresh;
      const std::string kind = v1::BookingEvent::descriptor()->FindFieldByNumber(e.payload_case())->name();
      kinds_.insert(kind);
      const std::string label = what + ", " + kind;
      const google::protobuf::Timestamp& at = e.header().event_time();
      const google::protobuf::Message* snapshot = SnapshotOf(e);
      if (snapshot == nullptr) continue;  // QuotaDeleted, MaintenanceApplied
      const google::protobuf::Timestamp stamped = UpdateTimeOf(*snapshot);
      EXPECT_EQ(FromProto(at), FromProto(stamped)) << label << ": event_time vs the snapshot's update_time";
      if (auto stored = each_once ? StoredUpdateTime(*snapshot) : std::nullopt) {
        EXPECT_EQ(FromProto(at), FromProto(*stored)) << label << ": event_time vs the stored " << NameOf(*snapshot);
      }
      if (step_time.seconds() == 0 && step_time.nanos() == 0) step_time = at;
      if (one_step) {
        EXPECT_EQ(FromProto(at), FromProto(step_time)) << label << ": one time for the step's events";
      }
    }
    EXPECT_GT(fresh, 0) << what << " published nothing";
    return step_time;
  }

  // The event time of `what`'s step equals `stamped`, the time the change recorded.
  void ExpectStamped(const std::string& what, const google::protobuf::Timestamp& stamped) {
    EXPECT_EQ(FromProto(Published(what)), FromProto(stamped)) << what;
  }

  v1::Booking MakeBooking(absl::Duration from, absl::Duration to) {
    v1::Booking b;
    grpc::Status s = Book(from, to, &b);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return b;
  }
  v1::Lease MakeLease(int from_days, int to_days) {
    v1::Lease l;
    grpc::Status s = Request(from_days, to_days, &l);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return l;
  }
  v1::ServiceOrder Schedule(const std::string& order, absl::Duration from, absl::Duration to) {
    v1::ScheduleServiceRequest sch;
    sch.set_name(order);
    *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    v1::ServiceOrder out;
    grpc::Status s = Call(stub_.get(), &Stub::ScheduleService, sch, &out, staff_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return out;
  }
  v1::ApplyMaintenanceWindowResponse Window(const std::string& instrument, absl::Duration from, absl::Duration to) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent(instrument);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    mw.mutable_maintenance_window()->set_reason("stage alignment");
    iv::MaintenanceWindow window;
    EXPECT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window.name());
    v1::ApplyMaintenanceWindowResponse result;
    grpc::Status s = Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, &result, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return result;
  }

  TickingClock tick_{&clock_};
  Principal admin_p_;
  std::set<std::string> seen_;   // event ids looked at
  std::set<std::string> kinds_;  // payload kinds met
};

TEST_F(EventTimeTest, EveryEventCarriesTheTimeItsChangeStamped) {
  // ---- projects and quotas
  v1::CreateProjectRequest cp;
  cp.set_project_id("films");
  cp.mutable_project()->set_title("thin films");
  for (const std::string org : {"organizations/owner", "organizations/lab"}) {
    auto* part = cp.mutable_project()->add_participants();
    part->set_organization(org);
    part->set_share_bps(5000);
  }
  *cp.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_);
  *cp.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
  auto* budget = cp.mutable_project()->add_instrument_budgets();
  budget->set_instrument("instruments/tem");
  *budget->mutable_budget() = ToProto(absl::Hours(40));
  v1::Project project;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateProject, cp, &project, admin_).ok());
  EXPECT_EQ(FromProto(project.create_time()), FromProto(project.update_time()));
  ExpectStamped("CreateProject", project.create_time());
  v1::UpdateProjectRequest up;
  *up.mutable_project() = project;
  up.mutable_project()->set_title("thin films II");
  up.mutable_update_mask()->add_paths("title");
  ASSERT_TRUE(Call(stub_.get(), &Stub::UpdateProject, up, &project, admin_).ok());
  ExpectStamped("UpdateProject", project.update_time());

  v1::SetQuotaRequest sq;
  sq.mutable_quota()->set_organization("organizations/outsider");  // nobody who books here
  sq.mutable_quota()->set_instrument("instruments/tem");
  sq.mutable_quota()->set_period(v1::Quota::MONTH);
  sq.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
  *sq.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(10));
  v1::Quota quota;
  ASSERT_TRUE(Call(stub_.get(), &Stub::SetQuota, sq, &quota, admin_).ok());
  EXPECT_EQ(FromProto(quota.create_time()), FromProto(quota.update_time()));
  ExpectStamped("SetQuota (new)", quota.update_time());
  *sq.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(12));
  ASSERT_TRUE(Call(stub_.get(), &Stub::SetQuota, sq, &quota, admin_).ok());
  ExpectStamped("SetQuota (replaced)", quota.update_time());
  v1::DeleteQuotaRequest dq;
  dq.set_name(quota.name());
  google::protobuf::Empty none;
  ASSERT_TRUE(Call(stub_.get(), &Stub::DeleteQuota, dq, &none, admin_).ok());
  Published("DeleteQuota");

  // ---- bookings of tem (ana), all made now, two days ahead
  const v1::Booking a = MakeBooking(absl::Hours(9), absl::Hours(10));  // checked in and out
  ASSERT_EQ(a.state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(FromProto(a.create_time()), FromProto(a.update_time()));
  ExpectStamped("CreateBooking", a.create_time());
  const v1::Booking b = MakeBooking(absl::Hours(11), absl::Hours(12));  // cancelled
  Published("CreateBooking b");
  const v1::Booking c = MakeBooking(absl::Hours(48), absl::Hours(58));  // approved (10 h: a residency)
  ASSERT_EQ(c.state(), v1::Booking::PENDING_APPROVAL);
  Published("CreateBooking c");
  const v1::Booking d = MakeBooking(absl::Hours(72), absl::Hours(82));  // rejected
  Published("CreateBooking d");
  const v1::Booking e = MakeBooking(absl::Hours(13), absl::Hours(14));  // missed
  Published("CreateBooking e");
  const v1::Booking f = MakeBooking(absl::Hours(15), absl::Hours(24));  // expires pending
  ASSERT_EQ(f.state(), v1::Booking::PENDING_APPROVAL);
  Published("CreateBooking f");
  const v1::Booking g = MakeBooking(absl::Hours(5), absl::Hours(6));  // checked in, checked out by the sweep
  Published("CreateBooking g");
  const v1::Booking h = MakeBooking(absl::Hours(97), absl::Hours(98));  // cancelled by maintenance
  Published("CreateBooking h");

  v1::CancelBookingRequest cb;
  cb.set_name(b.name());
  cb.set_reason("plans changed");
  v1::Booking out;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, cb, &out, ana_).ok());
  ExpectStamped("CancelBooking", out.cancellation().cancel_time());
  v1::ApproveBookingRequest ab;
  ab.set_name(c.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveBooking, ab, &out, staff_).ok());
  ExpectStamped("ApproveBooking", out.decision().decide_time());
  v1::RejectBookingRequest rb;
  rb.set_name(d.name());
  rb.set_reason("the stage is booked for calibration");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RejectBooking, rb, &out, staff_).ok());
  ExpectStamped("RejectBooking", out.decision().decide_time());

  // ---- leases of afm
  v1::Lease l1 = MakeLease(1, 11);  // approved, extended, handed over, returned early, closed
  EXPECT_EQ(FromProto(l1.create_time()), FromProto(l1.update_time()));
  ExpectStamped("RequestLease", l1.create_time());
  v1::Lease lease;
  ASSERT_TRUE(Approve(l1.name(), &lease).ok());
  ExpectStamped("ApproveLease", lease.contract().approve_time());
  v1::ExtendLeaseRequest ext;
  ext.set_name(l1.name());
  *ext.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 12));
  ASSERT_TRUE(Call(stub_.get(), &Stub::ExtendLease, ext, &lease, staff_).ok());
  ASSERT_GT(lease.extensions_size(), 0);
  ExpectStamped("ExtendLease", lease.extensions(lease.extensions_size() - 1).extend_time());
  const v1::Lease l2 = MakeLease(30, 40);  // rejected
  Published("RequestLease l2");
  v1::RejectLeaseRequest rl;
  rl.set_name(l2.name());
  rl.set_reason("the instrument stays on site that month");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RejectLease, rl, &lease, staff_).ok());
  ExpectStamped("RejectLease", lease.update_time());
  const v1::Lease l3 = MakeLease(42, 52);  // approved, then cancelled
  Published("RequestLease l3");
  ASSERT_TRUE(Approve(l3.name(), &lease).ok());
  Published("ApproveLease l3");
  v1::CancelLeaseRequest cl;
  cl.set_name(l3.name());
  cl.set_reason("project postponed");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelLease, cl, &lease, ana_).ok());
  ExpectStamped("CancelLease", lease.update_time());
  const v1::Lease l4 = MakeLease(16, 23);  // cancelled by maintenance
  Published("RequestLease l4");

  // ---- technical-service orders on tem
  v1::ServiceOrder o1 = Order3();  // quoted, accepted, received, scheduled, rescheduled, run, reported
  EXPECT_EQ(FromProto(o1.create_time()), FromProto(o1.update_time()));
  ExpectStamped("CreateServiceOrder", o1.create_time());
  v1::ServiceOrder order;
  ASSERT_TRUE(Quote(o1.name(), &order, staff_).ok());
  ExpectStamped("IssueQuote", order.quote().quote_time());
  v1::AcceptQuoteRequest aq;
  aq.set_name(o1.name());
  aq.set_quote_etag(order.quote().quote_etag());
  ASSERT_TRUE(Call(stub_.get(), &Stub::AcceptQuote, aq, &order, ana_).ok());
  ExpectStamped("AcceptQuote", order.quote_accept_time());
  v1::ReceiveSamplesRequest rs;
  rs.set_name(o1.name());
  rs.set_received_sample_count(3);
  ASSERT_TRUE(Call(stub_.get(), &Stub::ReceiveSamples, rs, &order, staff_).ok());
  ExpectStamped("ReceiveSamples", order.samples_receive_time());
  order = Schedule(o1.name(), absl::Hours(33), absl::Hours(35));
  ExpectStamped("ScheduleService", order.update_time());
  const std::string first_run = order.booking();
  order = Schedule(o1.name(), absl::Hours(36), absl::Hours(38));
  ExpectStamped("ScheduleService (reschedule)", order.update_time());
  v1::GetBookingRequest gb;
  gb.set_name(first_run);
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, gb, &out, admin_).ok());
  EXPECT_EQ(FromProto(out.cancellation().cancel_time()), FromProto(order.update_time())) << "the replaced run";

  v1::ServiceOrder o2 = Received();  // its run cancelled by staff, then by maintenance
  Published("Received o2", false, false);  // four steps of one order
  order = Schedule(o2.name(), absl::Hours(60), absl::Hours(61));
  Published("ScheduleService o2");
  cb.set_name(order.booking());
  cb.set_reason("operator ill");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, cb, &out, staff_).ok());
  ExpectStamped("CancelBooking (a run)", out.cancellation().cancel_time());
  // After h and its buffer, before the window's end.
  order = Schedule(o2.name(), absl::Hours(98) + absl::Minutes(30), absl::Hours(99) + absl::Minutes(30));
  Published("ScheduleService o2 again");

  v1::ServiceOrder o3 = Order3();  // cancelled by its client
  Published("CreateServiceOrder o3");
  v1::CancelOrderRequest co;
  co.set_name(o3.name());
  co.set_reason("no longer needed");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelOrder, co, &order, ana_).ok());
  ExpectStamped("CancelOrder", order.cancel_time());

  // ---- maintenance: h and o2's run on tem, l4 on afm
  v1::ApplyMaintenanceWindowResponse applied = Window("instruments/tem", absl::Hours(96), absl::Hours(100));
  EXPECT_EQ(applied.cancelled_bookings_size(), 2);
  EXPECT_EQ(applied.unscheduled_orders_size(), 1);
  Published("ApplyMaintenanceWindow tem", false);  // a step per touched resource, then MaintenanceApplied
  applied = Window("instruments/afm", absl::Hours(24 * 17), absl::Hours(24 * 18));
  EXPECT_EQ(applied.cancelled_leases_size(), 1);
  Published("ApplyMaintenanceWindow afm", false);

  // ---- sessions and the sweep, as the day goes on
  clock_.Set(day_ + absl::Hours(5));
  v1::CheckInRequest ci;
  ci.set_name(g.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, ci, &out, ana_).ok());
  ExpectStamped("CheckIn", out.session().start_time());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(1));
  auto swept = manager_->Sweep();  // g forgotten: checked out at a's start
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 1);
  Published("Sweep (auto check-out)");
  gb.set_name(g.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, gb, &out, admin_).ok());
  EXPECT_TRUE(out.session().auto_checked_out());
  ci.set_name(a.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, ci, &out, ana_).ok());
  Published("CheckIn a");
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  v1::CheckOutRequest cout;
  cout.set_name(a.name());
  cout.set_release_remaining(true);
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckOut, cout, &out, ana_).ok());
  ExpectStamped("CheckOut (remainder released)", out.session().end_time());
  clock_.Set(day_ + absl::Hours(16));
  swept = manager_->Sweep();  // e missed, f expired
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 2);
  Published("Sweep (missed, expired)", false);

  // ---- the lease goes out and comes back
  clock_.Set(day_ + absl::Hours(24) + absl::Minutes(1));
  v1::RecordHandoverRequest ho;
  ho.set_name(l1.name());
  ho.set_condition_notes("clean, calibrated");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, ho, &lease, staff_).ok());
  ExpectStamped("RecordHandover", lease.handover().handover_time());

  // ---- o1's run
  clock_.Set(day_ + absl::Hours(36));
  v1::StartServiceRequest ss;
  ss.set_name(o1.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, ss, &order, staff_).ok());
  Published("StartService");
  clock_.Set(day_ + absl::Hours(37));
  v1::DeliverReportRequest dr;
  dr.set_name(o1.name());
  dr.mutable_report()->set_uri("s3://reports/o1.pdf");
  ASSERT_TRUE(Call(stub_.get(), &Stub::DeliverReport, dr, &order, staff_).ok());
  ASSERT_GT(order.reports_size(), 0);
  ExpectStamped("DeliverReport", order.reports(order.reports_size() - 1).deliver_time());
  v1::DisputeReportRequest dis;
  dis.set_name(o1.name());
  dis.set_reason("grid 2 is missing");
  ASSERT_TRUE(Call(stub_.get(), &Stub::DisputeReport, dis, &order, ana_).ok());
  ExpectStamped("DisputeReport", order.dispute_time());
  dr.mutable_report()->set_uri("s3://reports/o1-v2.pdf");
  ASSERT_TRUE(Call(stub_.get(), &Stub::DeliverReport, dr, &order, staff_).ok());
  Published("DeliverReport again");
  v1::AcceptReportRequest ar;
  ar.set_name(o1.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::AcceptReport, ar, &order, ana_).ok());
  ExpectStamped("AcceptReport", order.report_accept_time());

  clock_.Set(day_ + absl::Hours(24 * 5));
  v1::RecordReturnRequest ret;
  ret.set_name(l1.name());
  ret.set_condition_notes("as handed over");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordReturn, ret, &lease, staff_).ok());
  ASSERT_TRUE(lease.return_record().early_return());
  ExpectStamped("RecordReturn (early)", lease.return_record().return_time());
  v1::CloseLeaseRequest close;
  close.set_name(l1.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CloseLease, close, &lease, staff_).ok());
  ExpectStamped("CloseLease", lease.settlement().close_time());

  // ---- tem out of service when i's check-in closes: the sweep cancels it
  // as an outage, stamped with its own step's instant.
  const v1::Booking i = MakeBooking(absl::Hours(24 * 6), absl::Hours(24 * 6 + 1));
  Published("CreateBooking i");
  iv::SetInstrumentStateRequest st;
  st.set_name("instruments/tem");
  st.set_state(iv::MAINTENANCE);
  st.set_reason("vacuum pump service");
  iv::Instrument tem;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::SetInstrumentState, st, &tem, admin_).ok());
  clock_.Set(day_ + absl::Hours(24 * 6 + 1));
  swept = manager_->Sweep();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_GE(*swept, 1);
  Published("Sweep (outage)", false);
  gb.set_name(i.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, gb, &out, admin_).ok());
  ASSERT_TRUE(out.cancelled_by_outage());
  EXPECT_EQ(FromProto(out.cancellation().cancel_time()), FromProto(out.update_time()));

  // Every kind of event the steps above publish was looked at.
  for (const char* kind :
       {"booking_created", "booking_confirmed", "booking_approved", "booking_rejected", "booking_cancelled",
        "booking_checked_in", "booking_checked_out", "booking_missed", "booking_expired",
        "booking_interval_changed", "lease_requested", "lease_approved", "lease_rejected", "lease_cancelled",
        "lease_handed_over", "lease_returned", "lease_extended", "lease_closed", "project_created",
        "project_updated", "service_order_created", "service_order_quoted", "service_order_quote_accepted",
        "service_order_samples_received", "service_order_scheduled", "service_order_unscheduled",
        "service_order_started", "service_order_report_delivered", "service_order_report_accepted",
        "service_order_report_disputed", "service_order_cancelled", "quota_set", "quota_deleted",
        "maintenance_applied"}) {
    EXPECT_EQ(kinds_.count(kind), 1u) << kind << " never published";
  }
}

}  // namespace
}  // namespace labshare::booking
