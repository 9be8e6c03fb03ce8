// The read RPCs against their proto comments (audit of booking's reads):
// whole milliseconds on the calendar (a blocked end rounded up, a read's
// range end rounded up), the order of the checks of QueryAvailability,
// SearchAvailableInstruments and the lists, the names of list entries.
#include <gtest/gtest.h>

#include "common/grpc_status.h"
#include "google/rpc/error_details.pb.h"
#include "services/booking/booking_common.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::booking {
namespace {

class ReadsAuditTest : public BookingServiceTest {
 protected:
  // tem without a buffer after its ON_SITE bookings: a booking's blocked
  // end is its reserved end.
  void NoBuffer() {
    iv::Instrument tem = InventoryInstrument("tem");
    std::vector<iv::ModeOffering> modes(tem.modes().begin(), tem.modes().end());
    for (auto& m : modes) *m.mutable_slot_rules()->mutable_buffer() = ToProto(absl::ZeroDuration());
    OfferModes("tem", modes, "no-buffer");
  }
  Principal Ana() const { return Principal{"ana", "lab", {Role::kLabUser}, clock_.Now() + absl::Hours(24)}; }
  v1::QueryAvailabilityRequest Availability(absl::Duration from, absl::Duration to) const {
    v1::QueryAvailabilityRequest q;
    q.set_instrument("instruments/tem");
    *q.mutable_range()->mutable_start_time() = ToProto(day_ + from);
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + to);
    return q;
  }
  v1::SearchAvailableInstrumentsRequest Search(absl::Duration from, absl::Duration to) const {
    v1::SearchAvailableInstrumentsRequest q;
    q.set_category("electron-microscopy");
    *q.mutable_range()->mutable_start_time() = ToProto(day_ + from);
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + to);
    return q;
  }
};

// The field of the first violation in the answer's google.rpc.BadRequest.
std::string ViolatedField(const grpc::Status& s) {
  const google::rpc::Status details = ToRpcStatus(s);
  for (const auto& detail : details.details()) {
    google::rpc::BadRequest bad;
    if (detail.UnpackTo(&bad) && bad.field_violations_size() > 0) return bad.field_violations(0).field();
  }
  return "";
}

const absl::Duration kHalfMs = absl::Microseconds(500);

// A booking ending half a millisecond into 11:00:00.000 holds that
// millisecond: one starting at 11:00:00.000 would overlap it in true time.
TEST_F(ReadsAuditTest, BlockedEndIsRoundedUpToTheMillisecond) {
  NoBuffer();
  v1::Booking first, second, third;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(11) + kHalfMs, &first).ok());
  ExpectGrpcError(Book(absl::Hours(11), absl::Hours(12), &second), grpc::StatusCode::FAILED_PRECONDITION,
                  "SLOT_TAKEN", "a start inside the millisecond of the previous end");
  // validate_only reads the calendar as the step meets it.
  v1::CreateBookingRequest r;
  r.set_validate_only(true);
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  r.mutable_booking()->set_user("users/ana");
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(11));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  v1::Booking preview;
  ExpectGrpcError(Call(stub_.get(), &v1::BookingService::Stub::CreateBooking, r, &preview, ana_),
                  grpc::StatusCode::FAILED_PRECONDITION, "SLOT_TAKEN", "validate_only");
  // From the next whole millisecond on, the slot is free.
  ASSERT_TRUE(Book(absl::Hours(11) + absl::Milliseconds(1), absl::Hours(12), &third).ok());
}

