// Booking defects found by the read-only audits of 2026-12-06, each against
// the proto comment that settles it: maintenance windows over late
// check-ins and finished sessions, the request_id of the events a window
// causes, CheckIn on a revoked qualification, CheckIn's window against the
// sweep, ListQuotas for staff, CreateProject's answer, Get vs List for the
// staff of a paying organisation, and a lease's notice against its
// requested handover buffer.
#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/booking/inventory_events.h"
#include "tests/booking/booking_flows.h"
#include "tests/booking/calendar_keys.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;
using grpc::StatusCode;

class AuditFixesTest : public BookingFlowsTest {
 protected:
  // A maintenance window on `instrument` over [day + from, day + to),
  // created in inventory (not applied).
  iv::MaintenanceWindow Window(absl::Duration from, absl::Duration to, bool outage = true,
                               const std::string& instrument = "instruments/tem") {
    iv::CreateMaintenanceWindowRequest mw;
    mw.set_parent(instrument);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    mw.mutable_maintenance_window()->set_reason("cooling failure");
    mw.mutable_maintenance_window()->set_outage(outage);
    iv::MaintenanceWindow window;
    auto s = Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return window;
  }
  grpc::Status Apply(const std::string& window, const std::string& request_id,
                     v1::ApplyMaintenanceWindowResponse* out) {
    v1::ApplyMaintenanceWindowRequest apply;
    apply.set_maintenance_window(window);
    apply.set_request_id(request_id);
    return Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, out, admin_);
  }
  grpc::Status CheckIn(const std::string& name, const std::string& token, v1::Booking* out) {
    v1::CheckInRequest in;
    in.set_name(name);
    return Call(stub_.get(), &Stub::CheckIn, in, out, token);
  }
  // tem's ON_SITE no_show_grace.
  void SetGrace(absl::Duration grace) {
    iv::Instrument tem = InventoryInstrument("tem");
    iv::UpdateInstrumentRequest u;
    *u.mutable_instrument() = tem;
    for (auto& m : *u.mutable_instrument()->mutable_modes()) {
      if (m.mode() == labshare::type::v1::ON_SITE) *m.mutable_slot_rules()->mutable_no_show_grace() = ToProto(grace);
    }
    u.mutable_update_mask()->add_paths("modes");
    Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  }
  // The ids of the events in the outboxes now.
  std::set<std::string> EventIds() {
    std::set<std::string> ids;
    for (const auto& e : Events()) ids.insert(e.header().event_id());
    return ids;
  }
  // The events published since `before` (EventIds()), in any partition.
  std::vector<v1::BookingEvent> EventsSince(const std::set<std::string>& before) {
    std::vector<v1::BookingEvent> out;
    for (auto& e : Events()) {
      if (!before.count(e.header().event_id())) out.push_back(std::move(e));
    }
    return out;
  }
  // tem's calendar entry of `booking`, if any.
  std::optional<CalendarEntry> EntryOf(const std::string& booking) {
    const std::string id = booking.substr(booking.find('/') + 1);
    for (const auto& e : testing::CalendarEntries(*pool_, keys::Partition("tem"), "tem")) {
      if (e.booking_id == id) return e;
    }
    return std::nullopt;
  }
};

// ================================================================ maintenance

