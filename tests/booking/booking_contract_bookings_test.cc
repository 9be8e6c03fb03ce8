// Bookings, availability, quotas and maintenance against their proto
// comments (second contract read): what the earlier tests do not prove.
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/grpc_status.h"
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
  // tem's slot rules of every mode, not only ON_SITE's, with a qualification
  // validity (inventory allows it; the field is "ON_SITE only").
  void GiveEveryModeAQualificationValidity() {
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
  GiveEveryModeAQualificationValidity();
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

// CheckIn: "until reserved start + no_show_grace (an instrument without a
// grace: until the reserved end)"; the sweep leaves such a booking alone
// until then.
TEST_F(BookingContractTest, WithoutAGraceCheckInStaysOpenUntilTheReservedEnd) {
  iv::GetInstrumentRequest g;
  g.set_name("instruments/tem");
  iv::Instrument tem;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetInstrument, g, &tem, admin_).ok());
  iv::UpdateInstrumentRequest u;
  *u.mutable_instrument() = tem;
  for (auto& m : *u.mutable_instrument()->mutable_modes()) m.mutable_slot_rules()->clear_no_show_grace();
  u.mutable_update_mask()->add_paths("modes");
  Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  v1::Booking late, closed, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &late).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &closed).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(50));
  ASSERT_TRUE(manager_->Sweep().ok());
  v1::CheckInRequest in;
  in.set_name(late.name());
  grpc::Status s = Call(stub_.get(), &Stub::CheckIn, in, &out, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::Booking::CHECKED_IN);
  clock_.Set(day_ + absl::Hours(12));
  in.set_name(closed.name());
  s = Call(stub_.get(), &Stub::CheckIn, in, &out, staff_);
  EXPECT_EQ(GrpcErrorReason(s), "CHECK_IN_WINDOW_CLOSED");
}

// CheckOut: "Records the use of the user's qualification in inventory" --
// the ON_SITE qualification, renewed by the user's own use: a technical
// service run the owner's staff operate is no use by the client.
TEST_F(BookingContractTest, AStaffRunDoesNotRenewTheClientsQualification) {
  v1::ServiceOrder order = Scheduled();
  GiveEveryModeAQualificationValidity();
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(order.booking());
  v1::Booking out;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &out, staff_).ok());
  clock_.Set(day_ + absl::Hours(10));
  v1::CheckOutRequest done;
  done.set_name(order.booking());
  grpc::Status s = Call(stub_.get(), &Stub::CheckOut, done, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(out.state(), v1::Booking::COMPLETED);
  iv::GetQualificationRequest g;
  g.set_name("instruments/tem/qualifications/ana");
  iv::Qualification q;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::GetQualification, g, &q, admin_).ok());
  EXPECT_FALSE(q.has_last_use_time()) << q.DebugString();
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

// SlotRules.buffer: "a maintenance window over the buffer hits the
// booking"; CreateBooking: MAINTENANCE_CONFLICT for "a scheduled maintenance
// window in inventory". A window inventory holds but the calendar has not
// received yet (never applied here) over the buffer alone (tem: 30 min) is
// refused as one over the reserved time is: the access check's denial
// DURING_MAINTENANCE, validate_only alike, nothing written. A booking whose
// buffer ends exactly at the window start is accepted (half-open).
TEST_F(BookingContractTest, AWindowInInventoryOverTheBufferIsAMaintenanceConflict) {
  iv::MaintenanceWindow window = Window(absl::Hours(13), absl::Hours(15));  // not applied
  v1::CreateBookingRequest r;
  r.set_request_id("buffer-hit");
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(12));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Minutes(12 * 60 + 45));
  v1::Booking out;
  for (const bool validate_only : {true, false}) {
    r.set_validate_only(validate_only);
    grpc::Status s = Call(stub_.get(), &Stub::CreateBooking, r, &out, ana_);
    const std::string what = validate_only ? "validate_only" : "create";
    ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "MAINTENANCE_CONFLICT", what);
    EXPECT_EQ(ErrorMetadataOf(FromGrpcStatus(s))["denials"], "DURING_MAINTENANCE") << what;
    EXPECT_NE(s.error_message().find(window.name()), std::string::npos) << what << ": " << s.error_message();
  }
  int created = 0;
  for (const auto& e : Events()) created += e.has_booking_created() ? 1 : 0;
  EXPECT_EQ(created, 0);
  v1::ListBookingsRequest list;
  list.set_instrument("instruments/tem");
  v1::ListBookingsResponse listed;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListBookings, list, &listed, admin_).ok());
  EXPECT_EQ(listed.bookings_size(), 0);

  // Blocked until exactly the window start: [11:00, 12:30) + 30 min.
  r.set_request_id("buffer-clear");
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(11));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Minutes(12 * 60 + 30));
  r.set_validate_only(true);
  grpc::Status checked = Call(stub_.get(), &Stub::CreateBooking, r, &out, ana_);
  EXPECT_TRUE(checked.ok()) << GrpcErrorReason(checked) << ": " << checked.error_message();
  r.set_validate_only(false);
  grpc::Status booked = Call(stub_.get(), &Stub::CreateBooking, r, &out, ana_);
  ASSERT_TRUE(booked.ok()) << GrpcErrorReason(booked) << ": " << booked.error_message();
  EXPECT_EQ(out.state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(13));
}

