// booking.proto against services/booking (read-only audit of 2026-12-06,
// fourth pass), each against the comment that settles it: a maintenance
// window that leaves a handed-over lease alone never hides the lease's
// block from later bookings or from QueryAvailability.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;
using grpc::StatusCode;

class Audit4Test : public BookingFlowsTest {
 protected:
  // tem offers LEASE too (afm's lease rules, 3000.00 a day for members).
  void LeaseTemToo() {
    iv::Instrument tem = InventoryInstrument("tem");
    iv::Instrument afm = InventoryInstrument("afm");
    std::vector<iv::ModeOffering> modes(tem.modes().begin(), tem.modes().end());
    modes.push_back(afm.modes(0));
    OfferModes("tem", modes, "tem-lease-too");
    iv::CreateRateRequest rate;
    rate.set_parent("instruments/tem");
    rate.mutable_rate()->set_mode(labshare::type::v1::LEASE);
    rate.mutable_rate()->set_payer_class(labshare::type::v1::MEMBER);
    rate.mutable_rate()->set_unit(iv::RATE_PER_DAY);
    rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    rate.mutable_rate()->mutable_price()->set_amount_minor(300000);
    Inv(&iv::InventoryService::Stub::CreateRate, rate);
  }
  // A lease of tem over [day + 1 d, day + 11 d) (blocked [day, day + 13 d)),
  // approved and handed over at day + 1 d (the clock is left there).
  v1::Lease HandedOverLease() {
    LeaseTemToo();
    v1::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/tem");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 11));
    r.mutable_lease()->set_purpose("tomography at our site");
    v1::Lease lease, out;
    grpc::Status s = Call(stub_.get(), &Stub::RequestLease, r, &lease, ana_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    EXPECT_TRUE(Approve(lease.name(), &lease).ok());
    clock_.Set(day_ + absl::Hours(24));
    v1::RecordHandoverRequest h;
    h.set_name(lease.name());
    h.set_condition_notes("holder and cryo stage complete");
    s = Call(stub_.get(), &Stub::RecordHandover, h, &out, staff_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    EXPECT_EQ(out.state(), v1::Lease::HANDED_OVER);
    return out;
  }
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
  v1::ApplyMaintenanceWindowResponse Apply(const std::string& window) {
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window);
    v1::ApplyMaintenanceWindowResponse out;
    grpc::Status s = Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, &out, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return out;
  }
  // An ON_SITE booking of tem by ana over [day + from, day + to).
  grpc::Status BookOnSite(absl::Duration from, absl::Duration to, bool validate_only = false) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    r.set_validate_only(validate_only);
    v1::Booking out;
    return Call(stub_.get(), &Stub::CreateBooking, r, &out, ana_);
  }
  // QueryAvailability of tem over [day + from, day + to) as the administrator.
  v1::QueryAvailabilityResponse Availability(absl::Duration from, absl::Duration to) {
    v1::QueryAvailabilityRequest q;
    q.set_instrument("instruments/tem");
    *q.mutable_range()->mutable_start_time() = ToProto(day_ + from);
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + to);
    v1::QueryAvailabilityResponse resp;
    grpc::Status s = Call(stub_.get(), &Stub::QueryAvailability, q, &resp, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return resp;
  }
  // The busy intervals of `resp` as "resource [start, end)" relative to day_.
  std::vector<std::string> Busy(const v1::QueryAvailabilityResponse& resp) {
    std::vector<std::string> out;
    for (const auto& b : resp.busy_intervals()) {
      out.push_back(absl::StrCat(b.resource(), " ", v1::BusyInterval::Reason_Name(b.reason()), " [",
                                 absl::FormatDuration(FromProto(b.interval().start_time()) - day_), ", ",
                                 absl::FormatDuration(FromProto(b.interval().end_time()) - day_), ")"));
    }
    return out;
  }
  static absl::Duration Days(int d) { return absl::Hours(24 * d); }
  void SetTemState(iv::InstrumentState state) {
    iv::SetInstrumentStateRequest st;
    st.set_name("instruments/tem");
    st.set_state(state);
    st.set_reason("vacuum pump service");
    Inv(&iv::InventoryService::Stub::SetInstrumentState, st);
  }
  grpc::Status Cancel(const std::string& name, v1::Booking* out, const std::string& token) {
    v1::CancelBookingRequest c;
    c.set_name(name);
    c.set_reason("plans changed");
    return Call(stub_.get(), &Stub::CancelBooking, c, out, token);
  }
  // The BookingEvents about booking `name`, oldest first.
  std::vector<v1::BookingEvent> EventsOf(const std::string& name) {
    std::vector<v1::BookingEvent> out;
    for (auto& e : Events()) {
      const v1::Booking* b = nullptr;
      if (e.has_booking_cancelled()) b = &e.booking_cancelled().booking();
      if (e.has_booking_missed()) b = &e.booking_missed().booking();
      if (b != nullptr && b->name() == name) out.push_back(std::move(e));
    }
    return out;
  }
};