// ApplyMaintenanceWindow: "CHECKED_IN sessions are checked out at the window
// start". An outage from 10:05 applied at 10:30 to a session checked in at
// 10:10 (within the grace): the session ends at its check-in (it started
// after the window start), COMPLETED with interrupted_by_outage, its block
// cut at the window start. (The check-out's guard ran to 10:10 over the
// window's own entry at 10:05: SLOT_TAKEN on every attempt, then ABORTED
// CONCURRENT_MODIFICATION, for ever on the consumer's path.)
TEST_F(AuditFixesTest, OutageStartedBeforeALateCheckInChecksItOut) {
  v1::Booking b, in;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(12), &b).ok());
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(10));
  ASSERT_TRUE(CheckIn(b.name(), ana_, &in).ok());
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(30));
  const iv::MaintenanceWindow window = Window(absl::Hours(10) + absl::Minutes(5), absl::Hours(14));
  v1::ApplyMaintenanceWindowResponse result;
  const std::set<std::string> events = EventIds();
  grpc::Status s = Apply(window.name(), "late-outage-1", &result);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  // BookingCheckedOut and MaintenanceApplied, both naming the window request.
  const std::vector<v1::BookingEvent> after = EventsSince(events);
  ASSERT_EQ(after.size(), 2u);
  int checked_out = 0;
  for (const auto& e : after) {
    EXPECT_EQ(e.header().request_id(), "late-outage-1") << e.ShortDebugString();
    checked_out += e.has_booking_checked_out();
  }
  EXPECT_EQ(checked_out, 1);
  ASSERT_EQ(result.interrupted_bookings_size(), 1);
  EXPECT_EQ(result.interrupted_bookings(0), b.name());
  const v1::Booking done = Get(b.name());
  EXPECT_EQ(done.state(), v1::Booking::COMPLETED);
  EXPECT_TRUE(done.interrupted_by_outage());
  EXPECT_EQ(FromProto(done.session().end_time()), day_ + absl::Hours(10) + absl::Minutes(10));
  EXPECT_EQ(FromProto(done.blocked_interval().end_time()), day_ + absl::Hours(10) + absl::Minutes(5));
  auto entry = EntryOf(b.name());
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->end_ms, absl::ToUnixMillis(day_ + absl::Hours(10) + absl::Minutes(5)));
  // The consumer's path (no request_id) settles too: nothing left to do.
  v1::ApplyMaintenanceWindowResponse again;
  s = Apply(window.name(), "", &again);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(again.interrupted_bookings_size(), 0);
}