// The same for a technical service's run booked through CreateBooking
// (TECHNICAL_SERVICE's buffer, 30 min): ScheduleService's checks.
TEST_F(BookingContractTest, AWindowInInventoryOverARunsBufferIsAMaintenanceConflict) {
  Window(absl::Hours(13), absl::Hours(15));  // not applied
  v1::ServiceOrder order = Received();
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  r.mutable_booking()->set_service_order(order.name());
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Minutes(9 * 60 + 45));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Minutes(12 * 60 + 45));
  v1::Booking out;
  for (const bool validate_only : {true, false}) {
    r.set_validate_only(validate_only);
    ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, r, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                    "MAINTENANCE_CONFLICT", validate_only ? "validate_only" : "create");
  }
  int created = 0;
  for (const auto& e : Events()) created += e.has_booking_created() ? 1 : 0;
  EXPECT_EQ(created, 0);
  // Its buffer ending at the window start: booked.
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Minutes(9 * 60 + 30));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Minutes(12 * 60 + 30));
  r.set_validate_only(false);
  grpc::Status booked = Call(stub_.get(), &Stub::CreateBooking, r, &out, staff_);
  EXPECT_TRUE(booked.ok()) << GrpcErrorReason(booked) << ": " << booked.error_message();
}

// The same for a technical service's run: with a booking and a window both
// in the way, the create names the last entry in the way (the window), and
// so does validate_only (it named the first: SLOT_TAKEN).
TEST_F(BookingContractTest, ValidateOnlyOfARunNamesTheLastEntryInTheWayAsTheCreateDoes) {
  v1::Booking before;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(11), &before).ok());
  iv::MaintenanceWindow window = Window(absl::Hours(13), absl::Hours(15));
  v1::ApplyMaintenanceWindowResponse applied;
  ASSERT_TRUE(Apply(window.name(), "", &applied).ok());
  iv::CancelMaintenanceWindowRequest cancel;  // off inventory, still on the calendar
  cancel.set_name(window.name());
  cancel.set_reason("engineer rescheduled");
  Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
  v1::ServiceOrder order = Received();
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  r.mutable_booking()->set_service_order(order.name());
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Minutes(10 * 60 + 30));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Minutes(13 * 60 + 30));
  v1::Booking out;
  grpc::Status created = Call(stub_.get(), &Stub::CreateBooking, r, &out, staff_);
  EXPECT_EQ(GrpcErrorReason(created), "MAINTENANCE_CONFLICT") << created.error_message();
  r.set_validate_only(true);
  grpc::Status checked = Call(stub_.get(), &Stub::CreateBooking, r, &out, staff_);
  EXPECT_EQ(checked.error_code(), created.error_code());
  EXPECT_EQ(GrpcErrorReason(checked), GrpcErrorReason(created)) << checked.error_message();
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

