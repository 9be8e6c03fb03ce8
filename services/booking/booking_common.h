// Small helpers shared by the booking use cases (bookings, leases, orders,
// projects). Internal to the booking service.
#ifndef LABSHARE_SERVICES_BOOKING_BOOKING_COMMON_H_
#define LABSHARE_SERVICES_BOOKING_BOOKING_COMMON_H_

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory.pb.h"
#include "services/booking/booking_manager.h"
#include "services/booking/inventory_client.h"

namespace labshare::booking {

// The calendar holds whole milliseconds: a start goes to it floored (Ms), an
// end rounded up (CeilMs), so a stored entry always covers the true interval
// and two stored entries that do not overlap never overlap in true time
// (bounds inside one millisecond may then meet as SLOT_TAKEN). Every blocked
// end written to the calendar or compared with its starts (a guard, a read's
// range) is CeilMs.
inline int64_t Ms(absl::Time t) { return absl::ToUnixMillis(t); }
inline absl::Time FromMs(int64_t ms) { return absl::FromUnixMillis(ms); }
inline int64_t CeilMs(absl::Time t) {
  const int64_t ms = Ms(t);
  return FromMs(ms) < t ? ms + 1 : ms;
}

// The last segment of a resource name: "instruments/tem" -> "tem".
inline std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }

inline absl::Status Precondition(absl::string_view reason, std::string message) {
  return MakeError(absl::StatusCode::kFailedPrecondition, reason, message);
}

// ApplyMaintenanceWindow's own signal, never a client's answer: a step made
// for its window (UpdateStep::window_guard) found the window withdrawn
// (cancelled, and that applied, meanwhile).
inline absl::Status WindowWithdrawn() {
  return Precondition("WITHDRAWN", "the maintenance window was cancelled meanwhile");
}
inline bool IsWindowWithdrawn(const absl::Status& s) { return ErrorReason(s) == "WITHDRAWN"; }

// FACILITY_STAFF of the instrument's owner or operator organisation.
inline bool IsOwnerStaff(const Principal& p, const labshare::inventory::v1::Instrument& in) {
  const std::string org = ActorOrganization(p);
  return p.HasRole(Role::kFacilityStaff) && !org.empty() &&
         (org == in.owner_organization() || org == in.operator_organization());
}

// The scope check of `method` (its short name) in BookingPolicy(): OK, or
// PERMISSION_DENIED (USER_SCOPE / ORGANIZATION_SCOPE). Runs as soon as the
// resource is loaded, before the rest of the request is validated.
inline absl::Status CheckScope(const char* method, const Principal& p, const ScopeFacts& facts) {
  return BookingPolicy().CheckScope(BookingMethod(method), p, facts);
}

// CheckScope for a resource on `instrument`: the owner and operator
// organisations are read from inventory only when the caller's scope needs
// them (not for CONSORTIUM_ADMIN, AUDITOR, SERVICE, nor when another fact
// already admits the caller).
// Whether CheckScopeOn(method, p, ..., facts) would ask inventory (an
// owner-scoped caller who is no party): async paths run it off the pipeline.
bool ScopeNeedsInventory(const char* method, const Principal& p, const ScopeFacts& facts);
absl::Status CheckScopeOn(const char* method, const Principal& p, InventoryClient& inventory,
                          const std::string& instrument, ScopeFacts facts);
// CheckScopeOn for a request that names its instrument in `field`: a caller
// whose scope is decided without the instrument (a LAB_USER for themselves,
// an administrator) is decided before the name is looked at, so a request
// for someone else is refused whatever else it holds; for owner staff the
// name is validated first (INVALID_NAME `field`), then read.
absl::Status CheckScopeNamed(const char* method, const Principal& p, InventoryClient& inventory,
                             const std::string& instrument, absl::string_view field, const ScopeFacts& facts);

// The facts of the resources whose scope the booking methods check.
ScopeFacts BookingFacts(const labshare::booking::v1::Booking& b);

// The busy reason QueryAvailability shows for a booking on the calendar in
// this state and mode: AWAITING_APPROVAL while pending, else LEASED for a
// lease's booking, IN_USE once checked in, else BOOKED. Every step that
// writes a booking stores it beside the calendar end (CreateStep and
// UpdateStep busy_reason); read from the document for ends without one.
labshare::booking::v1::BusyInterval::Reason BusyReasonFor(int state, int mode);
inline int BusyReasonOf(const labshare::booking::v1::Booking& b) { return BusyReasonFor(b.state(), b.mode()); }