// "A checked-out session is COMPLETED ... (the session's time before the
// window stays blocked)": a session checked out at 10:30 keeps its block
// (to 12:30, the reserved end + the buffer); a window from 11:00 cuts the
// entry at 11:00 rather than taking it off (it took the whole entry off).
// An entry starting at or after the window start goes. The record keeps
// its state and session; its blocked_interval follows the calendar (review
// of 2026-12-06: the calendar was cut alone, without record or event; see
// booking_sweep_outage_test for the event).
TEST_F(AuditFixesTest, WindowOverACompletedSessionKeepsTheBlockBeforeIt) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(12), &b).ok());
  clock_.Set(day_ + absl::Hours(10));
  ASSERT_TRUE(CheckIn(b.name(), ana_, &out).ok());
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(30));
  v1::CheckOutRequest co;
  co.set_name(b.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckOut, co, &out, ana_).ok());
  ASSERT_EQ(out.state(), v1::Booking::COMPLETED);
  const v1::Booking before = Get(b.name());
  auto entry = EntryOf(b.name());
  ASSERT_TRUE(entry.has_value());
  ASSERT_GT(entry->end_ms, absl::ToUnixMillis(day_ + absl::Hours(11)));
  const int64_t start_ms = entry->start_ms;

  v1::ApplyMaintenanceWindowResponse result;
  grpc::Status s = Apply(Window(absl::Hours(11), absl::Hours(13), false).name(), "late-window-1", &result);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(result.cancelled_bookings_size(), 0);
  EXPECT_EQ(result.interrupted_bookings_size(), 0);
  entry = EntryOf(b.name());
  ASSERT_TRUE(entry.has_value()) << "the block before the window stays";
  EXPECT_EQ(entry->start_ms, start_ms);
  EXPECT_EQ(entry->end_ms, absl::ToUnixMillis(day_ + absl::Hours(11)));
  const v1::Booking cut = Get(b.name());
  EXPECT_EQ(cut.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(cut.session().SerializeAsString(), before.session().SerializeAsString());
  EXPECT_EQ(cut.blocked_interval().start_time().SerializeAsString(),
            before.blocked_interval().start_time().SerializeAsString());
  EXPECT_EQ(FromProto(cut.blocked_interval().end_time()), day_ + absl::Hours(11));

  // A window from the block's start (or earlier) takes the entry off.
  s = Apply(Window(absl::FromUnixMillis(start_ms) - day_, absl::Hours(11)).name(), "early-window-1", &result);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_FALSE(EntryOf(b.name()).has_value());
  const v1::Booking gone = Get(b.name());
  EXPECT_EQ(gone.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(gone.session().SerializeAsString(), before.session().SerializeAsString());
  EXPECT_EQ(FromProto(gone.blocked_interval().end_time()), FromProto(gone.blocked_interval().start_time()));
}

// EventHeader.request_id: "The request_id of the mutation that caused it,
// if any". Every event of ApplyMaintenanceWindow's steps (the cancelled
// booking, the unscheduled run and its booking) carries the window
// request's request_id (they had ""); a retry publishes nothing more.
TEST_F(AuditFixesTest, EventsOfAWindowCarryItsRequestId) {
  const v1::ServiceOrder order = Scheduled();  // run [9:00, 11:00)
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(13), absl::Hours(14), &b).ok());
  const std::set<std::string> before = EventIds();
  v1::ApplyMaintenanceWindowResponse result;
  grpc::Status s = Apply(Window(absl::Hours(8), absl::Hours(15)).name(), "outage-7", &result);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(result.unscheduled_orders_size(), 1);
  EXPECT_EQ(result.cancelled_bookings_size(), 2);
  const std::vector<v1::BookingEvent> events = EventsSince(before);
  ASSERT_EQ(events.size(), 4u);  // BookingCancelled x2, ServiceOrderUnscheduled, MaintenanceApplied
  int cancelled = 0, unscheduled = 0, applied = 0;
  for (const auto& e : events) {
    EXPECT_EQ(e.header().request_id(), "outage-7") << e.ShortDebugString();
    cancelled += e.has_booking_cancelled();
    unscheduled += e.has_service_order_unscheduled();
    applied += e.has_maintenance_applied();
  }
  EXPECT_EQ(cancelled, 2);
  EXPECT_EQ(unscheduled, 1);
  EXPECT_EQ(applied, 1);
  EXPECT_EQ(Get(order.booking()).state(), v1::Booking::CANCELLED);
  v1::ApplyMaintenanceWindowResponse again;
  ASSERT_TRUE(Apply(result.maintenance_window(), "outage-7", &again).ok());
  EXPECT_EQ(again.SerializeAsString(), result.SerializeAsString());
  EXPECT_EQ(EventsSince(before).size(), events.size());
}

// The same on the consumer's path: the window's inventory event causes the
// cancellations, so theirs (a lease before handover: LeaseCancelled and
// BookingCancelled) and MaintenanceApplied carry that event's request_id.
TEST_F(AuditFixesTest, EventsOfAConsumedWindowCarryTheInventoryRequestId) {
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 11, &lease).ok());
  const iv::MaintenanceWindow window =
      Window(absl::Hours(24 * 2), absl::Hours(24 * 3), true, "instruments/afm");
  const std::set<std::string> before = EventIds();
  labshare::inventory::v1::InventoryEvent changed;
  changed.mutable_header()->set_request_id("inv-req-9");
  changed.mutable_header()->set_event_id("inv-event-9");
  changed.mutable_maintenance_window_changed()->set_instrument("instruments/afm");
  *changed.mutable_maintenance_window_changed()->mutable_maintenance_window() = window;
  StreamEvent e;
  e.stream_id = "1-0";
  e.type = labshare::inventory::v1::InventoryEvent::descriptor()->full_name();
  e.payload = changed.SerializeAsString();
  absl::Status handled = InventoryEventHandler(manager_.get())(e);
  ASSERT_TRUE(handled.ok()) << handled;
  const std::vector<v1::BookingEvent> events = EventsSince(before);
  ASSERT_EQ(events.size(), 3u);  // LeaseCancelled, BookingCancelled, MaintenanceApplied
  int lease_cancelled = 0, booking_cancelled = 0;
  for (const auto& e : events) {
    EXPECT_EQ(e.header().request_id(), "inv-req-9") << e.ShortDebugString();
    lease_cancelled += e.has_lease_cancelled();
    booking_cancelled += e.has_booking_cancelled();
  }
  EXPECT_EQ(lease_cancelled, 1);
  EXPECT_EQ(booking_cancelled, 1);
  // Delivered again (a crash before the acknowledgement, or two replicas
  // claiming it): the first answer, no second MaintenanceApplied (each
  // redelivery published one).
  handled = InventoryEventHandler(manager_.get())(e);
  ASSERT_TRUE(handled.ok()) << handled;
  EXPECT_EQ(EventsSince(before).size(), events.size());
  v1::GetLeaseRequest g;
  g.set_name(lease.name());
  v1::Lease now;
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetLease, g, &now, admin_).ok());
  EXPECT_EQ(now.state(), v1::Lease::CANCELLED);
}

