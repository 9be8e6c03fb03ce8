// Maintenance windows and the steps around them, against booking.proto:
// ExtendLease of a handed-over lease with a window inside its term looks
// at the extension only; ApplyMaintenanceWindow re-checks, in each step,
// what it read before (the booking, lease or order it changes, and that
// the window is still scheduled), so a cancel of the window or of a hit
// booking, lease or run made meanwhile wins. The interleavings are made
// through BookingManager::InterleaveApplyForTest: the application runs on
// the test's thread, the other change over gRPC from inside the hook.
#include <string>
#include <vector>

#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;
using grpc::StatusCode;

constexpr absl::Duration kDay = absl::Hours(24);

class WindowStepsTest : public BookingFlowsTest {
 protected:
  iv::MaintenanceWindow Window(const std::string& instrument, absl::Duration from, absl::Duration to) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent("instruments/" + instrument);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    mw.mutable_maintenance_window()->set_reason("stage realignment");
    iv::MaintenanceWindow window;
    EXPECT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
    return window;
  }
  grpc::Status Apply(const std::string& window, v1::ApplyMaintenanceWindowResponse* out) {
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window);
    return Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, out, admin_);
  }
  // The application on the test's thread (the hook's gRPC calls are then
  // served while it waits).
  absl::StatusOr<v1::ApplyMaintenanceWindowResponse> ApplyHere(const std::string& window) {
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window);
    Principal admin{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + kDay};
    return manager_->ApplyMaintenanceWindow(admin, apply);
  }
  // Cancels `window` in inventory and applies that (as the consumer of its
  // MaintenanceWindowChanged event would).
  void CancelWindow(const iv::MaintenanceWindow& window) {
    iv::CancelMaintenanceWindowRequest cancel;
    cancel.set_name(window.name());
    cancel.set_reason("engineer rescheduled");
    Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
    v1::ApplyMaintenanceWindowResponse out;
    grpc::Status s = Apply(window.name(), &out);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    EXPECT_TRUE(out.window_cancelled());
  }
  // Runs `then` once, when the application reaches `name` (the window's
  // name: before it is blocked; a booking's: before its step).
  void Interleave(const std::string& name, std::function<void()> then) {
    manager_->InterleaveApplyForTest([this, name, then = std::move(then), done = false](const std::string& at) mutable {
      if (done || at != name) return;
      done = true;
      then();
    });
  }
  // The ids on `instrument`'s calendar over [day + from, day + to).
  std::vector<std::string> Calendar(const std::string& instrument, absl::Duration from, absl::Duration to) {
    auto entries = store_->CalendarRange(keys::Partition(instrument), instrument, Ms(day_ + from), Ms(day_ + to));
    EXPECT_TRUE(entries.ok()) << entries.status();
    std::vector<std::string> ids;
    if (entries.ok()) {
      for (const auto& e : *entries) ids.push_back(e.booking_id);
    }
    return ids;
  }
  // A lease of afm over [day + 1 d, day + 8 d) (blocked [day, day + 10 d)),
  // approved and handed over at day + 1 d (the clock is left there).
  v1::Lease HandedOver() {
    v1::Lease lease, out;
    EXPECT_TRUE(Request(1, 8, &lease).ok());
    EXPECT_TRUE(Approve(lease.name(), &lease).ok());
    clock_.Set(day_ + kDay);
    v1::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("probe holder complete");
    grpc::Status s = Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return out;
  }
  grpc::Status Extend(const v1::Lease& lease, absl::Duration new_end, v1::Lease* out) {
    v1::ExtendLeaseRequest x;
    x.set_name(lease.name());
    *x.mutable_new_end_time() = ToProto(day_ + new_end);
    return Call(stub_.get(), &Stub::ExtendLease, x, out, staff_);
  }
  // The BookingCancelled events about booking `name`.
  std::vector<v1::BookingEvent> CancelledEvents(const std::string& name) {
    std::vector<v1::BookingEvent> out;
    for (auto& e : Events()) {
      if (e.has_booking_cancelled() && e.booking_cancelled().booking().name() == name) out.push_back(std::move(e));
    }
    return out;
  }
  static int64_t Ms(absl::Time t) { return absl::ToUnixMillis(t); }
  static std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }
};

// ================================================================ ExtendLease

