// booking.proto against services/booking (two read-only audits of
// 2026-12-07), each against the comment that settles it: QueryAvailability
// on an instrument that is not ACTIVE and the order of its checks; a
// negative page_size before every other check (ListQuotas,
// SearchAvailableInstruments); CreateBooking with validate_only answering
// as the real request when the chosen id is taken and access is denied.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"
#include "google/rpc/error_details.pb.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;
using grpc::StatusCode;

// The field of the first violation in the answer's google.rpc.BadRequest.
std::string ViolatedField(const grpc::Status& s) {
  const google::rpc::Status details = ToRpcStatus(s);
  for (const auto& detail : details.details()) {
    google::rpc::BadRequest bad;
    if (detail.UnpackTo(&bad) && bad.field_violations_size() > 0) return bad.field_violations(0).field();
  }
  return "";
}
std::string ViolatedField(const absl::Status& s) { return ViolatedField(ToGrpcStatus(s, "booking.labshare")); }

class Audit5Test : public BookingServiceTest {
 protected:
  Principal Admin() const { return Principal{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(24)}; }
  Principal Ana() const { return Principal{"ana", "lab", {Role::kLabUser}, clock_.Now() + absl::Hours(24)}; }
  v1::QueryAvailabilityRequest Availability(absl::Duration from, absl::Duration to) const {
    v1::QueryAvailabilityRequest q;
    q.set_instrument("instruments/tem");
    *q.mutable_range()->mutable_start_time() = ToProto(day_ + from);
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + to);
    return q;
  }
  void SetTemState(iv::InstrumentState state) {
    iv::SetInstrumentStateRequest st;
    st.set_name("instruments/tem");
    st.set_state(state);
    st.set_reason("vacuum pump service");
    Inv(&iv::InventoryService::Stub::SetInstrumentState, st);
  }
  // "<resource> <reason> [from, to)" relative to day_, as answered.
  std::vector<std::string> Busy(const v1::QueryAvailabilityResponse& resp) const {
    std::vector<std::string> out;
    for (const auto& b : resp.busy_intervals()) {
      out.push_back(absl::StrCat(b.resource(), " ", v1::BusyInterval::Reason_Name(b.reason()), " [",
                                 absl::FormatDuration(FromProto(b.interval().start_time()) - day_), ", ",
                                 absl::FormatDuration(FromProto(b.interval().end_time()) - day_), ")"));
    }
    return out;
  }
  std::vector<std::string> Free(const v1::QueryAvailabilityResponse& resp) const {
    std::vector<std::string> out;
    for (const auto& f : resp.free_intervals()) {
      out.push_back(absl::StrCat("[", absl::FormatDuration(FromProto(f.start_time()) - day_), ", ",
                                 absl::FormatDuration(FromProto(f.end_time()) - day_), ")"));
    }
    return out;
  }
  // The answer over gRPC (the callback form, its bytes written directly)
  // and the synchronous form's, which must be the same.
  v1::QueryAvailabilityResponse Query(const v1::QueryAvailabilityRequest& q) {
    v1::QueryAvailabilityResponse wire;
    grpc::Status s = Call(stub_.get(), &Stub::QueryAvailability, q, &wire, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    absl::StatusOr<v1::QueryAvailabilityResponse> direct = manager_->QueryAvailability(Admin(), q);
    EXPECT_TRUE(direct.ok()) << direct.status();
    if (direct.ok()) {
      EXPECT_EQ(Busy(*direct), Busy(wire));
      EXPECT_EQ(Free(*direct), Free(wire));
    }
    return wire;
  }
};

// QueryAvailability: only an ACTIVE instrument may be booked (CreateBooking:
// INSTRUMENT_NOT_ACTIVE; Search lists ACTIVE ones only). An instrument in
// MAINTENANCE state (an outage without a window) has no free interval and
// one busy MAINTENANCE interval over the whole range, naming no resource;
// its bookings stay busy as before. (Answered free over the whole range.)
TEST_F(Audit5Test, InstrumentInMaintenanceStateHasNoFreeInterval) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(10), absl::Hours(12), &b).ok());
  const v1::QueryAvailabilityRequest q = Availability(absl::Hours(8), absl::Hours(20));
  ASSERT_EQ(Free(Query(q)), (std::vector<std::string>{"[8h, 9h30m)", "[12h30m, 20h)"}));

  SetTemState(iv::MAINTENANCE);
  const v1::QueryAvailabilityResponse out = Query(q);
  EXPECT_TRUE(Free(out).empty()) << absl::StrJoin(Free(out), " ");
  EXPECT_EQ(Busy(out), (std::vector<std::string>{" MAINTENANCE [8h, 20h)",
                                                 absl::StrCat(b.name(), " BOOKED [10h, 12h30m)")}));

  // A LAB_USER's view: the same, without names.
  v1::QueryAvailabilityResponse mine;
  ASSERT_TRUE(Call(stub_.get(), &Stub::QueryAvailability, q, &mine, ana_).ok());
  EXPECT_TRUE(mine.free_intervals().empty());
  EXPECT_EQ(Busy(mine), (std::vector<std::string>{" MAINTENANCE [8h, 20h)", " BOOKED [10h, 12h30m)"}));

  SetTemState(iv::ACTIVE);
  EXPECT_EQ(Free(Query(q)), (std::vector<std::string>{"[8h, 9h30m)", "[12h30m, 20h)"}));
}