// ================================================================ CheckIn

// CheckIn of a booking whose user's qualification was revoked since (still
// within its validity): QUALIFICATION_REVOKED, as CreateBooking answers it
// (it was QUALIFICATION_EXPIRED); nothing changes.
TEST_F(AuditFixesTest, CheckInOnARevokedQualificationIsQualificationRevoked) {
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(11), &b).ok());
  iv::RevokeQualificationRequest revoke;
  revoke.set_name("instruments/tem/qualifications/ana");
  revoke.set_reason("safety briefing missed");
  Inv(&iv::InventoryService::Stub::RevokeQualification, revoke);
  clock_.Set(day_ + absl::Hours(10));
  const size_t events = Events().size();
  ExpectGrpcError(CheckIn(b.name(), ana_, &out), StatusCode::FAILED_PRECONDITION, "QUALIFICATION_REVOKED", "ana");
  ExpectGrpcError(CheckIn(b.name(), staff_, &out), StatusCode::FAILED_PRECONDITION, "QUALIFICATION_REVOKED",
                  "owner staff");
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(Events().size(), events);
}

// CheckIn's window closes at the earlier of reserved start + no_show_grace
// and the reserved end; the sweep marks the booking MISSED from then on
// (it waited until start + grace, past the end). 30-minute slot, 45-minute
// grace: at the reserved end check-in is closed and the sweep marks it
// MISSED (the window is half-open: at exactly the end); a check-in after
// that is BOOKING_STATE.
TEST_F(AuditFixesTest, GraceLongerThanTheSlotMissedAtTheReservedEnd) {
  SetGrace(absl::Minutes(45));
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(10) + absl::Minutes(30), &b).ok());
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(30));
  ExpectGrpcError(CheckIn(b.name(), ana_, &out), StatusCode::FAILED_PRECONDITION, "CHECK_IN_WINDOW_CLOSED",
                  "at the reserved end");
  ASSERT_TRUE(manager_->Sweep().ok());
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::MISSED);
  ExpectGrpcError(CheckIn(b.name(), ana_, &out), StatusCode::FAILED_PRECONDITION, "BOOKING_STATE", "missed");
}

// Before the reserved end the sweep leaves it alone and check-in works.
TEST_F(AuditFixesTest, GraceLongerThanTheSlotCheckInBeforeTheEnd) {
  SetGrace(absl::Minutes(45));
  v1::Booking b, out;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(10) + absl::Minutes(30), &b).ok());
  clock_.Set(day_ + absl::Hours(10) + absl::Minutes(29));
  ASSERT_TRUE(manager_->Sweep().ok());
  EXPECT_EQ(Get(b.name()).state(), v1::Booking::CONFIRMED);
  grpc::Status s = CheckIn(b.name(), ana_, &out);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::Booking::CHECKED_IN);
}

// ================================================================ projects