// A range ending half a millisecond after a booking's start sees the
// booking: the calendar is read up to the range's end rounded up.
TEST_F(ReadsAuditTest, AvailabilityRangeEndIsRoundedUp) {
  NoBuffer();
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(12), absl::Hours(13), &b).ok());
  const auto q = Availability(absl::Hours(11), absl::Hours(12) + kHalfMs);
  for (bool async : {false, true}) {
    v1::QueryAvailabilityResponse resp;
    if (async) {
      ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, ana_).ok());
    } else {
      auto sync = manager_->QueryAvailability(Ana(), q);
      ASSERT_TRUE(sync.ok()) << sync.status();
      resp = *sync;
    }
    ASSERT_EQ(resp.free_intervals_size(), 1) << async;
    EXPECT_EQ(FromProto(resp.free_intervals(0).start_time()), day_ + absl::Hours(11)) << async;
    EXPECT_EQ(FromProto(resp.free_intervals(0).end_time()), day_ + absl::Hours(12)) << async;
    ASSERT_EQ(resp.busy_intervals_size(), 1) << async;
    EXPECT_EQ(FromProto(resp.busy_intervals(0).interval().start_time()), day_ + absl::Hours(12)) << async;
  }
  // Not free for the whole range: SearchAvailableInstruments lists nothing.
  const auto s = Search(absl::Hours(11), absl::Hours(12) + kHalfMs);
  auto sync = manager_->SearchAvailableInstruments(Ana(), s);
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ(sync->instruments_size(), 0);
  v1::SearchAvailableInstrumentsResponse found;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, s, &found, ana_).ok());
  EXPECT_EQ(found.instruments_size(), 0);
}

// NOT_FOUND before FAILED_PRECONDITION: an unknown organisation is named
// before the mode the instrument does not offer.
TEST_F(ReadsAuditTest, AvailabilityNamesAMissingOrganisationBeforeTheMode) {
  auto q = Availability(absl::Hours(10), absl::Hours(12));
  q.set_mode(labshare::type::v1::LEASE);  // tem offers no LEASE
  q.set_organization("organizations/nowhere");
  v1::QueryAvailabilityResponse resp;
  ExpectGrpcError(Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, admin_),
                  grpc::StatusCode::NOT_FOUND, "ORGANIZATION_NOT_FOUND", "unknown organisation, mode not offered");
  q.set_organization("organizations/lab");
  ExpectGrpcError(Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, admin_),
                  grpc::StatusCode::FAILED_PRECONDITION, "MODE_NOT_OFFERED", "known organisation");
}

// A negative min_duration is no length: INVALID_FIELD min_duration, in
// QueryAvailability and SearchAvailableInstruments alike.
TEST_F(ReadsAuditTest, NegativeMinDurationIsRefused) {
  auto q = Availability(absl::Hours(10), absl::Hours(12));
  *q.mutable_min_duration() = ToProto(-absl::Hours(1));
  v1::QueryAvailabilityResponse resp;
  grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::QueryAvailability, q, &resp, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "QueryAvailability");
  EXPECT_EQ(ViolatedField(s), "min_duration");
  auto search = Search(absl::Hours(10), absl::Hours(12));
  *search.mutable_min_duration() = ToProto(-absl::Hours(1));
  v1::SearchAvailableInstrumentsResponse found;
  s = Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, search, &found, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "SearchAvailableInstruments");
  EXPECT_EQ(ViolatedField(s), "min_duration");
  auto sync = manager_->SearchAvailableInstruments(Ana(), search);
  EXPECT_EQ(ErrorReason(sync.status()), "INVALID_FIELD");
}

// facility is a resource name: INVALID_NAME facility before anything is
// read, on both forms of SearchAvailableInstruments.
TEST_F(ReadsAuditTest, SearchFacilityMustBeAResourceName) {
  auto search = Search(absl::Hours(10), absl::Hours(12));
  search.set_facility("fac");  // not "facilities/fac"
  v1::SearchAvailableInstrumentsResponse found;
  grpc::Status s = Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, search, &found, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "facility without its collection");
  EXPECT_EQ(ViolatedField(s), "facility");
  auto sync = manager_->SearchAvailableInstruments(Ana(), search);
  EXPECT_EQ(ErrorReason(sync.status()), "INVALID_NAME");
  // Named as the comment orders the checks: before the range.
  search.clear_range();
  s = Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, search, &found, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_NAME");
  search.set_facility("facilities/fac");
  s = Call(stub_.get(), &v1::BookingService::Stub::SearchAvailableInstruments, search, &found, ana_);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_INTERVAL");
}

