// Bookings, availability, quotas and maintenance against their proto
// comments (second contract read): what the earlier tests do not prove.
#include <gtest/gtest.h>

#include "services/booking/redis_booking_store.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;

class BookingContractTest : public BookingFlowsTest {
 protected:
  // A maintenance window on tem over [day + from, day + to), created in
  // inventory (not applied).
  iv::MaintenanceWindow Window(absl::Duration from, absl::Duration to) {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent("instruments/tem");
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    mw.mutable_maintenance_window()->set_reason("alignment");
    iv::MaintenanceWindow window;
    EXPECT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
    return window;
  }
  grpc::Status Apply(const std::string& window, const std::string& request_id,
                     v1::ApplyMaintenanceWindowResponse* out) {
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window);
    apply.set_request_id(request_id);
    return Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, out, admin_);
  }
  // MaintenanceApplied events in the outboxes.
  int MaintenanceAppliedEvents() {
    int n = 0;
    for (const auto& e : Events()) n += e.has_maintenance_applied() ? 1 : 0;
    return n;
  }
};

// CheckIn: "The qualification is checked again (it may have lapsed since
// booking)" -- the one CreateBooking checked, which only ON_SITE needs
// (inventory: qualification_validity_days is "ON_SITE only"). A run of a
// technical service is checked in by the owner's staff whatever the client's
// qualification.
TEST_F(BookingContractTest, CheckInChecksTheQualificationOfOnSiteBookingsOnly) {
  v1::ServiceOrder order = Scheduled();
  iv::GetInstrumentRequest g;
  g.set_name("instruments/tem");
  iv::Instrument tem;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &tem, admin_).ok());
  iv::UpdateInstrumentRequest u;
  *u.mutable_instrument() = tem;
  for (auto& m : *u.mutable_instrument()->mutable_modes()) {
    if (m.mode() != labshare::type::v1::ON_SITE) m.mutable_slot_rules()->set_qualification_validity_days(90);
  }
  u.mutable_update_mask()->add_paths("modes");
  Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  iv::RevokeQualificationRequest revoke;
  revoke.set_name("instruments/tem/qualifications/ana");
  revoke.set_reason("safety briefing missed");
  Inv(&iv::InventoryService::Stub::RevokeQualification, revoke);
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(order.booking());
  v1::Booking out;
  grpc::Status s = Call(stub_.get(), &Stub::CheckIn, in, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::Booking::CHECKED_IN);
}

// CreateBooking: "With validate_only, every check runs" -- and answers as
// the create would: a maintenance window still on the calendar (cancelled in
// inventory, not yet applied) is MAINTENANCE_CONFLICT, not SLOT_TAKEN.
TEST_F(BookingContractTest, ValidateOnlyNamesAWindowOnTheCalendarAsTheCreateDoes) {
  iv::MaintenanceWindow window = Window(absl::Hours(11), absl::Hours(13));
  v1::ApplyMaintenanceWindowResponse applied;
  ASSERT_TRUE(Apply(window.name(), "", &applied).ok());
  iv::CancelMaintenanceWindowRequest cancel;
  cancel.set_name(window.name());
  cancel.set_reason("engineer rescheduled");
  Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(11));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  v1::Booking out;
  grpc::Status created = Call(stub_.get(), &Stub::CreateBooking, r, &out, ana_);
  EXPECT_EQ(GrpcErrorReason(created), "MAINTENANCE_CONFLICT");
  r.set_validate_only(true);
  grpc::Status checked = Call(stub_.get(), &Stub::CreateBooking, r, &out, ana_);
  EXPECT_EQ(checked.error_code(), created.error_code());
  EXPECT_EQ(GrpcErrorReason(checked), GrpcErrorReason(created));
}

// types.proto: "A retry with the same request_id and the same content returns
// the first answer; the same request_id with different content fails with
// FAILED_PRECONDITION, reason REQUEST_ID_REUSED" -- ApplyMaintenanceWindow
// takes a request_id like every mutation.
TEST_F(BookingContractTest, ApplyMaintenanceWindowRetryGetsItsFirstAnswer) {
  v1::Booking hit;
  ASSERT_TRUE(Book(absl::Hours(14), absl::Hours(15), &hit).ok());
  iv::MaintenanceWindow window = Window(absl::Hours(13), absl::Hours(16));
  v1::ApplyMaintenanceWindowResponse first, again;
  ASSERT_TRUE(Apply(window.name(), "mw-apply-1", &first).ok());
  ASSERT_EQ(first.cancelled_bookings_size(), 1);
  EXPECT_EQ(first.cancelled_bookings(0), hit.name());
  grpc::Status s = Apply(window.name(), "mw-apply-1", &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(MaintenanceAppliedEvents(), 1);  // the retry announced nothing new
  iv::MaintenanceWindow other = Window(absl::Hours(20), absl::Hours(21));
  s = Apply(other.name(), "mw-apply-1", &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
}

}  // namespace
}  // namespace labshare::booking