// CreateProject answers as GetProject would: every budget's used and
// committed explicit zeros (they were left unset); a retry answers the same.
TEST_F(AuditFixesTest, CreateProjectAnswersAsGetProject) {
  v1::CreateProjectRequest r;
  r.set_project_id("films");
  r.set_request_id("films-1");
  auto* p = r.mutable_project();
  p->set_title("thin films");
  for (const std::string org : {"organizations/owner", "organizations/lab"}) {
    auto* part = p->add_participants();
    part->set_organization(org);
    part->set_share_bps(5000);
  }
  *p->mutable_period()->mutable_start_time() = ToProto(day_);
  *p->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
  auto* budget = p->add_instrument_budgets();
  budget->set_instrument("instruments/tem");
  *budget->mutable_budget() = ToProto(absl::Hours(40));
  v1::Project created, got, again;
  grpc::Status s = Call(stub_.get(), &Stub::CreateProject, r, &created, admin_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(created.instrument_budgets_size(), 1);
  EXPECT_TRUE(created.instrument_budgets(0).has_used());
  EXPECT_TRUE(created.instrument_budgets(0).has_committed());
  EXPECT_EQ(FromProto(created.instrument_budgets(0).used()), absl::ZeroDuration());
  EXPECT_EQ(FromProto(created.instrument_budgets(0).committed()), absl::ZeroDuration());
  v1::GetProjectRequest g;
  g.set_name(created.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetProject, g, &got, admin_).ok());
  EXPECT_EQ(created.SerializeAsString(), got.SerializeAsString());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateProject, r, &again, admin_).ok());
  EXPECT_EQ(again.SerializeAsString(), created.SerializeAsString());
}

// ================================================================ Get vs List

// GetBooking, GetLease, GetServiceOrder for FACILITY_STAFF open exactly what
// their lists show it: besides the instruments its organisation owns or
// operates, its own organisation's bookings (it pays), leases (lessee) and
// orders (client). (Get allowed only the owner's staff: a booking seen in
// the list could not be opened.) Staff of an organisation that is neither
// is still refused.
TEST_F(AuditFixesTest, StaffOfThePayingOrganisationGetsWhatItsListsShow) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  v1::Lease lease;
  ASSERT_TRUE(Request(1, 11, &lease).ok());
  const v1::ServiceOrder order = Order3();
  const std::string lab_staff = Token("lena", "lab", {Role::kFacilityStaff});
  const std::string other_staff = Token("otto", "outsider", {Role::kFacilityStaff});

  v1::ListBookingsRequest lb;
  v1::ListBookingsResponse bookings;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListBookings, lb, &bookings, lab_staff).ok());
  std::vector<std::string> listed;
  for (const auto& x : bookings.bookings()) listed.push_back(x.name());
  EXPECT_NE(std::find(listed.begin(), listed.end(), b.name()), listed.end());
  for (const auto& name : listed) {
    v1::GetBookingRequest g;
    g.set_name(name);
    v1::Booking got;
    grpc::Status s = Call(stub_.get(), &Stub::GetBooking, g, &got, lab_staff);
    EXPECT_TRUE(s.ok()) << name << ": " << GrpcErrorReason(s) << ": " << s.error_message();
  }
  v1::GetBookingRequest gb;
  gb.set_name(b.name());
  v1::Booking got_booking;
  ExpectGrpcError(Call(stub_.get(), &Stub::GetBooking, gb, &got_booking, other_staff),
                  StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "staff of an outsider");

  v1::ListLeasesRequest ll;
  v1::ListLeasesResponse leases;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListLeases, ll, &leases, lab_staff).ok());
  ASSERT_EQ(leases.leases_size(), 1);
  EXPECT_EQ(leases.leases(0).name(), lease.name());
  v1::GetLeaseRequest gl;
  gl.set_name(lease.name());
  v1::Lease got_lease;
  grpc::Status s = Call(stub_.get(), &Stub::GetLease, gl, &got_lease, lab_staff);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ExpectGrpcError(Call(stub_.get(), &Stub::GetLease, gl, &got_lease, other_staff), StatusCode::PERMISSION_DENIED,
                  "ORGANIZATION_SCOPE", "staff of an outsider");

  v1::ListServiceOrdersRequest lo;
  v1::ListServiceOrdersResponse orders;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListServiceOrders, lo, &orders, lab_staff).ok());
  ASSERT_EQ(orders.service_orders_size(), 1);
  EXPECT_EQ(orders.service_orders(0).name(), order.name());
  v1::GetServiceOrderRequest go;
  go.set_name(order.name());
  v1::ServiceOrder got_order;
  s = Call(stub_.get(), &Stub::GetServiceOrder, go, &got_order, lab_staff);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ExpectGrpcError(Call(stub_.get(), &Stub::GetServiceOrder, go, &got_order, other_staff),
                  StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "staff of an outsider");
}