// ExtendLease: "the calendar block grows accordingly" and fails with
// MAINTENANCE_CONFLICT when the growth meets a window. A window applied
// while the lease was handed over is left inside its block
// (ApplyMaintenanceWindow: "HANDED_OVER leases are left alone"); it is not
// in the way of [old end, new end) (the extension was MAINTENANCE_CONFLICT).
TEST_F(WindowStepsTest, ExtendingAHandedOverLeaseLooksOnlyAtTheExtension) {
  const v1::Lease lease = HandedOver();
  const iv::MaintenanceWindow window = Window("afm", 3 * kDay, 4 * kDay);
  v1::ApplyMaintenanceWindowResponse applied;
  ASSERT_TRUE(Apply(window.name(), &applied).ok());
  ASSERT_EQ(applied.conflicting_leases_size(), 1);
  v1::Lease extended;
  grpc::Status s = Extend(lease, 9 * kDay, &extended);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(extended.term().end_time()), day_ + 9 * kDay);
  EXPECT_EQ(FromProto(extended.blocked_interval().end_time()), day_ + 11 * kDay);
  EXPECT_EQ(FromProto(BookingOf(extended).blocked_interval().end_time()), day_ + 11 * kDay);
  EXPECT_EQ(Calendar("afm", 10 * kDay, 11 * kDay), std::vector<std::string>{IdOf(lease.booking())});
  EXPECT_EQ(Calendar("afm", 3 * kDay, 4 * kDay),
            (std::vector<std::string>{IdOf(lease.booking()), "mw:" + IdOf(window.name())}));
}

// A window after the block, and one across its end, are in the way of
// the extension: MAINTENANCE_CONFLICT, nothing changed.
TEST_F(WindowStepsTest, ExtendingIntoAWindowIsAMaintenanceConflict) {
  const v1::Lease lease = HandedOver();
  v1::ApplyMaintenanceWindowResponse applied;
  ASSERT_TRUE(Apply(Window("afm", 12 * kDay, 13 * kDay).name(), &applied).ok());
  EXPECT_EQ(applied.conflicting_leases_size(), 0);
  v1::Lease out;
  grpc::Status s = Extend(lease, 11 * kDay, &out);  // blocked to day + 13 d
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "MAINTENANCE_CONFLICT") << s.error_message();
  ASSERT_TRUE(Extend(lease, 10 * kDay, &out).ok());  // blocked to day + 12 d: up to the window
  ASSERT_TRUE(Apply(Window("afm", 11 * kDay, 12 * kDay + absl::Hours(12)).name(), &applied).ok());
  EXPECT_EQ(applied.conflicting_leases_size(), 1);  // across the block's end
  s = Extend(out, 10 * kDay + absl::Hours(1), &out);
  EXPECT_EQ(GrpcErrorReason(s), "MAINTENANCE_CONFLICT") << s.error_message();
  EXPECT_EQ(FromProto(BookingOf(lease).blocked_interval().end_time()), day_ + 12 * kDay);
}

// ================================================================ ApplyMaintenanceWindow

// The window is cancelled (and that applied) after the application read it
// SCHEDULED, before it put it on the calendar: it is not put on (it stayed
// there for good, a cancelled window blocking the calendar), and the
// booking it would have hit stays CONFIRMED.
TEST_F(WindowStepsTest, AWindowCancelledBeforeItIsBlockedIsNotBlocked) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  const iv::MaintenanceWindow window = Window("tem", absl::Hours(8), absl::Hours(12));
  Interleave(window.name(), [&] { CancelWindow(window); });
  auto applied = ApplyHere(window.name());
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_TRUE(applied->window_cancelled());
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(Calendar("tem", absl::Hours(0), absl::Hours(24)), std::vector<std::string>{IdOf(b.name())});
  EXPECT_TRUE(CancelledEvents(b.name()).empty());
}