// ApplyMaintenanceWindowResponse.cancelled_bookings: "bookings/{booking}
// cancelled without charge by this call" -- a lease cancelled before
// handover takes its booking with it, and that booking is listed too (as a
// run's booking is beside its unscheduled order).
TEST_F(BookingContractTest, AnOutageListsTheBookingOfACancelledLease) {
  v1::Lease a, out;
  ASSERT_TRUE(Request(1, 11, &a).ok());
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/afm");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 3));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 4));
  mw.mutable_maintenance_window()->set_reason("recalibration");
  iv::MaintenanceWindow window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  v1::ApplyMaintenanceWindowResponse result;
  ASSERT_TRUE(Apply(window.name(), "", &result).ok());
  ASSERT_EQ(result.cancelled_leases_size(), 1);
  EXPECT_EQ(result.cancelled_leases(0), a.name());
  ASSERT_EQ(result.cancelled_bookings_size(), 1);
  EXPECT_EQ(result.cancelled_bookings(0), a.booking());
  v1::Booking cancelled = BookingOf(a);
  EXPECT_EQ(cancelled.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(cancelled.cancelled_by_outage());
}

// CancelBooking: "cancellations by owner staff or an administrator are never
// late" (here inside late_cancel_notice); a retry gets the first answer; the
// etag changed with the change.
TEST_F(BookingContractTest, OwnerStaffCancelLateWithoutLateCancellation) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(8));
  v1::CancelBookingRequest c;
  c.set_name(b.name());
  c.set_request_id("cancel-1");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, c, &out, staff_).ok());
  EXPECT_FALSE(out.late_cancellation());
  EXPECT_EQ(out.cancellation().initiator(), v1::Booking::OWNER_STAFF);
  v1::Booking again;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, c, &again, staff_).ok());
  EXPECT_EQ(again.SerializeAsString(), out.SerializeAsString());
  EXPECT_EQ(out.etag(), "2");
}

// ApproveBooking: "ABORTED (ETAG_MISMATCH)" for an etag that is not the
// booking's, the booking's own etag approves; RejectBooking of a CONFIRMED
// booking is BOOKING_STATE.
TEST_F(BookingContractTest, ApproveChecksTheEtagAndRejectTheState) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(19), &b).ok());
  ASSERT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);
  v1::ApproveBookingRequest a;
  a.set_name(b.name());
  a.set_etag("7");
  grpc::Status s = Call(stub_.get(), &Stub::ApproveBooking, a, &out, staff_);
  EXPECT_EQ(GrpcErrorReason(s), "ETAG_MISMATCH");
  a.set_etag(b.etag());
  s = Call(stub_.get(), &Stub::ApproveBooking, a, &out, staff_);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s);
  v1::RejectBookingRequest rj;
  rj.set_name(b.name());
  rj.set_reason("no");
  s = Call(stub_.get(), &Stub::RejectBooking, rj, &out, staff_);
  EXPECT_EQ(GrpcErrorReason(s), "BOOKING_STATE");
}

// QueryAvailability: busy intervals "name the booking only to owner staff,
// CONSORTIUM_ADMIN and AUDITOR" (not to another organisation's staff, not to
// LAB_USER); an unknown organisation is ORGANIZATION_NOT_FOUND for a caller
// who may name one, ORGANIZATION_SCOPE for one who may not; a range over 366
// days is RANGE_TOO_LONG.
TEST_F(BookingContractTest, AvailabilityNamesBookingsToTheContractsRolesOnly) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  v1::QueryAvailabilityRequest q;
  q.set_instrument("instruments/tem");
  *q.mutable_range()->mutable_start_time() = ToProto(day_ + absl::Hours(8));
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(18));
  v1::QueryAvailabilityResponse r;
  for (const auto& [tok, names] : std::vector<std::pair<std::string, bool>>{
           {ana_, false}, {staff_, true}, {admin_, true}, {Token("aud", "", {Role::kAuditor}), true},
           {Token("olga", "outsider", {Role::kFacilityStaff}), false}}) {
    grpc::Status s = Call(stub_.get(), &Stub::QueryAvailability, q, &r, tok);
    ASSERT_TRUE(s.ok()) << GrpcErrorReason(s);
    ASSERT_EQ(r.busy_intervals_size(), 1);
    EXPECT_EQ(!r.busy_intervals(0).resource().empty(), names);
  }
  q.set_organization("organizations/nope");
  grpc::Status s = Call(stub_.get(), &Stub::QueryAvailability, q, &r, admin_);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_NOT_FOUND");
  s = Call(stub_.get(), &Stub::QueryAvailability, q, &r, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  q.clear_organization();
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(8 + 24 * 367));
  s = Call(stub_.get(), &Stub::QueryAvailability, q, &r, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "RANGE_TOO_LONG");
}