// ================================================================ quotas

// ListQuotas: FACILITY_STAFF see quotas "for instruments its organisation
// owns or operates": owner's staff filtering by lab without an instrument
// filter see lab's quota on tem (they were refused ORGANIZATION_SCOPE). An
// instrument filter naming no instrument answers an empty page (it was NOT_FOUND
// INSTRUMENT_NOT_FOUND, which ListQuotas does not list), for staff as for
// an administrator.
TEST_F(AuditFixesTest, ListQuotasForStaffByOrganisation) {
  v1::SetQuotaRequest set;
  set.mutable_quota()->set_instrument("instruments/tem");
  set.mutable_quota()->set_organization("organizations/lab");
  set.mutable_quota()->set_period(v1::Quota::MONTH);
  set.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
  *set.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(20));
  v1::Quota q;
  ASSERT_TRUE(Call(stub_.get(), &Stub::SetQuota, set, &q, admin_).ok());

  v1::ListQuotasRequest list;
  list.set_organization("organizations/lab");
  v1::ListQuotasResponse listed;
  grpc::Status s = Call(stub_.get(), &Stub::ListQuotas, list, &listed, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(listed.quotas_size(), 1);
  EXPECT_EQ(listed.quotas(0).name(), q.name());
  // Staff of an organisation that runs no instrument see none of them.
  s = Call(stub_.get(), &Stub::ListQuotas, list, &listed, Token("otto", "outsider", {Role::kFacilityStaff}));
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(listed.quotas_size(), 0);

  list.set_instrument("instruments/no-such");
  for (const std::string& token : {staff_, admin_}) {
    s = Call(stub_.get(), &Stub::ListQuotas, list, &listed, token);
    ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    EXPECT_EQ(listed.quotas_size(), 0);
    EXPECT_TRUE(listed.next_page_token().empty());
  }
}

// ================================================================ leases

// RequestLease's INSUFFICIENT_NOTICE measures the notice against the lease's
// handover buffer, the requested one when longer than the rules' (afm: 1
// day). With 3 days requested a term starting in 2 days is refused (it was
// accepted with its block starting a day in the past, and every ApproveLease
// then answered LEASE_STARTED); one starting in 4 days is requested and
// approved.
TEST_F(AuditFixesTest, LongerHandoverBufferNeedsThatMuchNotice) {
  clock_.Set(day_);
  auto request = [&](int from_days, v1::Lease* out) {
    v1::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * from_days));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * (from_days + 10)));
    *r.mutable_lease()->mutable_handover_buffer() = ToProto(absl::Hours(72));
    r.mutable_lease()->set_purpose("surface study at our site");
    return Call(stub_.get(), &Stub::RequestLease, r, out, ana_);
  };
  v1::Lease lease;
  const size_t events = Events().size();
  ExpectGrpcError(request(2, &lease), StatusCode::FAILED_PRECONDITION, "INSUFFICIENT_NOTICE",
                  "term in 2 days, 3 days' handover buffer");
  EXPECT_EQ(Events().size(), events);
  grpc::Status s = request(4, &lease);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(lease.blocked_interval().start_time()), day_ + absl::Hours(24));
  v1::Lease approved;
  s = Approve(lease.name(), &approved);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(approved.state(), v1::Lease::APPROVED);
}

}  // namespace
}  // namespace labshare::booking