// ApplyMaintenanceWindow: HANDED_OVER leases "are left alone and reported as
// conflicts"; the window's entry then lies inside the lease's block. Blocked
// intervals never overlap: a booking inside the lease's block after the
// window is SLOT_TAKEN (it was created: the create step looked back only at
// the window's entry), and QueryAvailability shows the lease busy there (it
// showed free time).
TEST_F(Audit4Test, AWindowInsideAHandedOverLeaseDoesNotHideTheLease) {
  const v1::Lease lease = HandedOverLease();
  const iv::MaintenanceWindow window = Window(Days(3), Days(4));
  const v1::ApplyMaintenanceWindowResponse applied = Apply(window.name());
  ASSERT_EQ(applied.conflicting_leases_size(), 1);
  EXPECT_EQ(applied.conflicting_leases(0), lease.name());

  grpc::Status s = BookOnSite(Days(6) + absl::Hours(10), Days(6) + absl::Hours(11));
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "SLOT_TAKEN") << s.error_message();
  s = BookOnSite(Days(6) + absl::Hours(10), Days(6) + absl::Hours(11), true);
  EXPECT_EQ(GrpcErrorReason(s), "SLOT_TAKEN") << s.error_message();

  const v1::QueryAvailabilityResponse free = Availability(Days(5), Days(8));
  EXPECT_EQ(free.free_intervals_size(), 0);
  EXPECT_EQ(Busy(free), std::vector<std::string>{lease.booking() + " LEASED [0, 312h)"});
  // The window's own time is still MAINTENANCE beside the lease.
  EXPECT_EQ(Busy(Availability(Days(3), Days(4))),
            (std::vector<std::string>{lease.booking() + " LEASED [0, 312h)",
                                      window.name() + " MAINTENANCE [72h, 96h)"}));
}

// The same after the window is cancelled (its entry goes, the lease's block
// stays whole).
TEST_F(Audit4Test, AfterTheWindowIsCancelledTheLeaseStillBlocks) {
  const v1::Lease lease = HandedOverLease();
  const iv::MaintenanceWindow window = Window(Days(3), Days(4));
  Apply(window.name());
  iv::CancelMaintenanceWindowRequest cancel;
  cancel.set_name(window.name());
  cancel.set_reason("engineer rescheduled");
  Inv(&iv::InventoryService::Stub::CancelMaintenanceWindow, cancel);
  EXPECT_TRUE(Apply(window.name()).window_cancelled());
  EXPECT_EQ(GrpcErrorReason(BookOnSite(Days(6) + absl::Hours(10), Days(6) + absl::Hours(11))), "SLOT_TAKEN");
  EXPECT_EQ(GrpcErrorReason(BookOnSite(Days(3) + absl::Hours(10), Days(3) + absl::Hours(11))), "SLOT_TAKEN");
  EXPECT_EQ(Busy(Availability(Days(2), Days(8))), std::vector<std::string>{lease.booking() + " LEASED [0, 312h)"});
}