// CheckIn/CheckOut: check_in_time "Owner staff and SERVICE only" (the
// booking's user setting it is PERMISSION_DENIED); check_out_time "before
// check-in or in the future" is INVALID_FIELD; release_remaining frees the
// rest of the reserved interval (blocked until check-out + buffer).
TEST_F(BookingContractTest, SessionTimesAreSetByStaffWithinTheirLimits) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(5));
  v1::CheckInRequest in;
  in.set_name(b.name());
  *in.mutable_check_in_time() = ToProto(day_ + absl::Hours(9));
  grpc::Status s = Call(stub_.get(), &Stub::CheckIn, in, &out, ana_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  s = Call(stub_.get(), &Stub::CheckIn, in, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s);
  EXPECT_EQ(FromProto(out.session().start_time()), day_ + absl::Hours(9));
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  v1::CheckOutRequest o;
  o.set_name(b.name());
  *o.mutable_check_out_time() = ToProto(day_ + absl::Hours(8));
  s = Call(stub_.get(), &Stub::CheckOut, o, &out, staff_);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  *o.mutable_check_out_time() = ToProto(day_ + absl::Hours(11));
  s = Call(stub_.get(), &Stub::CheckOut, o, &out, staff_);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  o.clear_check_out_time();
  o.set_release_remaining(true);
  s = Call(stub_.get(), &Stub::CheckOut, o, &out, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s);
  EXPECT_TRUE(out.session().remaining_released());
  EXPECT_EQ(FromProto(out.blocked_interval().end_time()), day_ + absl::Hours(10));
}

// Quotas: SetQuota with an etag and no such quota is ETAG_MISMATCH;
// GetQuotaUsage counts a CONFIRMED booking as committed; ListQuotas refuses
// a negative page_size; DeleteQuota checks the etag, answers a retry with
// its first answer, then QUOTA_NOT_FOUND (and so does GetQuotaUsage).
TEST_F(BookingContractTest, QuotaEtagsUsageAndDeletion) {
  v1::SetQuotaRequest sq;
  sq.mutable_quota()->set_organization("organizations/lab");
  sq.mutable_quota()->set_instrument("instruments/tem");
  sq.mutable_quota()->set_period(v1::Quota::MONTH);
  sq.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
  *sq.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(10));
  sq.mutable_quota()->set_etag("3");
  v1::Quota q;
  grpc::Status s = Call(stub_.get(), &Stub::SetQuota, sq, &q, admin_);
  EXPECT_EQ(GrpcErrorReason(s), "ETAG_MISMATCH");
  sq.mutable_quota()->clear_etag();
  ASSERT_TRUE(Call(stub_.get(), &Stub::SetQuota, sq, &q, admin_).ok());
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(12), &b).ok());
  v1::GetQuotaUsageRequest g;
  g.set_quota(q.name());
  *g.mutable_time() = ToProto(day_);
  v1::QuotaUsage u;
  s = Call(stub_.get(), &Stub::GetQuotaUsage, g, &u, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s);
  EXPECT_EQ(FromProto(u.committed()), absl::Hours(3));
  EXPECT_EQ(FromProto(u.remaining()), absl::Hours(7));
  v1::ListQuotasRequest l;
  l.set_page_size(-1);
  v1::ListQuotasResponse lr;
  s = Call(stub_.get(), &Stub::ListQuotas, l, &lr, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  v1::DeleteQuotaRequest d;
  d.set_name(q.name());
  d.set_etag("9");
  google::protobuf::Empty e;
  s = Call(stub_.get(), &Stub::DeleteQuota, d, &e, admin_);
  EXPECT_EQ(GrpcErrorReason(s), "ETAG_MISMATCH");
  d.clear_etag();
  d.set_request_id("dq-1");
  ASSERT_TRUE(Call(stub_.get(), &Stub::DeleteQuota, d, &e, admin_).ok());
  ASSERT_TRUE(Call(stub_.get(), &Stub::DeleteQuota, d, &e, admin_).ok());
  d.set_request_id("");
  s = Call(stub_.get(), &Stub::DeleteQuota, d, &e, admin_);
  EXPECT_EQ(GrpcErrorReason(s), "QUOTA_NOT_FOUND");
  s = Call(stub_.get(), &Stub::GetQuotaUsage, g, &u, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "QUOTA_NOT_FOUND");
}

