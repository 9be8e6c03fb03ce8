// A delivered report accepted automatically (inventory
// SlotRules.report_acceptance_period on TECHNICAL_SERVICE): DeliverReport
// pins report_accept_deadline = its delivery + the period in force then and
// puts the order on its partition's keys::ReportDue set in the same step
// (whether it also checks the run out, a booking step, or not, a document
// commit); from the deadline on (half-open, to the nanosecond) DisputeReport
// is refused (REPORT_ACCEPTANCE_CLOSED, nothing written), AcceptReport still
// succeeds as the client's, and the sweep completes the order at the
// deadline with one ServiceOrderReportAccepted{auto_accepted}. Without a
// period nothing changes. Real Redis, the fixture's fake clock. Every case
// with a period fails on the code before the field (no deadline, no
// automatic acceptance).
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Order = v1::ServiceOrder;
using Stub = v1::BookingService::Stub;

// "serviceOrders/x" -> "x".
std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }

class ReportAutoAcceptTest : public BookingFlowsTest {
 protected:
  // tem's TECHNICAL_SERVICE rules accept reports after `period` (zero:
  // never, the field unset).
  void SetPeriod(absl::Duration period, const std::string& request_id) {
    const iv::Instrument tem = InventoryInstrument("tem");
    std::vector<iv::ModeOffering> modes(tem.modes().begin(), tem.modes().end());
    for (auto& m : modes) {
      if (m.mode() != labshare::type::v1::TECHNICAL_SERVICE) continue;
      if (period == absl::ZeroDuration()) {
        m.mutable_slot_rules()->clear_report_acceptance_period();
      } else {
        *m.mutable_slot_rules()->mutable_report_acceptance_period() = ToProto(period);
      }
    }
    OfferModes("tem", modes, request_id);
  }
  // Scheduled [9:00, 11:00) and started at 9:00: IN_PROGRESS, its run
  // checked in.
  Order Started() {
    Order o = Scheduled(), out;
    clock_.Set(day_ + absl::Hours(9));
    v1::StartServiceRequest st;
    st.set_name(o.name());
    grpc::Status s = Call(stub_.get(), &Stub::StartService, st, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  grpc::Status Deliver(const std::string& name, const std::string& uri, Order* out) {
    v1::DeliverReportRequest d;
    d.set_name(name);
    d.mutable_report()->set_uri(uri);
    return Call(stub_.get(), &Stub::DeliverReport, d, out, staff_);
  }
  // With a 24 h period, an order started at day 9:00 whose report is
  // delivered at day 11:00 (its deadline: day + 35 h).
  Order DeliveredWithADayToAccept() {
    SetPeriod(absl::Hours(24), "period-24h");
    const Order started = Started();
    clock_.Set(day_ + absl::Hours(11));
    Order out;
    grpc::Status s = Deliver(started.name(), "dms://reports/1", &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  grpc::Status Dispute(const std::string& name, Order* out) {
    v1::DisputeReportRequest d;
    d.set_name(name);
    d.set_reason("grid 2 missing");
    return Call(stub_.get(), &Stub::DisputeReport, d, out, ana_);
  }
  grpc::Status Accept(const std::string& name, Order* out) {
    v1::AcceptReportRequest a;
    a.set_name(name);
    return Call(stub_.get(), &Stub::AcceptReport, a, out, ana_);
  }
  Order GetOrder(const std::string& name) {
    v1::GetServiceOrderRequest g;
    g.set_name(name);
    Order o;
    grpc::Status s = Call(stub_.get(), &Stub::GetServiceOrder, g, &o, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return o;
  }
  // The order's score on its partition's report-due set (kAbsent: none).
  static constexpr int64_t kAbsent = -1;
  int64_t DueScore(const Order& o) {
    auto v = pool_->Command({"ZSCORE", keys::ReportDue(keys::Partition("tem")), IdOf(o.name())});
    EXPECT_TRUE(v.ok());
    if (!v.ok() || v->is_nil()) return kAbsent;
    return std::stoll(v->str);
  }
  // The ServiceOrderReportAccepted events of the order, in outbox order.
  std::vector<v1::BookingEvent> AcceptedEvents(const Order& o) {
    std::vector<v1::BookingEvent> out;
    for (const auto& e : Events()) {
      if (e.has_service_order_report_accepted() && e.service_order_report_accepted().service_order().name() == o.name()) {
        out.push_back(e);
      }
    }
    return out;
  }
  int DisputedEvents() {
    int n = 0;
    for (const auto& e : Events()) n += e.has_service_order_report_disputed();
    return n;
  }
  int Sweep() {
    auto n = manager_->Sweep();
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : -1;
  }
  static int64_t CeilMs(absl::Time t) {
    const int64_t ms = absl::ToUnixMillis(t);
    return absl::FromUnixMillis(ms) < t ? ms + 1 : ms;
  }
};

// The delivery that also checks the run out (one booking step): the
// deadline and its due entry; a later change of the period leaves them; the
// sweep before the deadline does nothing, at exactly the deadline it
// completes the order, once.
TEST_F(ReportAutoAcceptTest, TheSweepAcceptsAReportAtItsDeadlineOnce) {
  SetPeriod(absl::Hours(72), "period-72h");
  const Order started = Started();
  const absl::Time delivered = day_ + absl::Hours(10) + absl::Minutes(30);
  clock_.Set(delivered);
  Order out;
  ASSERT_TRUE(Deliver(started.name(), "dms://reports/1", &out).ok());
  const absl::Time deadline = delivered + absl::Hours(72);
  EXPECT_EQ(out.state(), Order::REPORT_DELIVERED);
  ASSERT_TRUE(out.has_report_accept_deadline());
  EXPECT_EQ(FromProto(out.report_accept_deadline()), deadline);
  EXPECT_FALSE(out.report_auto_accepted());
  EXPECT_EQ(Get(started.booking()).state(), v1::Booking::COMPLETED);  // checked out in the same step
  EXPECT_EQ(DueScore(out), absl::ToUnixMillis(deadline));
  // A change of the period applies to reports delivered afterwards.
  SetPeriod(absl::Hours(1), "period-1h");
  const Order delivered_order = GetOrder(out.name());
  EXPECT_EQ(FromProto(delivered_order.report_accept_deadline()), deadline);

  clock_.Set(deadline - absl::Nanoseconds(1));
  EXPECT_EQ(Sweep(), 0);
  Order before = GetOrder(out.name());
  EXPECT_EQ(before.state(), Order::REPORT_DELIVERED);
  EXPECT_EQ(before.etag(), delivered_order.etag());
  EXPECT_TRUE(AcceptedEvents(out).empty());

  clock_.Set(deadline);
  EXPECT_EQ(Sweep(), 1);
  const Order done = GetOrder(out.name());
  EXPECT_EQ(done.state(), Order::COMPLETED);
  EXPECT_EQ(FromProto(done.report_accept_time()), deadline);
  EXPECT_TRUE(done.report_auto_accepted());
  EXPECT_FALSE(done.has_report_accept_deadline());
  EXPECT_EQ(DueScore(done), kAbsent);
  std::vector<v1::BookingEvent> accepted = AcceptedEvents(out);
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_TRUE(accepted[0].service_order_report_accepted().auto_accepted());
  EXPECT_EQ(accepted[0].header().actor(), "services/booking");
  const Order& snapshot = accepted[0].service_order_report_accepted().service_order();
  EXPECT_EQ(snapshot.state(), Order::COMPLETED);
  EXPECT_TRUE(snapshot.report_auto_accepted());
  EXPECT_EQ(FromProto(snapshot.report_accept_time()), deadline);
  EXPECT_EQ(snapshot.quote().total().amount_minor(), 95000);

  // Once: a second round publishes nothing more.
  clock_.Set(deadline + absl::Hours(1));
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(AcceptedEvents(out).size(), 1u);
  // Accepted: no dispute any more (the same reason as before the sweep),
  // and the client's own acceptance finds it completed.
  ExpectGrpcError(Dispute(out.name(), &before), grpc::StatusCode::FAILED_PRECONDITION, "REPORT_ACCEPTANCE_CLOSED",
                  "dispute after the automatic acceptance");
  ExpectGrpcError(Accept(out.name(), &before), grpc::StatusCode::FAILED_PRECONDITION, "ORDER_STATE",
                  "accept after the automatic acceptance");
  EXPECT_EQ(GetOrder(out.name()).etag(), done.etag());
}

// The delivery of a run checked out already (a document commit, no booking
// step) gets its due entry too.
TEST_F(ReportAutoAcceptTest, ADeliveryAfterTheRunWasCheckedOutIsAcceptedToo) {
  SetPeriod(absl::Hours(48), "period-48h");
  const Order started = Started();
  clock_.Set(day_ + absl::Hours(10));
  v1::CheckOutRequest co;
  co.set_name(started.booking());
  v1::Booking run;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckOut, co, &run, staff_).ok());
  ASSERT_EQ(run.state(), v1::Booking::COMPLETED);
  clock_.Set(day_ + absl::Hours(12));
  Order out;
  ASSERT_TRUE(Deliver(started.name(), "dms://reports/1", &out).ok());
  const absl::Time deadline = day_ + absl::Hours(12 + 48);
  EXPECT_EQ(FromProto(out.report_accept_deadline()), deadline);
  EXPECT_EQ(DueScore(out), absl::ToUnixMillis(deadline));
  EXPECT_EQ(Get(started.booking()).etag(), run.etag());  // the run untouched
  clock_.Set(deadline);
  EXPECT_EQ(Sweep(), 1);
  const Order done = GetOrder(out.name());
  EXPECT_EQ(done.state(), Order::COMPLETED);
  EXPECT_TRUE(done.report_auto_accepted());
  EXPECT_EQ(FromProto(done.report_accept_time()), deadline);
  EXPECT_EQ(AcceptedEvents(out).size(), 1u);
}

// DisputeReport at the deadline: refused, nothing written; a nanosecond
// before: disputed, the deadline and its entry gone; the sweep then leaves
// the order alone; a revised report gets a new deadline from its own
// delivery (rounded up to the millisecond on the due set, accepted at
// exactly that nanosecond).
TEST_F(ReportAutoAcceptTest, ADisputeIsRefusedFromTheDeadlineOnAndARevisedReportGetsANewOne) {
  SetPeriod(absl::Hours(48), "period-48h");
  const Order started = Started();
  clock_.Set(day_ + absl::Hours(11));
  Order out;
  ASSERT_TRUE(Deliver(started.name(), "dms://reports/1", &out).ok());
  const absl::Time deadline = day_ + absl::Hours(11 + 48);
  ASSERT_EQ(FromProto(out.report_accept_deadline()), deadline);

  clock_.Set(deadline);
  Order ignored;
  grpc::Status s = Dispute(out.name(), &ignored);
  ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "REPORT_ACCEPTANCE_CLOSED", "dispute at the deadline");
  EXPECT_TRUE(absl::StrContains(s.error_message(), "accepted automatically at")) << s.error_message();
  const Order unchanged = GetOrder(out.name());
  EXPECT_EQ(unchanged.etag(), out.etag());
  EXPECT_EQ(unchanged.state(), Order::REPORT_DELIVERED);
  EXPECT_EQ(FromProto(unchanged.report_accept_deadline()), deadline);
  EXPECT_EQ(DueScore(out), absl::ToUnixMillis(deadline));
  EXPECT_EQ(DisputedEvents(), 0);

  clock_.Set(deadline - absl::Nanoseconds(1));
  Order disputed;
  s = Dispute(out.name(), &disputed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(disputed.state(), Order::DISPUTED);
  EXPECT_FALSE(disputed.has_report_accept_deadline());
  EXPECT_EQ(DueScore(out), kAbsent);
  EXPECT_EQ(DisputedEvents(), 1);
  clock_.Set(deadline + absl::Hours(1));
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(GetOrder(out.name()).etag(), disputed.etag());

  // The revised report: delivered at an odd nanosecond.
  const absl::Time revised = deadline + absl::Hours(2) + absl::Nanoseconds(1500001);
  clock_.Set(revised);
  Order again;
  ASSERT_TRUE(Deliver(out.name(), "dms://reports/2", &again).ok());
  const absl::Time deadline2 = revised + absl::Hours(48);
  EXPECT_EQ(again.state(), Order::REPORT_DELIVERED);
  EXPECT_EQ(FromProto(again.report_accept_deadline()), deadline2);
  EXPECT_EQ(DueScore(again), CeilMs(deadline2));
  clock_.Set(deadline2 - absl::Nanoseconds(1));  // the same millisecond as the score
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(GetOrder(out.name()).state(), Order::REPORT_DELIVERED);
  clock_.Set(deadline2);
  EXPECT_EQ(Sweep(), 1);
  const Order done = GetOrder(out.name());
  EXPECT_EQ(done.state(), Order::COMPLETED);
  EXPECT_EQ(FromProto(done.report_accept_time()), deadline2);
  EXPECT_TRUE(done.report_auto_accepted());
  EXPECT_EQ(DueScore(done), kAbsent);
}

// The client's acceptance before the deadline: the sweep later does nothing.
TEST_F(ReportAutoAcceptTest, AReportTheClientAcceptedIsNotAcceptedAgain) {
  Order out = DeliveredWithADayToAccept();
  ASSERT_EQ(out.state(), Order::REPORT_DELIVERED);
  clock_.Set(day_ + absl::Hours(12));
  Order accepted;
  ASSERT_TRUE(Accept(out.name(), &accepted).ok());
  EXPECT_EQ(accepted.state(), Order::COMPLETED);
  EXPECT_FALSE(accepted.report_auto_accepted());
  EXPECT_FALSE(accepted.has_report_accept_deadline());
  EXPECT_EQ(FromProto(accepted.report_accept_time()), day_ + absl::Hours(12));
  EXPECT_EQ(DueScore(out), kAbsent);
  clock_.Set(day_ + absl::Hours(24 * 5));
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(GetOrder(out.name()).etag(), accepted.etag());
  std::vector<v1::BookingEvent> events = AcceptedEvents(out);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FALSE(events[0].service_order_report_accepted().auto_accepted());
  EXPECT_EQ(events[0].header().actor(), "users/ana");
}

// From the deadline on, until the sweep has run, the client may still accept:
// accepted by the client, now.
TEST_F(ReportAutoAcceptTest, TheClientMayStillAcceptAfterTheDeadlineBeforeTheSweep) {
  Order out = DeliveredWithADayToAccept();
  ASSERT_EQ(out.state(), Order::REPORT_DELIVERED);
  const absl::Time late = day_ + absl::Hours(11 + 24) + absl::Minutes(5);
  clock_.Set(late);
  Order accepted;
  grpc::Status s = Accept(out.name(), &accepted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(accepted.state(), Order::COMPLETED);
  EXPECT_EQ(FromProto(accepted.report_accept_time()), late);
  EXPECT_FALSE(accepted.report_auto_accepted());
  EXPECT_EQ(Sweep(), 0);
  std::vector<v1::BookingEvent> events = AcceptedEvents(out);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FALSE(events[0].service_order_report_accepted().auto_accepted());
}

// A dispute settled by an administrator's cancellation: never accepted.
TEST_F(ReportAutoAcceptTest, ACancelledDisputedOrderIsNotAccepted) {
  Order out = DeliveredWithADayToAccept();
  ASSERT_EQ(out.state(), Order::REPORT_DELIVERED);
  clock_.Set(day_ + absl::Hours(12));
  ASSERT_TRUE(Dispute(out.name(), &out).ok());
  v1::CancelOrderRequest c;
  c.set_name(out.name());
  c.set_reason("settled: no charge");
  Order cancelled;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelOrder, c, &cancelled, admin_).ok());
  EXPECT_EQ(cancelled.state(), Order::CANCELLED);
  EXPECT_FALSE(cancelled.has_report_accept_deadline());
  clock_.Set(day_ + absl::Hours(24 * 5));
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(GetOrder(out.name()).etag(), cancelled.etag());
  EXPECT_TRUE(AcceptedEvents(out).empty());
}

// Without a period (the default): no deadline, no entry, never accepted;
// the client may dispute whenever.
TEST_F(ReportAutoAcceptTest, WithoutAPeriodTheSweepNeverAccepts) {
  const Order started = Started();
  clock_.Set(day_ + absl::Hours(11));
  Order out;
  ASSERT_TRUE(Deliver(started.name(), "dms://reports/1", &out).ok());
  EXPECT_FALSE(out.has_report_accept_deadline());
  EXPECT_EQ(pool_->Command({"EXISTS", keys::ReportDue(keys::Partition("tem"))})->integer, 0);
  clock_.Set(day_ + absl::Hours(24 * 300));  // the fixture's tokens last 400 days
  EXPECT_EQ(Sweep(), 0);
  const Order still = GetOrder(out.name());
  EXPECT_EQ(still.state(), Order::REPORT_DELIVERED);
  EXPECT_EQ(still.etag(), out.etag());
  Order disputed;
  ASSERT_TRUE(Dispute(out.name(), &disputed).ok());
  EXPECT_EQ(disputed.state(), Order::DISPUTED);
}

// The sweep decides on the stored order, not on its entry: an entry whose
// order moved on is dropped, the order untouched; one whose order's
// deadline is later stays, and the order is accepted at its own deadline;
// an entry of no order is dropped.
TEST_F(ReportAutoAcceptTest, TheSweepDecidesOnTheStoredOrder) {
  SetPeriod(absl::Hours(24), "period-24h");
  const Order a = Started();
  clock_.Set(day_ + absl::Hours(11));
  Order delivered_a;
  ASSERT_TRUE(Deliver(a.name(), "dms://reports/a", &delivered_a).ok());
  Order disputed;
  ASSERT_TRUE(Dispute(a.name(), &disputed).ok());
  // Another order, scheduled [14:00, 16:00) and delivered at 16:00.
  Order b = Received();
  v1::ScheduleServiceRequest sch;
  sch.set_name(b.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(14));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(16));
  grpc::Status s = Call(stub_.get(), &Stub::ScheduleService, sch, &b, staff_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  clock_.Set(day_ + absl::Hours(14));
  v1::StartServiceRequest st;
  st.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, st, &b, staff_).ok());
  clock_.Set(day_ + absl::Hours(16));
  ASSERT_TRUE(Deliver(b.name(), "dms://reports/b", &b).ok());
  const absl::Time deadline_b = day_ + absl::Hours(16 + 24);
  // Entries as a lost race or an older step could leave them: a's (its
  // order disputed), b's due early, and one of no order.
  const std::string due = keys::ReportDue(keys::Partition("tem"));
  const std::string now_ms = std::to_string(absl::ToUnixMillis(clock_.Now()));
  std::string ghost = IdOf(a.name());
  ghost.back() = ghost.back() == '0' ? '1' : '0';
  for (const std::string& id : {IdOf(a.name()), IdOf(b.name()), ghost}) {
    ASSERT_TRUE(pool_->Command({"ZADD", due, now_ms, id}).ok());
  }
  EXPECT_EQ(Sweep(), 0);
  EXPECT_EQ(GetOrder(a.name()).etag(), disputed.etag());
  EXPECT_EQ(DueScore(disputed), kAbsent);
  EXPECT_EQ(pool_->Command({"ZSCORE", due, ghost})->is_nil(), true);
  EXPECT_EQ(GetOrder(b.name()).etag(), b.etag());
  EXPECT_EQ(DueScore(b), absl::ToUnixMillis(clock_.Now()));  // left as it is
  clock_.Set(deadline_b);
  EXPECT_EQ(Sweep(), 1);
  const Order done = GetOrder(b.name());
  EXPECT_EQ(done.state(), Order::COMPLETED);
  EXPECT_EQ(FromProto(done.report_accept_time()), deadline_b);
  EXPECT_EQ(AcceptedEvents(b).size(), 1u);
  EXPECT_TRUE(AcceptedEvents(a).empty());
}

}  // namespace
}  // namespace labshare::booking
