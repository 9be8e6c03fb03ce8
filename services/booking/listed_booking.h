// What ListBookings' filters and the caller's scope read of a booking
// (BookingManager::Wanted), taken from a parsed Booking or straight from its
// stored bytes. The page of the callback path passes the stored bytes through
// as they are (booking_manager.h, BookingsListing::raw): reading these few
// fields off the wire costs a fraction of parsing 50 documents onto the
// response and serializing them again.
#ifndef LABSHARE_SERVICES_BOOKING_LISTED_BOOKING_H_
#define LABSHARE_SERVICES_BOOKING_LISTED_BOOKING_H_

#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "labshare/booking/v1/booking.pb.h"

namespace labshare::booking {

// Views into the Booking or the bytes it was read from (which must outlive it).
struct ListedBooking {
  absl::string_view instrument, instrument_owner, user, payer_organization, project, lease, service_order;
  int mode = 0;   // labshare.type.v1.SharingMode
  int state = 0;  // Booking.State
  absl::Time start = absl::UnixEpoch(), end = absl::UnixEpoch();  // reserved_interval, as FromProto reads it
  absl::InlinedVector<absl::string_view, 4> cost_share_orgs;      // each cost share's organization, in order
};

ListedBooking ListedOf(const labshare::booking::v1::Booking& b);

// The same fields from a serialized Booking, exactly as parsing it would give
// them (the last occurrence of a field wins, an embedded message's
// occurrences merge). False when ParseFromString would refuse the bytes
// (WireChecker): nothing a client could not parse goes out.
bool ListedFromBytes(absl::string_view data, ListedBooking* out);

}  // namespace labshare::booking

#endif  // LABSHARE_SERVICES_BOOKING_LISTED_BOOKING_H_