// CreateBooking validate_only: "nothing is written; the returned booking has
// no name" -- no event, and its request_id stays free for the real request.
TEST_F(BookingContractTest, ValidateOnlyWritesNothing) {
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(11));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  r.set_validate_only(true);
  r.set_request_id("vo-1");
  v1::Booking out;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateBooking, r, &out, ana_).ok());
  EXPECT_TRUE(out.name().empty());
  EXPECT_TRUE(Events().empty());
  r.set_validate_only(false);
  grpc::Status s = Call(stub_.get(), &Stub::CreateBooking, r, &out, ana_);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s);
}

// BookingIntervalChanged.Cause REMAINDER_RELEASED: "CheckOut with
// release_remaining freed the rest of the slot" -- published with the
// check-out's event, in its step, with the intervals before the release.
TEST_F(BookingContractTest, ReleasingTheRemainderAnnouncesTheShorterBlock) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(12), &b).ok());
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(30));
  v1::CheckOutRequest o;
  o.set_name(b.name());
  o.set_release_remaining(true);
  o.set_request_id("release-rest");
  grpc::Status s = Call(stub_.get(), &Stub::CheckOut, o, &out, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s);
  ASSERT_TRUE(out.session().remaining_released());
  int changed = 0, checked_out = 0;
  for (const auto& e : Events()) {
    checked_out += e.has_booking_checked_out() ? 1 : 0;
    if (!e.has_booking_interval_changed()) continue;
    ++changed;
    const auto& c = e.booking_interval_changed();
    EXPECT_EQ(c.cause(), v1::BookingIntervalChanged::REMAINDER_RELEASED);
    EXPECT_EQ(e.header().request_id(), "release-rest");
    EXPECT_EQ(FromProto(c.previous_reserved_interval().end_time()), day_ + absl::Hours(12));
    EXPECT_EQ(FromProto(c.previous_blocked_interval().end_time()), day_ + absl::Hours(12) + absl::Minutes(30));
    EXPECT_EQ(c.booking().state(), v1::Booking::COMPLETED);
    EXPECT_EQ(FromProto(c.booking().blocked_interval().end_time()), day_ + absl::Hours(10));
    EXPECT_EQ(c.booking().etag(), out.etag());
  }
  EXPECT_EQ(checked_out, 1);
  EXPECT_EQ(changed, 1);
  // A check-out that keeps the block announces no interval change.
  v1::Booking b2;
  ASSERT_TRUE(Book(absl::Hours(13), absl::Hours(14), &b2).ok());
  clock_.Set(day_ + absl::Hours(13));
  in.set_name(b2.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &out, ana_).ok());
  clock_.Set(day_ + absl::Hours(13) + absl::Minutes(50));
  o.set_name(b2.name());
  o.set_request_id("");
  o.set_release_remaining(false);
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckOut, o, &out, ana_).ok());
  changed = 0;
  for (const auto& e : Events()) changed += e.has_booking_interval_changed() ? 1 : 0;
  EXPECT_EQ(changed, 1);
}

