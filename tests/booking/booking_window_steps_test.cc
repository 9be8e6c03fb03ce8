// Maintenance windows and the steps around them, against booking.proto:
// ExtendLease of a handed-over lease with a window inside its term looks
// at the extension only.
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

}  // namespace
}  // namespace labshare::booking