// The window is cancelled (and that applied) while the application goes
// through the bookings it hits: no booking is cancelled for it after that
// (each step checks the window is not withdrawn).
TEST_F(WindowStepsTest, AWindowCancelledMidwayCancelsNoMoreBookings) {
  v1::Booking b1, b2;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b1).ok());
  ASSERT_TRUE(Book(absl::Hours(10) + absl::Minutes(30), absl::Hours(11), &b2).ok());
  const iv::MaintenanceWindow window = Window("tem", absl::Hours(8), absl::Hours(12));
  Interleave(b1.name(), [&] { CancelWindow(window); });
  auto applied = ApplyHere(window.name());
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_TRUE(applied->window_cancelled());
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  EXPECT_EQ(Get(b1.name()).state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(Get(b2.name()).state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(Calendar("tem", absl::Hours(0), absl::Hours(24)),
            (std::vector<std::string>{IdOf(b1.name()), IdOf(b2.name())}));
  // Applying it again (a recovery run) finds it cancelled.
  v1::ApplyMaintenanceWindowResponse again;
  ASSERT_TRUE(Apply(window.name(), &again).ok());
  EXPECT_TRUE(again.window_cancelled());
  EXPECT_EQ(Get(b2.name()).state(), v1::Booking::CONFIRMED);
}

// The booking is cancelled by its user between the application's read and
// its step: the step sees CANCELLED and leaves it (one cancellation, the
// user's, not by outage; not listed as cancelled by the window).
TEST_F(WindowStepsTest, ABookingCancelledMeanwhileIsNotCancelledAgain) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  const iv::MaintenanceWindow window = Window("tem", absl::Hours(8), absl::Hours(12));
  Interleave(b.name(), [&] {
    v1::CancelBookingRequest c;
    c.set_name(b.name());
    c.set_reason("plans changed");
    v1::Booking out;
    grpc::Status s = Call(stub_.get(), &Stub::CancelBooking, c, &out, ana_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  });
  auto applied = ApplyHere(window.name());
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  const v1::Booking now = Get(b.name());
  EXPECT_EQ(now.state(), v1::Booking::CANCELLED);
  EXPECT_FALSE(now.cancelled_by_outage());
  EXPECT_NE(now.cancellation().initiator(), v1::Booking::MAINTENANCE_OUTAGE);
  ASSERT_EQ(CancelledEvents(b.name()).size(), 1u);
  EXPECT_FALSE(CancelledEvents(b.name())[0].booking_cancelled().cancelled_by_outage());
}

// A requested lease cancelled by the lessee between the application's read
// and its step: the application goes on (LEASE_STATE is not in its
// contract) and the lease stays the lessee's cancel.
TEST_F(WindowStepsTest, ALeaseCancelledMeanwhileDoesNotFailTheApplication) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 8, &lease).ok());
  const iv::MaintenanceWindow window = Window("afm", 3 * kDay, 4 * kDay);
  Interleave(lease.booking(), [&] {
    v1::CancelLeaseRequest c;
    c.set_name(lease.name());
    c.set_reason("project postponed");
    v1::Lease out;
    grpc::Status s = Call(stub_.get(), &Stub::CancelLease, c, &out, ana_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  });
  auto applied = ApplyHere(window.name());
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->cancelled_leases_size(), 0);
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  v1::GetLeaseRequest g;
  g.set_name(lease.name());
  v1::Lease now;
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetLease, g, &now, admin_).ok());
  EXPECT_EQ(now.state(), v1::Lease::CANCELLED);
  EXPECT_FALSE(now.cancelled_by_outage());
  EXPECT_EQ(CancelledEvents(lease.booking()).size(), 1u);
}

// A scheduled run cancelled by owner staff between the application's read
// and its step: the application goes on and does not unschedule the order
// a second time.
TEST_F(WindowStepsTest, ARunCancelledMeanwhileDoesNotFailTheApplication) {
  const v1::ServiceOrder order = Scheduled();
  const iv::MaintenanceWindow window = Window("tem", absl::Hours(8), absl::Hours(12));
  Interleave(order.booking(), [&] {
    v1::CancelBookingRequest c;
    c.set_name(order.booking());
    c.set_reason("operator ill");
    v1::Booking out;
    grpc::Status s = Call(stub_.get(), &Stub::CancelBooking, c, &out, staff_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  });
  auto applied = ApplyHere(window.name());
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->unscheduled_orders_size(), 0);
  EXPECT_EQ(applied->cancelled_bookings_size(), 0);
  const v1::Booking run = Get(order.booking());
  EXPECT_EQ(run.state(), v1::Booking::CANCELLED);
  EXPECT_FALSE(run.cancelled_by_outage());
  EXPECT_EQ(CancelledEvents(order.booking()).size(), 1u);
  v1::GetServiceOrderRequest g;
  g.set_name(order.name());
  v1::ServiceOrder now;
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetServiceOrder, g, &now, admin_).ok());
  EXPECT_EQ(now.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
}

}  // namespace
}  // namespace labshare::booking