// CreateBooking: "With validate_only, every check runs and nothing is
// written" -- the quotas too, on any replica: one that has not read the
// payer's quotas yet (a fresh cache) previews a HARD_LIMIT it would exceed
// as QUOTA_EXCEEDED and a REQUIRE_APPROVAL one as PENDING_APPROVAL
// (OVER_QUOTA). The preview carries the quota_charges the booking would get.
TEST_F(BookingContractTest, ValidateOnlyChecksTheQuotasOnAFreshReplica) {
  v1::SetQuotaRequest sq;
  sq.mutable_quota()->set_organization("organizations/lab");
  sq.mutable_quota()->set_instrument("instruments/tem");
  sq.mutable_quota()->set_period(v1::Quota::MONTH);
  sq.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
  *sq.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(2));
  v1::Quota q;
  ASSERT_TRUE(Call(stub_.get(), &Stub::SetQuota, sq, &q, admin_).ok());
  const Principal ana{"ana", "lab", {Role::kLabUser}, clock_.Now() + absl::Hours(24)};
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  r.set_validate_only(true);
  {
    BookingManager fresh(store_.get(), inv_client_.get(), &clock_, testing::TestPageTokens());
    auto preview = fresh.CreateBooking(ana, r);
    EXPECT_EQ(ErrorReason(preview.status()), "QUOTA_EXCEEDED") << preview.status();
  }
  sq.mutable_quota()->set_enforcement(v1::Quota::REQUIRE_APPROVAL);
  ASSERT_TRUE(Call(stub_.get(), &Stub::SetQuota, sq, &q, admin_).ok());
  {
    BookingManager fresh(store_.get(), inv_client_.get(), &clock_, testing::TestPageTokens());
    auto preview = fresh.CreateBooking(ana, r);
    ASSERT_TRUE(preview.ok()) << preview.status();
    EXPECT_EQ(preview->state(), v1::Booking::PENDING_APPROVAL);
    EXPECT_EQ(preview->approval_reason(), v1::Booking::OVER_QUOTA);
    EXPECT_TRUE(preview->name().empty());
    v1::Booking created;
    r.set_validate_only(false);
    ASSERT_TRUE(Call(stub_.get(), &Stub::CreateBooking, r, &created, ana_).ok());
    ASSERT_EQ(created.quota_charges_size(), 1);
    ASSERT_EQ(preview->quota_charges_size(), 1);
    EXPECT_EQ(preview->quota_charges(0).SerializeAsString(), created.quota_charges(0).SerializeAsString());
    EXPECT_EQ(preview->state(), created.state());
  }
}

// Booking.user_organization: the organisation of `user`, "recorded when the
// booking is created, in every mode"; it differs from payer_organization
// when owner staff name another payer. GetBooking and ListBookings show it,
// and BookingCreated carries it (usage counts ON_SITE time by it).
TEST_F(BookingContractTest, TheUsersOrganisationIsRecordedOnEveryBooking) {
  // ON_SITE, booked by owner staff for ana (lab) with the owner paying.
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  r.mutable_booking()->set_user("users/ana");
  r.mutable_booking()->set_payer_organization("organizations/owner");
  r.mutable_booking()->set_user_organization("organizations/outsider");  // output only: ignored
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(14));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  v1::Booking staff_booked;
  grpc::Status s = Call(stub_.get(), &Stub::CreateBooking, r, &staff_booked, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(staff_booked.user_organization(), "organizations/lab");
  EXPECT_EQ(staff_booked.payer_organization(), "organizations/owner");
  v1::GetBookingRequest g;
  g.set_name(staff_booked.name());
  v1::Booking got;
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &got, ana_).ok());
  EXPECT_EQ(got.user_organization(), "organizations/lab");
  EXPECT_EQ(got.payer_organization(), "organizations/owner");
  bool created_event = false;
  for (const auto& e : Events()) {
    if (e.has_booking_created() && e.booking_created().booking().name() == staff_booked.name()) {
      created_event = true;
      EXPECT_EQ(e.booking_created().booking().user_organization(), "organizations/lab");
    }
  }
  EXPECT_TRUE(created_event);
  // ON_SITE by ana herself: her organisation pays and uses.
  v1::Booking own;
  ASSERT_TRUE(Book(absl::Hours(16), absl::Hours(17), &own).ok());
  EXPECT_EQ(own.user_organization(), "organizations/lab");
  EXPECT_EQ(own.payer_organization(), "organizations/lab");
  // ListBookings shows it.
  v1::ListBookingsRequest l;
  l.set_user("users/ana");
  l.set_instrument("instruments/tem");
  l.set_page_size(50);
  v1::ListBookingsResponse listed;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListBookings, l, &listed, admin_).ok());
  int seen = 0;
  for (const auto& b : listed.bookings()) {
    if (b.name() == staff_booked.name() || b.name() == own.name()) {
      ++seen;
      EXPECT_EQ(b.user_organization(), "organizations/lab") << b.name();
    }
  }
  EXPECT_EQ(seen, 2);
  // A lease's booking (contact ana) and a technical-service run (client user ana).
  v1::Lease lease;
  s = Request(3, 10, &lease);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(BookingOf(lease).user_organization(), "organizations/lab");
  v1::ServiceOrder order = Scheduled();
  ASSERT_FALSE(order.booking().empty());
  g.set_name(order.booking());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &got, admin_).ok());
  EXPECT_EQ(got.user_organization(), "organizations/lab");
  EXPECT_EQ(got.operator_user(), "users/sam");
}

}  // namespace
}  // namespace labshare::booking