// RecordReturn (early) shrinks the lease's block to return + return buffer
// (48 h); the window stays inside it: the lease still blocks up to there,
// and the time after it is free.
TEST_F(Audit4Test, AnEarlyReturnShrinksTheBlockAroundTheWindow) {
  const v1::Lease lease = HandedOverLease();
  const iv::MaintenanceWindow window = Window(Days(3), Days(4));
  Apply(window.name());
  clock_.Set(day_ + Days(5));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as handed over");
  v1::Lease returned;
  grpc::Status s = Call(stub_.get(), &Stub::RecordReturn, ret, &returned, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(GrpcErrorReason(BookOnSite(Days(6) + absl::Hours(10), Days(6) + absl::Hours(11))), "SLOT_TAKEN");
  EXPECT_TRUE(BookOnSite(Days(7) + absl::Hours(10), Days(7) + absl::Hours(11)).ok());
  const v1::QueryAvailabilityResponse free = Availability(Days(6), Days(7) + absl::Hours(10));
  ASSERT_EQ(free.free_intervals_size(), 1);
  EXPECT_EQ(FromProto(free.free_intervals(0).start_time()), day_ + Days(7));
  EXPECT_EQ(Busy(free)[0], lease.booking() + " LEASED [0, 168h)");
}

// More window entries inside the lease than the first look back reads
// (CalendarRange reads four): the walk goes on to the lease's entry.
TEST_F(Audit4Test, ManyWindowsInsideTheLeaseDoNotHideItEither) {
  const v1::Lease lease = HandedOverLease();
  for (int k = 0; k < 6; ++k) {
    Apply(Window(Days(3) + absl::Hours(4 * k), Days(3) + absl::Hours(4 * k + 1)).name());
  }
  EXPECT_EQ(GrpcErrorReason(BookOnSite(Days(6) + absl::Hours(10), Days(6) + absl::Hours(11))), "SLOT_TAKEN");
  EXPECT_EQ(GrpcErrorReason(BookOnSite(Days(6) + absl::Hours(10), Days(6) + absl::Hours(11), true)),
            "SLOT_TAKEN");
  const v1::QueryAvailabilityResponse free = Availability(Days(5), Days(8));
  EXPECT_EQ(free.free_intervals_size(), 0);
  EXPECT_EQ(Busy(free), std::vector<std::string>{lease.booking() + " LEASED [0, 312h)"});
}

// ================================================================ out of service

// Booking.CANCELLED: a CONFIRMED booking whose check-in window closes while
// its instrument is not ACTIVE (CheckIn refused it: INSTRUMENT_NOT_ACTIVE)
// is cancelled by the sweep as an outage, never charged; it was MISSED (and
// billing charged the missed fee).
TEST_F(Audit4Test, TheSweepCancelsABookingOnAnInstrumentOutOfServiceAsAnOutage) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  SetTemState(iv::MAINTENANCE);
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(b.name());
  v1::Booking out;
  EXPECT_EQ(GrpcErrorReason(Call(stub_.get(), &Stub::CheckIn, in, &out, ana_)), "INSTRUMENT_NOT_ACTIVE");
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));
  // Past the window's close a cancel is refused, naming what the sweep makes
  // of it: an outage cancellation (metadata state CANCELLED), not MISSED.
  grpc::Status refused = Cancel(b.name(), &out, ana_);
  EXPECT_EQ(GrpcErrorReason(refused), "BOOKING_STATE");
  EXPECT_NE(refused.error_message().find("cancelled as an outage"), std::string::npos) << refused.error_message();
  ASSERT_EQ(*manager_->Sweep(), 1);
  const v1::Booking swept = Get(b.name());
  EXPECT_EQ(swept.state(), v1::Booking::CANCELLED);
  EXPECT_TRUE(swept.cancelled_by_outage());
  EXPECT_FALSE(swept.late_cancellation());
  EXPECT_EQ(swept.cancellation().initiator(), v1::Booking::MAINTENANCE_OUTAGE);
  EXPECT_EQ(swept.cancellation().cancelled_by(), "services/booking");
  EXPECT_EQ(swept.cancellation().maintenance_window(), "");
  EXPECT_EQ(FromProto(swept.cancellation().cancel_time()), day_ + absl::Hours(9) + absl::Minutes(15));
  const std::vector<v1::BookingEvent> events = EventsOf(b.name());
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_booking_cancelled());
  EXPECT_TRUE(events[0].booking_cancelled().cancelled_by_outage());
  EXPECT_EQ(events[0].booking_cancelled().previous_state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(events[0].booking_cancelled().initiator(), v1::Booking::MAINTENANCE_OUTAGE);
  // An ACTIVE instrument's booking is still MISSED.
  SetTemState(iv::ACTIVE);
  v1::Booking later;
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &later).ok());
  clock_.Set(day_ + absl::Hours(12) + absl::Minutes(15));
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(later.name()).state(), v1::Booking::MISSED);
}