// RETIRED (final): no free interval and no busy interval of its own (it is
// no outage); the calendar's entries are still shown. (Answered free.)
TEST_F(Audit5Test, RetiredInstrumentHasNoFreeInterval) {
  const v1::QueryAvailabilityRequest q = Availability(absl::Hours(8), absl::Hours(20));
  ASSERT_EQ(Free(Query(q)), (std::vector<std::string>{"[8h, 20h)"}));
  SetTemState(iv::RETIRED);
  const v1::QueryAvailabilityResponse out = Query(q);
  EXPECT_TRUE(Free(out).empty()) << absl::StrJoin(Free(out), " ");
  EXPECT_TRUE(Busy(out).empty()) << absl::StrJoin(Busy(out), " ");
  v1::QueryAvailabilityResponse mine;
  ASSERT_TRUE(Call(stub_.get(), &Stub::QueryAvailability, q, &mine, ana_).ok());
  EXPECT_TRUE(mine.free_intervals().empty());
}

// QueryAvailability's Errors: "INVALID_FIELD: min_duration negative,
// INVALID_INTERVAL, RANGE_TOO_LONG", in that order (as
// SearchAvailableInstruments). (The inverted range answered first.)
TEST_F(Audit5Test, AvailabilityChecksMinDurationBeforeTheRange) {
  v1::QueryAvailabilityRequest q = Availability(absl::Hours(20), absl::Hours(8));  // inverted
  *q.mutable_min_duration() = ToProto(absl::Hours(-1));
  v1::QueryAvailabilityResponse out;
  grpc::Status s = Call(stub_.get(), &Stub::QueryAvailability, q, &out, ana_);
  ExpectGrpcError(s, StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "inverted range, negative min_duration");
  EXPECT_EQ(ViolatedField(s), "min_duration");
  absl::StatusOr<v1::QueryAvailabilityResponse> direct = manager_->QueryAvailability(Ana(), q);
  EXPECT_EQ(ViolatedField(direct.status()), "min_duration") << direct.status();

  // Over 366 days: min_duration first too.
  q = Availability(absl::ZeroDuration(), absl::Hours(24 * 400));
  *q.mutable_min_duration() = ToProto(absl::Hours(-1));
  s = Call(stub_.get(), &Stub::QueryAvailability, q, &out, ana_);
  ExpectGrpcError(s, StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "long range, negative min_duration");
  EXPECT_EQ(ViolatedField(s), "min_duration");
}

// types.proto / CheckPageSize: a negative page_size is INVALID_FIELD
// page_size before the scope and every other check. ListQuotas answered
// ORGANIZATION_SCOPE first; SearchAvailableInstruments INVALID_FIELD
// category.
TEST_F(Audit5Test, NegativePageSizeComesFirst) {
  v1::ListQuotasRequest lq;
  lq.set_organization("organizations/owner");  // not ana's
  lq.set_page_size(-1);
  v1::ListQuotasResponse quotas;
  grpc::Status s = Call(stub_.get(), &Stub::ListQuotas, lq, &quotas, ana_);
  ExpectGrpcError(s, StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListQuotas other organisation");
  EXPECT_EQ(ViolatedField(s), "page_size");

  v1::SearchAvailableInstrumentsRequest sq;  // category empty, no range
  sq.set_page_size(-1);
  v1::SearchAvailableInstrumentsResponse found;
  s = Call(stub_.get(), &Stub::SearchAvailableInstruments, sq, &found, ana_);
  ExpectGrpcError(s, StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "Search without category");
  EXPECT_EQ(ViolatedField(s), "page_size");
  // The synchronous form too, also for another organisation's view.
  sq.set_organization("organizations/owner");
  absl::StatusOr<v1::SearchAvailableInstrumentsResponse> direct = manager_->SearchAvailableInstruments(Ana(), sq);
  EXPECT_EQ(ViolatedField(direct.status()), "page_size") << direct.status();
  s = Call(stub_.get(), &Stub::SearchAvailableInstruments, sq, &found, ana_);
  EXPECT_EQ(ViolatedField(s), "page_size") << GrpcErrorReason(s);
}

// CreateBooking: "With validate_only, every check runs and nothing is
// written": the same answer as the real request. A chosen booking_id that
// is taken, for a disabled user: the real request reserves the id first
// (ALREADY_EXISTS BOOKING_EXISTS); the dry run answered USER_DISABLED.
TEST_F(Audit5Test, ValidateOnlyAnswersTakenIdBeforeTheDenial) {
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_instrument("instruments/tem");
  r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  r.mutable_booking()->set_user("users/ana");
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(10));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
  r.set_booking_id("taken-one");
  v1::Booking first;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateBooking, r, &first, admin_).ok());

  iv::UpdateUserRequest u;
  u.mutable_user()->set_name("users/ana");
  u.mutable_user()->set_disabled(true);
  u.mutable_update_mask()->add_paths("disabled");
  Inv(&iv::InventoryService::Stub::UpdateUser, u);

  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(14));
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  v1::Booking out;
  r.set_validate_only(true);
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, r, &out, admin_), StatusCode::ALREADY_EXISTS,
                  "BOOKING_EXISTS", "validate_only");
  r.set_validate_only(false);
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, r, &out, admin_), StatusCode::ALREADY_EXISTS,
                  "BOOKING_EXISTS", "the real request");
  // A free id: both the denial.
  r.set_booking_id("free-one");
  r.set_validate_only(true);
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, r, &out, admin_), StatusCode::FAILED_PRECONDITION,
                  "USER_DISABLED", "validate_only, free id");
  r.set_validate_only(false);
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, r, &out, admin_), StatusCode::FAILED_PRECONDITION,
                  "USER_DISABLED", "the real request, free id");
}

}  // namespace
}  // namespace labshare::booking