// A slot booking's buffer: the one in force when it was created (inventory's
// SlotRules.buffer then), kept on the booking as the gap between its
// blocked and reserved ends. A later change of the instrument's buffer does
// not move it.
inline absl::Duration BookingBuffer(const labshare::booking::v1::Booking& b) {
  return std::max(absl::ZeroDuration(),
                  FromProto(b.blocked_interval().end_time()) - FromProto(b.reserved_interval().end_time()));
}

// The check-in window is [opens, closes), half-open like every interval:
// it opens at the later of reserved start - BookingBuffer(b) and the end of
// the previous entry's blocked interval (read from the calendar), and
// closes at the earlier of reserved start + `grace` (the mode's
// no_show_grace) and the reserved end (without a grace, at the reserved
// end). From the moment it closes check-in is CHECK_IN_WINDOW_CLOSED and
// the sweep marks an ON_SITE or JOINT_RESEARCH booking MISSED.
inline absl::Time CheckInCloses(const labshare::booking::v1::Booking& b, absl::Duration grace) {
  const absl::Time start = FromProto(b.reserved_interval().start_time());
  const absl::Time end = FromProto(b.reserved_interval().end_time());
  return grace > absl::ZeroDuration() ? std::min(start + grace, end) : end;
}

// The moment a lease request still REQUESTED is in effect CANCELLED
// (Lease.CANCELLED): its blocked start (now >= it, ApproveLease answers
// LEASE_STARTED and the sweep cancels it), or for a lease stored without a
// blocked interval (by an older version) its term's start, as the sweep's
// due entry (MigrateLeaseRequestsDue).
inline absl::Time RequestDeadline(const labshare::booking::v1::Lease& l) {
  return l.has_blocked_interval() ? FromProto(l.blocked_interval().start_time()) : FromProto(l.term().start_time());
}

// A lease's blocked start: its blocked interval's, or for a lease stored
// without one (by an older version) the one RequestLease would have stored,
// term start - handover buffer (where a handover may begin).
inline absl::Time LeaseBlockedStart(const labshare::booking::v1::Lease& l) {
  return l.has_blocked_interval() ? FromProto(l.blocked_interval().start_time())
                                  : FromProto(l.term().start_time()) - FromProto(l.handover_buffer());
}

// The organisation a request names for whom it acts (a lease's lessee, an
// order's client): a caller who can never act for another one (neither
// CONSORTIUM_ADMIN nor FACILITY_STAFF) may name only their own, refused
// (ORGANIZATION_SCOPE) with the authorization, before the request is
// validated. Whether staff are the instrument's is decided once it is read.
absl::Status CheckOwnOrganization(const Principal& p, const std::string& named, absl::string_view what);

// INVALID_FIELD unless `id` matches [a-z][a-z0-9-]{3,62} (a chosen
// project_id; CheckChosenId for the partitioned resources).
absl::Status CheckIdPattern(const std::string& field, absl::string_view id);
// A resource id chosen by the client (booking_id, lease_id,
// service_order_id): it must match [a-z][a-z0-9-]{3,62} and must not have
// the shape of the ids the service generates ("p07-3f9a0c1d2e4b"), which
// name their partition.
absl::Status CheckChosenId(const std::string& field, absl::string_view id);

// Every event carries its resources as they are after the change: fills
// the payload's Booking field with `booking` and, when given, its field of
// `other`'s type (a Lease or ServiceOrder) with `other`; sets the request id (a
// `request_id` empty leaves the one the event was made with).
void AttachSnapshot(labshare::booking::v1::BookingEvent& event, const std::string& request_id,
                    const labshare::booking::v1::Booking& booking,
                    const google::protobuf::Message* other = nullptr);

// The bytes of a BookingEvent whose payload (oneof field `payload_field`, a
// message with the Booking as its field 1, like BookingCreated) carries the
// already serialized booking: `header_only` (an event with just its header)
// serialized, then the payload written around `booking_bytes`. Parses as
// the event with the booking set; saves copying and encoding the booking
// once more per event on the hot path.
std::string EventBytesWithBooking(const labshare::booking::v1::BookingEvent& header_only, int payload_field,
                                  absl::string_view booking_bytes);

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_BOOKING_COMMON_H_