// CancelBooking: a cancellation while the instrument is not ACTIVE is never
// late (it was, inside late_cancel_notice).
TEST_F(Audit4Test, ACancelWhileTheInstrumentIsOutOfServiceIsNotLate) {
  v1::Booking b, other, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &other).ok());
  SetTemState(iv::MAINTENANCE);
  clock_.Set(day_ + absl::Hours(8));
  grpc::Status s = Cancel(b.name(), &out, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_FALSE(out.late_cancellation());
  EXPECT_EQ(out.cancellation().initiator(), v1::Booking::BOOKER);
  // On an ACTIVE instrument the same cancel is late.
  SetTemState(iv::ACTIVE);
  clock_.Set(day_ + absl::Hours(8) + absl::Minutes(1));
  ASSERT_TRUE(Cancel(other.name(), &out, ana_).ok());
  EXPECT_TRUE(out.late_cancellation());
}

// ================================================================ past the moment

// CancelBooking: a CONFIRMED booking is MISSED from the moment CheckIn's
// window closes (start + 15 min), whenever the sweep runs: from then on it
// is BOOKING_STATE (metadata state MISSED), not cancelled (late); a moment
// before, it is cancelled (late).
TEST_F(Audit4Test, CancelBookingRefusesABookingWhoseCheckInWindowClosed) {
  v1::Booking b, other, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  ASSERT_TRUE(Book(absl::Hours(11), absl::Hours(12), &other).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));
  grpc::Status s = Cancel(b.name(), &out, ana_);
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "BOOKING_STATE") << s.error_message();
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::CONFIRMED);
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::MISSED);
  clock_.Set(day_ + absl::Hours(11) + absl::Minutes(15) - absl::Nanoseconds(1));
  s = Cancel(other.name(), &out, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_TRUE(out.late_cancellation());
}

// RejectBooking, as ApproveBooking: from the reserved start a pending
// booking is EXPIRED (the sweep sets it), so rejecting it is
// BOOKING_STARTED (it became REJECTED); a moment before, it is rejected.
TEST_F(Audit4Test, RejectBookingRefusesAPendingBookingPastItsStart) {
  v1::Booking b, other, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(19), &b).ok());  // above 8 h: approval
  ASSERT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);
  ASSERT_TRUE(Book(absl::Hours(24 + 9), absl::Hours(24 + 19), &other).ok());
  clock_.Set(day_ + absl::Hours(9));
  v1::RejectBookingRequest r;
  r.set_name(b.name());
  r.set_reason("instrument booked for calibration");
  grpc::Status s = Call(stub_.get(), &Stub::RejectBooking, r, &out, staff_);
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "BOOKING_STARTED") << s.error_message();
  ASSERT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::EXPIRED);
  // CancelBooking of a pending booking past its start: BOOKING_STATE.
  clock_.Set(day_ + absl::Hours(24 + 9));
  EXPECT_EQ(GrpcErrorReason(Cancel(other.name(), &out, ana_)), "BOOKING_STATE");
  clock_.Set(day_ + absl::Hours(24 + 9) - absl::Nanoseconds(1));
  r.set_name(other.name());
  s = Call(stub_.get(), &Stub::RejectBooking, r, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::Booking::REJECTED);
}

// ================================================================ CheckIn's order

// CheckIn's Errors list: INVALID_ARGUMENT (INVALID_FIELD: a future
// check_in_time) before FAILED_PRECONDITION (BOOKING_STATE), and the
// qualification reasons before INSTRUMENT_NOT_ACTIVE.
TEST_F(Audit4Test, CheckInAnswersInTheOrderOfItsErrorsList) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(b.name());
  in.set_request_id("in-1");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &out, ana_).ok());
  v1::CheckInRequest future;
  future.set_name(b.name());
  *future.mutable_check_in_time() = ToProto(day_ + absl::Hours(9) + absl::Minutes(1));
  grpc::Status s = Call(stub_.get(), &Stub::CheckIn, future, &out, staff_);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << s.error_message();

  v1::Booking other;
  clock_.Set(day_ - absl::Hours(24));
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &other).ok());
  iv::RevokeQualificationRequest revoke;
  revoke.set_name("instruments/tem/qualifications/ana");
  revoke.set_reason("safety briefing missed");
  Inv(&iv::InventoryService::Stub::RevokeQualification, revoke);
  SetTemState(iv::MAINTENANCE);
  clock_.Set(day_ + absl::Hours(12));
  in.set_name(other.name());
  in.set_request_id("");
  s = Call(stub_.get(), &Stub::CheckIn, in, &out, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "QUALIFICATION_REVOKED") << s.error_message();
}

}  // namespace
}  // namespace labshare::booking