// types.proto: numbers are checked right after the caller's role, before
// the scope and every other check (a negative page_size among them);
// order_by is a field like the others, checked before the time range.
TEST_F(ReadsAuditTest, ListsCheckPageSizeAndOrderByWithTheFields) {
  using Stub = v1::BookingService::Stub;
  v1::ListBookingsRequest b;
  b.set_user("users/bob");  // ana may list only her own: USER_SCOPE
  b.set_page_size(-1);
  v1::ListBookingsResponse bookings;
  grpc::Status s = Call(stub_.get(), &Stub::ListBookings, b, &bookings, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListBookings page_size");
  EXPECT_EQ(ViolatedField(s), "page_size");
  auto sync = manager_->ListBookings(Ana(), b);
  EXPECT_EQ(ErrorReason(sync.status()), "INVALID_FIELD");
  v1::ListBookingsRequest order;
  order.set_order_by("end_time");
  *order.mutable_time_range()->mutable_start_time() = ToProto(day_ + absl::Hours(2));
  *order.mutable_time_range()->mutable_end_time() = ToProto(day_ + absl::Hours(1));  // inverted
  s = Call(stub_.get(), &Stub::ListBookings, order, &bookings, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListBookings order_by");
  EXPECT_EQ(ViolatedField(s), "order_by");

  v1::ListLeasesRequest l;
  l.set_lessee_organization("organizations/owner");  // not ana's: ORGANIZATION_SCOPE
  l.set_page_size(-1);
  v1::ListLeasesResponse leases;
  s = Call(stub_.get(), &Stub::ListLeases, l, &leases, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListLeases page_size");
  EXPECT_EQ(ViolatedField(s), "page_size");
  v1::ListLeasesRequest lo;
  lo.set_order_by("end_time");
  *lo.mutable_time_range() = order.time_range();
  s = Call(stub_.get(), &Stub::ListLeases, lo, &leases, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListLeases order_by");
  EXPECT_EQ(ViolatedField(s), "order_by");

  v1::ListServiceOrdersRequest o;
  o.set_client_organization("organizations/owner");
  o.set_page_size(-1);
  v1::ListServiceOrdersResponse orders;
  s = Call(stub_.get(), &Stub::ListServiceOrders, o, &orders, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListServiceOrders page_size");
  EXPECT_EQ(ViolatedField(s), "page_size");
  v1::ListServiceOrdersRequest oo;
  oo.set_order_by("start_time");
  *oo.mutable_create_time_range() = order.time_range();
  s = Call(stub_.get(), &Stub::ListServiceOrders, oo, &orders, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListServiceOrders order_by");
  EXPECT_EQ(ViolatedField(s), "order_by");

  v1::ListProjectsRequest pr;
  pr.set_page_size(-1);
  *pr.mutable_time_range() = order.time_range();
  v1::ListProjectsResponse projects;
  s = Call(stub_.get(), &Stub::ListProjects, pr, &projects, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListProjects page_size");
  EXPECT_EQ(ViolatedField(s), "page_size");
}

// A list's entry is named by its index (types.proto): STATE_UNSPECIFIED
// second in `states` is "states[1]".
TEST_F(ReadsAuditTest, UnspecifiedStateIsNamedByItsIndex) {
  using Stub = v1::BookingService::Stub;
  v1::ListBookingsRequest b;
  b.add_states(v1::Booking::CONFIRMED);
  b.add_states(v1::Booking::STATE_UNSPECIFIED);
  v1::ListBookingsResponse bookings;
  grpc::Status s = Call(stub_.get(), &Stub::ListBookings, b, &bookings, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListBookings");
  EXPECT_EQ(ViolatedField(s), "states[1]");
  v1::ListLeasesRequest l;
  l.add_states(v1::Lease::REQUESTED);
  l.add_states(v1::Lease::STATE_UNSPECIFIED);
  v1::ListLeasesResponse leases;
  s = Call(stub_.get(), &Stub::ListLeases, l, &leases, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListLeases");
  EXPECT_EQ(ViolatedField(s), "states[1]");
  v1::ListServiceOrdersRequest o;
  o.add_states(v1::ServiceOrder::STATE_UNSPECIFIED);
  v1::ListServiceOrdersResponse orders;
  s = Call(stub_.get(), &Stub::ListServiceOrders, o, &orders, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListServiceOrders");
  EXPECT_EQ(ViolatedField(s), "states[0]");
  v1::ListProjectsRequest pr;
  pr.add_states(v1::Project::ACTIVE);
  pr.add_states(v1::Project::ACTIVE);
  pr.add_states(v1::Project::STATE_UNSPECIFIED);
  v1::ListProjectsResponse projects;
  s = Call(stub_.get(), &Stub::ListProjects, pr, &projects, ana_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListProjects");
  EXPECT_EQ(ViolatedField(s), "states[2]");
}

// Staff see another organisation's quotas on the instruments they run:
// when inventory cannot say whose an instrument is, ListQuotas fails
// (INVENTORY_UNAVAILABLE) rather than answering a page without them.
TEST_F(ReadsAuditTest, ListQuotasForStaffFailsWhenInventoryIsOutOfReach) {
  v1::SetQuotaRequest sq;
  sq.mutable_quota()->set_organization("organizations/lab");
  sq.mutable_quota()->set_instrument("instruments/tem");
  sq.mutable_quota()->set_period(v1::Quota::MONTH);
  sq.mutable_quota()->set_enforcement(v1::Quota::HARD_LIMIT);
  *sq.mutable_quota()->mutable_allowance() = ToProto(absl::Hours(10));
  v1::Quota q;
  ASSERT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::SetQuota, sq, &q, admin_).ok());
  const Principal sam{"sam", "owner", {Role::kFacilityStaff}, clock_.Now() + absl::Hours(24)};
  auto seen = manager_->ListQuotas(sam, v1::ListQuotasRequest());
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->quotas_size(), 1);
  // The fixture's inventory client caches nothing: under CacheOnly every
  // read of it is INVENTORY_UNAVAILABLE.
  InventoryClient::CacheOnly cached;
  auto out = manager_->ListQuotas(sam, v1::ListQuotasRequest());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable) << out.status();
  EXPECT_EQ(ErrorReason(out.status()), "INVENTORY_UNAVAILABLE");
}

// An unreadable stored lease or order is INTERNAL CORRUPT_DOCUMENT in its
// list, as an unreadable booking is in ListBookings: never left out.
TEST_F(ReadsAuditTest, ListsAnswerCorruptDocumentForUnreadableLeasesAndOrders) {
  using Stub = v1::BookingService::Stub;
  v1::RequestLeaseRequest lr;
  lr.mutable_lease()->set_instrument("instruments/afm");
  *lr.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
  *lr.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 9));
  v1::Lease lease;
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, lr, &lease, ana_).ok());
  v1::CreateServiceOrderRequest orq;
  orq.mutable_service_order()->set_instrument("instruments/tem");
  orq.mutable_service_order()->set_service_entry_id("imaging");
  orq.mutable_service_order()->set_sample_count(2);
  v1::ServiceOrder order;
  grpc::Status created = Call(stub_.get(), &Stub::CreateServiceOrder, orq, &order, ana_);
  ASSERT_TRUE(created.ok()) << created.error_message();
  auto damage = [&](const std::string& name, std::string (*key)(int, absl::string_view)) {
    const std::string id = IdOf(name);
    auto part = store_->PartitionOf(id);
    ASSERT_TRUE(part.ok() && part->has_value());
    ASSERT_TRUE(pool_->Command({"HSET", key(**part, id), "d", "\xff\xff not a document"}).ok());
  };
  damage(lease.name(), keys::Lease);
  damage(order.name(), keys::Order);
  v1::ListLeasesResponse leases;
  grpc::Status s = Call(stub_.get(), &Stub::ListLeases, v1::ListLeasesRequest(), &leases, admin_);
  ExpectGrpcError(s, grpc::StatusCode::INTERNAL, "CORRUPT_DOCUMENT", "ListLeases");
  v1::ListServiceOrdersResponse orders;
  s = Call(stub_.get(), &Stub::ListServiceOrders, v1::ListServiceOrdersRequest(), &orders, admin_);
  ExpectGrpcError(s, grpc::StatusCode::INTERNAL, "CORRUPT_DOCUMENT", "ListServiceOrders");
}

// A lease returned before its term began has the empty term [s, s), and
// its booking the empty reserved interval: a half-open empty interval
// overlaps nothing, so a time_range around s lists neither; without a
// time_range both are listed.
TEST_F(ReadsAuditTest, AnEmptyTermOverlapsNoTimeRange) {
  using Stub = v1::BookingService::Stub;
  v1::RequestLeaseRequest lr;
  lr.mutable_lease()->set_instrument("instruments/afm");
  const absl::Time s0 = day_ + absl::Hours(24);
  *lr.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(s0);
  *lr.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 9));
  v1::Lease lease;
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, lr, &lease, ana_).ok());
  // The documents as an early return before the term leaves them (ReturnLease).
  auto part = store_->PartitionOf(IdOf(lease.name()));
  ASSERT_TRUE(part.ok() && part->has_value());
  const std::string lease_key = keys::Lease(**part, IdOf(lease.name()));
  const std::string booking_key = keys::Booking(**part, IdOf(lease.booking()));
  v1::Lease stored_lease;
  ASSERT_TRUE(stored_lease.ParseFromString(pool_->Command({"HGET", lease_key, "d"})->str));
  *stored_lease.mutable_term()->mutable_end_time() = stored_lease.term().start_time();
  ASSERT_TRUE(pool_->Command({"HSET", lease_key, "d", stored_lease.SerializeAsString()}).ok());
  v1::Booking stored_booking;
  ASSERT_TRUE(stored_booking.ParseFromString(pool_->Command({"HGET", booking_key, "d"})->str));
  ASSERT_EQ(FromProto(stored_booking.reserved_interval().start_time()), s0);
  *stored_booking.mutable_reserved_interval()->mutable_end_time() = stored_booking.reserved_interval().start_time();
  ASSERT_TRUE(pool_->Command({"HSET", booking_key, "d", stored_booking.SerializeAsString()}).ok());

  labshare::type::v1::Interval around;
  *around.mutable_start_time() = ToProto(s0 - absl::Hours(1));
  *around.mutable_end_time() = ToProto(s0 + absl::Hours(1));
  v1::ListLeasesRequest l;
  v1::ListLeasesResponse leases;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListLeases, l, &leases, admin_).ok());
  EXPECT_EQ(leases.leases_size(), 1);
  *l.mutable_time_range() = around;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListLeases, l, &leases, admin_).ok());
  EXPECT_EQ(leases.leases_size(), 0);
  v1::ListBookingsRequest b;
  b.set_instrument("instruments/afm");
  v1::ListBookingsResponse bookings;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListBookings, b, &bookings, admin_).ok());
  EXPECT_EQ(bookings.bookings_size(), 1);
  *b.mutable_time_range() = around;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListBookings, b, &bookings, admin_).ok());
  EXPECT_EQ(bookings.bookings_size(), 0);
  auto sync = manager_->ListBookings(Principal{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(1)}, b);
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ(sync->bookings_size(), 0);
}

}  // namespace
}  // namespace labshare::booking
