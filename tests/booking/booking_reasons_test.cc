// Error reasons of booking methods that no test named before, each in the
// situation its proto comment (proto/labshare/booking/v1/booking.proto)
// describes, with what must not have happened: nothing written, no event.
// Every answer also passes the strict error-contract check when ctest runs
// it (LABSHARE_STRICT_REASONS=1).
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/grpc_status.h"
#include "google/rpc/error_details.pb.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;
using grpc::StatusCode;

// The field of the first violation in the answer's google.rpc.BadRequest
// ("" without one): what a client reads to mark the field.
std::string ViolatedField(const grpc::Status& s) {
  const google::rpc::Status details = ToRpcStatus(s);
  for (const auto& detail : details.details()) {
    google::rpc::BadRequest bad;
    if (detail.UnpackTo(&bad) && bad.field_violations_size() > 0) return bad.field_violations(0).field();
  }
  return "";
}

class ReasonsTest : public BookingFlowsTest {
 protected:
  // An ON_SITE booking of tem for ana over [day + from, day + to), as
  // CreateBooking is asked for it (validate_only: a preview).
  v1::CreateBookingRequest OnSite(absl::Duration from, absl::Duration to, bool validate_only = false) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument("instruments/tem");
    r.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + to);
    r.set_validate_only(validate_only);
    return r;
  }
  grpc::Status Create(const v1::CreateBookingRequest& r, const std::string& token, v1::Booking* out) {
    return Call(stub_.get(), &Stub::CreateBooking, r, out, token);
  }
  // Project `id` of `orgs` (template `tmpl`, shares computed), 3 h on each
  // of `instruments`, over [day, day + 2 days).
  grpc::Status MakeProject(const std::string& id, const std::vector<std::string>& orgs,
                           v1::Project::CostShareTemplate tmpl, const std::vector<std::string>& instruments,
                           v1::Project* out) {
    v1::CreateProjectRequest r;
    r.set_project_id(id);
    r.mutable_project()->set_title("Cryo-EM of membrane proteins");
    r.mutable_project()->set_cost_share_template(tmpl);
    for (const auto& org : orgs) r.mutable_project()->add_participants()->set_organization(org);
    *r.mutable_project()->mutable_period()->mutable_start_time() = ToProto(day_);
    *r.mutable_project()->mutable_period()->mutable_end_time() = ToProto(day_ + absl::Hours(48));
    for (const auto& instrument : instruments) {
      auto* budget = r.mutable_project()->add_instrument_budgets();
      budget->set_instrument(instrument);
      *budget->mutable_budget() = ToProto(absl::Hours(3));
    }
    return Call(stub_.get(), &Stub::CreateProject, r, out, admin_);
  }
  // lab and owner share "proj" (one third / two thirds), 3 h on tem.
  void MakeTemProject() {
    v1::Project p;
    grpc::Status s = MakeProject("proj", {"organizations/lab", "organizations/owner"}, v1::Project::ONE_THIRD_TWO_THIRDS,
                                 {"instruments/tem"}, &p);
    ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  }
  // ana's JOINT_RESEARCH booking of `instrument` on "proj" over [day + from, day + to).
  v1::CreateBookingRequest Joint(const std::string& instrument, absl::Duration from, absl::Duration to) {
    v1::CreateBookingRequest r = OnSite(from, to);
    r.mutable_booking()->set_instrument(instrument);
    r.mutable_booking()->set_mode(labshare::type::v1::JOINT_RESEARCH);
    r.mutable_booking()->set_project("projects/proj");
    return r;
  }
  v1::InstrumentBudget TemBudget() {
    v1::GetProjectRequest g;
    g.set_name("projects/proj");
    v1::Project p;
    EXPECT_TRUE(Call(stub_.get(), &Stub::GetProject, g, &p, admin_).ok());
    return p.instrument_budgets(0);
  }
  v1::Booking GetBooking(const std::string& name) {
    v1::GetBookingRequest g;
    g.set_name(name);
    v1::Booking b;
    grpc::Status s = Call(stub_.get(), &Stub::GetBooking, g, &b, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return b;
  }
  v1::ServiceOrder GetOrder(const std::string& name) {
    v1::GetServiceOrderRequest g;
    g.set_name(name);
    v1::ServiceOrder o;
    grpc::Status s = Call(stub_.get(), &Stub::GetServiceOrder, g, &o, admin_);
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    return o;
  }
  // `b` is as it was (state, etag) and no event came after the first `events`.
  void ExpectUnchanged(const v1::Booking& b, size_t events) {
    const v1::Booking now = GetBooking(b.name());
    EXPECT_EQ(now.state(), b.state());
    EXPECT_EQ(now.etag(), b.etag());
    EXPECT_EQ(Events().size(), events);
  }
  // Bookings of tem, as an administrator lists them.
  int TemBookings() {
    v1::ListBookingsRequest l;
    l.set_instrument("instruments/tem");
    v1::ListBookingsResponse resp;
    EXPECT_TRUE(Call(stub_.get(), &Stub::ListBookings, l, &resp, admin_).ok());
    return resp.bookings_size();
  }
  // A call of a method that takes a name and a request_id, with `req`
  // (Resp: its answer's type), for the NOT_FOUND tables.
  using NamedCall =
      std::function<grpc::Status(const std::string& name, const std::string& token, const std::string& request_id)>;
  template <typename Req, typename Resp>
  NamedCall Named(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), const Req& req) {
    return [this, method, req](const std::string& name, const std::string& token, const std::string& request_id) {
      Req r = req;
      r.set_name(name);
      r.set_request_id(request_id);
      Resp out;
      return Call(stub_.get(), method, r, &out, token);
    };
  }
  // An administrator disables (or enables again) `user` in inventory.
  void SetDisabled(const std::string& user, bool disabled) {
    iv::UpdateUserRequest u;
    u.mutable_user()->set_name(user);
    u.mutable_user()->set_disabled(disabled);
    u.mutable_update_mask()->add_paths("disabled");
    Inv(&iv::InventoryService::Stub::UpdateUser, u);
  }
  int Leases() {
    v1::ListLeasesRequest l;
    v1::ListLeasesResponse resp;
    EXPECT_TRUE(Call(stub_.get(), &Stub::ListLeases, l, &resp, admin_).ok());
    return resp.leases_size();
  }
  int Orders() {
    v1::ListServiceOrdersRequest l;
    v1::ListServiceOrdersResponse resp;
    EXPECT_TRUE(Call(stub_.get(), &Stub::ListServiceOrders, l, &resp, admin_).ok());
    return resp.service_orders_size();
  }
  // The run of `order` over [day + from, day + to), by `op` ("": the caller).
  v1::ScheduleServiceRequest Run(const std::string& order, absl::Duration from, absl::Duration to,
                                 const std::string& op = "") {
    v1::ScheduleServiceRequest sch;
    sch.set_name(order);
    *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + from);
    *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + to);
    sch.set_operator_user(op);
    return sch;
  }
  grpc::Status Schedule(const v1::ScheduleServiceRequest& r, v1::ServiceOrder* out) {
    return Call(stub_.get(), &Stub::ScheduleService, r, out, staff_);
  }
  // Schedules a received order's run (request_id "run-0") and receives
  // another order (returned; *events: the events so far), then disables
  // `user`: the retry of that schedule still answers its first answer.
  v1::ServiceOrder ScheduleReceiveAndDisable(const std::string& user, size_t* events) {
    v1::ScheduleServiceRequest before = Run(Received().name(), absl::Hours(20), absl::Hours(22));
    before.set_request_id("run-0");
    v1::ServiceOrder first, again;
    EXPECT_TRUE(Schedule(before, &first).ok());
    const v1::ServiceOrder received = Received();
    *events = Events().size();
    SetDisabled(user, true);
    grpc::Status retry = Schedule(before, &again);
    EXPECT_TRUE(retry.ok()) << "a retry: " << GrpcErrorReason(retry) << ": " << retry.error_message();
    EXPECT_EQ(again.booking(), first.booking());
    return received;
  }
  void Revoke() {
    iv::RevokeQualificationRequest revoke;
    revoke.set_name("instruments/tem/qualifications/ana");
    revoke.set_reason("safety briefing missed");
    Inv(&iv::InventoryService::Stub::RevokeQualification, revoke);
  }
};

// ================================================================ CreateBooking

// "BLOCK_TOO_LONG": longer than the mode's max_block (tem: 30 days); exactly
// max_block is allowed. The refusal books nothing.
TEST_F(ReasonsTest, CreateBookingLongerThanTheMaxBlockIsBlockTooLong) {
  const absl::Duration from = absl::Hours(9), max_block = absl::Hours(24 * 30);
  v1::Booking b;
  ExpectGrpcError(Create(OnSite(from, from + max_block + absl::Minutes(15)), ana_, &b),
                  StatusCode::FAILED_PRECONDITION, "BLOCK_TOO_LONG", "30 days and 15 minutes");
  ExpectGrpcError(Create(OnSite(from, from + max_block + absl::Minutes(15), true), ana_, &b),
                  StatusCode::FAILED_PRECONDITION, "BLOCK_TOO_LONG", "its preview");
  EXPECT_EQ(TemBookings(), 0);
  EXPECT_TRUE(Events().empty());
  grpc::Status s = Create(OnSite(from, from + max_block, true), ana_, &b);
  EXPECT_TRUE(s.ok()) << "exactly max_block: " << GrpcErrorReason(s) << ": " << s.error_message();
}

// "QUALIFICATION_EXPIRED": ana's qualification (90 days' validity, never
// used) has lapsed; she books nothing until staff renew it.
TEST_F(ReasonsTest, CreateBookingWithALapsedQualificationIsQualificationExpired) {
  clock_.Set(clock_.Now() + absl::Hours(24 * 91));
  day_ += absl::Hours(24 * 91);
  v1::Booking b;
  ExpectGrpcError(Create(OnSite(absl::Hours(9), absl::Hours(10)), ana_, &b), StatusCode::FAILED_PRECONDITION,
                  "QUALIFICATION_EXPIRED", "91 days after the grant");
  EXPECT_EQ(TemBookings(), 0);
  EXPECT_TRUE(Events().empty());
}

// "QUALIFICATION_REVOKED": staff revoked ana's qualification.
TEST_F(ReasonsTest, CreateBookingWithARevokedQualificationIsQualificationRevoked) {
  Revoke();
  v1::Booking b;
  ExpectGrpcError(Create(OnSite(absl::Hours(9), absl::Hours(10)), ana_, &b), StatusCode::FAILED_PRECONDITION,
                  "QUALIFICATION_REVOKED", "revoked");
  // Owner staff booking for her are refused the same way.
  v1::CreateBookingRequest for_ana = OnSite(absl::Hours(9), absl::Hours(10));
  for_ana.mutable_booking()->set_user("users/ana");
  ExpectGrpcError(Create(for_ana, staff_, &b), StatusCode::FAILED_PRECONDITION, "QUALIFICATION_REVOKED",
                  "owner staff booking for ana");
  v1::CreateBookingRequest chosen = OnSite(absl::Hours(9), absl::Hours(10));
  chosen.set_booking_id("ana-morning");
  chosen.set_request_id("ana-morning-1");
  ExpectGrpcError(Create(chosen, ana_, &b), StatusCode::FAILED_PRECONDITION, "QUALIFICATION_REVOKED",
                  "with a chosen booking_id and a request_id");
  EXPECT_EQ(TemBookings(), 0);
  EXPECT_TRUE(Events().empty());
  // Granted again, the same request books: its id and request_id were left free.
  iv::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  Inv(&iv::InventoryService::Stub::GrantQualification, grant);
  grpc::Status s = Create(chosen, ana_, &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(b.name(), "bookings/ana-morning");
}

// "USER_DISABLED": an administrator disabled ana's account (her token is
// still valid): she books nothing, nor do owner staff for her, nor does a
// preview pass. A retry of a booking she made before gets its first
// answer (types.proto). The refusal keeps nothing: enabled again, the same
// request (its request_id) books.
TEST_F(ReasonsTest, CreateBookingForADisabledUserIsUserDisabled) {
  v1::CreateBookingRequest before = OnSite(absl::Hours(12), absl::Hours(13));
  before.set_request_id("ana-0");
  v1::Booking first, b;
  ASSERT_TRUE(Create(before, ana_, &first).ok());
  const size_t events = Events().size();
  SetDisabled("users/ana", true);
  grpc::Status retry = Create(before, ana_, &b);
  ASSERT_TRUE(retry.ok()) << "a retry: " << GrpcErrorReason(retry) << ": " << retry.error_message();
  EXPECT_EQ(b.name(), first.name());
  v1::CreateBookingRequest r = OnSite(absl::Hours(9), absl::Hours(10));
  r.set_request_id("ana-1");
  ExpectGrpcError(Create(r, ana_, &b), StatusCode::FAILED_PRECONDITION, "USER_DISABLED", "ana herself");
  ExpectGrpcError(Create(OnSite(absl::Hours(9), absl::Hours(10), true), ana_, &b), StatusCode::FAILED_PRECONDITION,
                  "USER_DISABLED", "her preview");
  v1::CreateBookingRequest for_ana = r;
  for_ana.mutable_booking()->set_user("users/ana");
  for_ana.set_request_id("");
  ExpectGrpcError(Create(for_ana, staff_, &b), StatusCode::FAILED_PRECONDITION, "USER_DISABLED",
                  "owner staff booking for ana");
  ExpectGrpcError(Create(for_ana, admin_, &b), StatusCode::FAILED_PRECONDITION, "USER_DISABLED",
                  "an administrator booking for ana");
  EXPECT_EQ(TemBookings(), 1);
  EXPECT_EQ(Events().size(), events);
  SetDisabled("users/ana", false);
  grpc::Status s = Create(r, ana_, &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(b.state(), v1::Booking::CONFIRMED);
}

// "PROJECT_NOT_ACTIVE": the project's period has ended; nothing is booked
// and its budget commits nothing more. A retry of a booking made before
// gets its first answer ("whatever became of the project since").
TEST_F(ReasonsTest, CreateBookingOnAnEndedProjectIsProjectNotActive) {
  MakeTemProject();
  v1::CreateBookingRequest before = Joint("instruments/tem", absl::Hours(9), absl::Hours(10));
  before.set_request_id("jr-1");
  v1::Booking first, b;
  ASSERT_TRUE(Create(before, ana_, &first).ok());
  const size_t events = Events().size();
  clock_.Set(day_ + absl::Hours(48));  // the period's end
  ExpectGrpcError(Create(Joint("instruments/tem", absl::Hours(51), absl::Hours(52)), ana_, &b),
                  StatusCode::FAILED_PRECONDITION, "PROJECT_NOT_ACTIVE", "after the period");
  ExpectGrpcError(Create(Joint("instruments/tem", absl::Hours(12), absl::Hours(13)), ana_, &b),
                  StatusCode::FAILED_PRECONDITION, "PROJECT_NOT_ACTIVE", "inside the ended period");
  EXPECT_EQ(TemBookings(), 1);
  EXPECT_EQ(Events().size(), events);
  EXPECT_EQ(FromProto(TemBudget().committed()) + FromProto(TemBudget().used()), absl::Hours(1));
  grpc::Status s = Create(before, ana_, &b);
  ASSERT_TRUE(s.ok()) << "the retry: " << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(b.name(), first.name());
}

// "INSTRUMENT_NOT_IN_PROJECT": the project budgets tem, not sem.
TEST_F(ReasonsTest, CreateBookingOfAnInstrumentWithoutBudgetIsInstrumentNotInProject) {
  MakeTemProject();
  AddTemCopy("sem");
  const size_t events = Events().size();
  v1::Booking b;
  ExpectGrpcError(Create(Joint("instruments/sem", absl::Hours(9), absl::Hours(10)), ana_, &b),
                  StatusCode::FAILED_PRECONDITION, "INSTRUMENT_NOT_IN_PROJECT", "sem");
  EXPECT_EQ(Events().size(), events);
  EXPECT_EQ(FromProto(TemBudget().committed()), absl::ZeroDuration());
  // The project's own instrument books.
  grpc::Status s = Create(Joint("instruments/tem", absl::Hours(9), absl::Hours(10)), ana_, &b);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
}

// "SERVICE_ORDER_NOT_FOUND": owner staff book the run of an order that does
// not exist. Refused, its request_id is free again: the same request_id then
// books the run of a real order (in SAMPLES_RECEIVED), on the order's
// instrument; a booking.instrument naming another one is INVALID_FIELD.
TEST_F(ReasonsTest, CreateBookingOfARunOfAMissingOrderIsServiceOrderNotFound) {
  v1::ServiceOrder order = Scheduled();
  v1::CancelBookingRequest unschedule;  // back to SAMPLES_RECEIVED
  unschedule.set_name(order.booking());
  v1::Booking cancelled;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, unschedule, &cancelled, staff_).ok());
  ASSERT_EQ(GetOrder(order.name()).state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  const size_t events = Events().size();

  v1::CreateBookingRequest run = OnSite(absl::Hours(13), absl::Hours(15));
  run.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  run.mutable_booking()->set_service_order("serviceOrders/no-such-order");
  run.mutable_booking()->set_operator_user("users/sam");
  v1::Booking b;
  ExpectGrpcError(Create(run, staff_, &b), StatusCode::NOT_FOUND, "SERVICE_ORDER_NOT_FOUND", "no request_id");
  run.set_request_id("run-1");
  ExpectGrpcError(Create(run, staff_, &b), StatusCode::NOT_FOUND, "SERVICE_ORDER_NOT_FOUND", "with a request_id");
  run.set_validate_only(true);
  run.set_request_id("");
  ExpectGrpcError(Create(run, staff_, &b), StatusCode::NOT_FOUND, "SERVICE_ORDER_NOT_FOUND", "its preview");
  EXPECT_EQ(Events().size(), events);

  // The run is the order's: on the order's instrument (tem), not on
  // another one the request names (it was booked on tem all the same).
  run.set_validate_only(false);
  run.set_request_id("run-1");
  run.mutable_booking()->set_service_order(order.name());
  run.mutable_booking()->set_instrument("instruments/afm");
  const grpc::Status other = Create(run, staff_, &b);
  ExpectGrpcError(other, StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "booking.instrument other than the order's");
  EXPECT_EQ(ViolatedField(other), "booking.instrument");
  EXPECT_EQ(Events().size(), events);
  EXPECT_EQ(GetOrder(order.name()).state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  run.mutable_booking()->set_instrument("instruments/tem");
  grpc::Status s = Create(run, staff_, &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(b.service_order(), order.name());
  EXPECT_EQ(GetOrder(order.name()).state(), v1::ServiceOrder::SCHEDULED);
}

// ================================================================ RequestLease

// "LEASE_TERM_TOO_SHORT": afm's lease rules ask for at least 7 days; a term
// of 6 days (and of 7 days less a minute) is refused, as a lease request
// and as a LEASE CreateBooking; exactly 7 days passes. No lease, no booking,
// no event.
TEST_F(ReasonsTest, RequestLeaseShorterThanTheMinimumTermIsLeaseTermTooShort) {
  v1::Lease l;
  ExpectGrpcError(Request(7, 13, &l), StatusCode::FAILED_PRECONDITION, "LEASE_TERM_TOO_SHORT", "6 days");
  v1::RequestLeaseRequest r;
  r.mutable_lease()->set_instrument("instruments/afm");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 7));
  *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 14) - absl::Minutes(1));
  r.set_request_id("lease-1");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, r, &l, ana_), StatusCode::FAILED_PRECONDITION,
                  "LEASE_TERM_TOO_SHORT", "7 days less a minute");
  r.mutable_lease()->set_contact_user("users/ana");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, r, &l, staff_), StatusCode::FAILED_PRECONDITION,
                  "LEASE_TERM_TOO_SHORT", "owner staff for ana");
  r.set_validate_only(true);
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, r, &l, staff_), StatusCode::FAILED_PRECONDITION,
                  "LEASE_TERM_TOO_SHORT", "its preview");
  v1::CreateBookingRequest as_booking;
  as_booking.mutable_booking()->set_instrument("instruments/afm");
  as_booking.mutable_booking()->set_mode(labshare::type::v1::LEASE);
  *as_booking.mutable_booking()->mutable_reserved_interval() = r.lease().term();
  as_booking.mutable_lease_terms();
  v1::Booking b;
  ExpectGrpcError(Create(as_booking, ana_, &b), StatusCode::FAILED_PRECONDITION, "LEASE_TERM_TOO_SHORT",
                  "CreateBooking with mode LEASE");
  EXPECT_EQ(Leases(), 0);
  EXPECT_TRUE(Events().empty());
  // Seven days exactly, with the same request_id: requested.
  *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 14));
  r.set_validate_only(false);
  grpc::Status s = Call(stub_.get(), &Stub::RequestLease, r, &l, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(l.state(), v1::Lease::REQUESTED);
}

// "USER_DISABLED": the contact (ana) is disabled: neither she nor owner
// staff for her request a lease; nothing is held on afm's calendar. A
// retry of a request made before gets its first answer.
TEST_F(ReasonsTest, RequestLeaseForADisabledContactIsUserDisabled) {
  v1::RequestLeaseRequest before;
  before.mutable_lease()->set_instrument("instruments/afm");
  *before.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 30));
  *before.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 37));
  before.set_request_id("lease-0");
  v1::Lease first, l;
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, before, &first, ana_).ok());
  const size_t events = Events().size();
  SetDisabled("users/ana", true);
  grpc::Status retry = Call(stub_.get(), &Stub::RequestLease, before, &l, ana_);
  ASSERT_TRUE(retry.ok()) << "a retry: " << GrpcErrorReason(retry) << ": " << retry.error_message();
  EXPECT_EQ(l.name(), first.name());
  ExpectGrpcError(Request(7, 14, &l), StatusCode::FAILED_PRECONDITION, "USER_DISABLED", "ana herself");
  v1::RequestLeaseRequest r;
  r.mutable_lease()->set_instrument("instruments/afm");
  r.mutable_lease()->set_contact_user("users/ana");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 7));
  *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 14));
  r.set_request_id("lease-1");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, r, &l, staff_), StatusCode::FAILED_PRECONDITION,
                  "USER_DISABLED", "owner staff for ana");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, r, &l, admin_), StatusCode::FAILED_PRECONDITION,
                  "USER_DISABLED", "an administrator for ana");
  EXPECT_EQ(Leases(), 1);
  EXPECT_EQ(Events().size(), events);
  v1::QueryAvailabilityRequest q;  // before the first lease's handover
  q.set_instrument("instruments/afm");
  *q.mutable_range()->mutable_start_time() = ToProto(day_);
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 28));
  q.set_mode(labshare::type::v1::LEASE);
  v1::QueryAvailabilityResponse free;
  ASSERT_TRUE(Call(stub_.get(), &Stub::QueryAvailability, q, &free, admin_).ok());
  EXPECT_EQ(free.busy_intervals_size(), 0);
  SetDisabled("users/ana", false);
  grpc::Status s = Call(stub_.get(), &Stub::RequestLease, r, &l, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
}

// ================================================================ ApproveBooking, CheckIn

// "BOOKING_STARTED: the reserved start has passed": a pending booking
// (9 h, above tem's 8 h approval threshold) not decided before its start
// stays as it was.
TEST_F(ReasonsTest, ApproveBookingAtOrAfterTheReservedStartIsBookingStarted) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(18), &b).ok());
  ASSERT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);
  const size_t events = Events().size();
  v1::ApproveBookingRequest a;
  a.set_name(b.name());
  v1::Booking out;
  clock_.Set(day_ + absl::Hours(9));
  ExpectGrpcError(Call(stub_.get(), &Stub::ApproveBooking, a, &out, staff_), StatusCode::FAILED_PRECONDITION,
                  "BOOKING_STARTED", "at the reserved start");
  clock_.Set(day_ + absl::Hours(10));
  a.set_etag(b.etag());
  ExpectGrpcError(Call(stub_.get(), &Stub::ApproveBooking, a, &out, admin_), StatusCode::FAILED_PRECONDITION,
                  "BOOKING_STARTED", "an hour later, by an administrator");
  ExpectUnchanged(b, events);
}

// EXPIRED: "set by the first sweep run at or after the reserved start (now
// >= start, the moment ApproveBooking answers BOOKING_STARTED)": no instant
// where a pending booking can be neither approved nor expired (the sweep
// waited for now > start).
TEST_F(ReasonsTest, APendingBookingExpiresWhenApproveBookingBeginsToRefuseIt) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(18), &b).ok());
  ASSERT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);
  clock_.Set(day_ + absl::Hours(9) - absl::Milliseconds(1));
  EXPECT_EQ(*manager_->Sweep(), 0);  // still approvable
  EXPECT_EQ(GetBooking(b.name()).state(), v1::Booking::PENDING_APPROVAL);
  clock_.Set(day_ + absl::Hours(9));
  v1::ApproveBookingRequest a;
  a.set_name(b.name());
  v1::Booking out;
  ExpectGrpcError(Call(stub_.get(), &Stub::ApproveBooking, a, &out, staff_), StatusCode::FAILED_PRECONDITION,
                  "BOOKING_STARTED", "at the reserved start");
  EXPECT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(GetBooking(b.name()).state(), v1::Booking::EXPIRED);
  int expired = 0;
  for (const auto& e : Events()) expired += e.has_booking_expired();
  EXPECT_EQ(expired, 1);
}

// The same to the nanosecond: a start 0.5 ms past a millisecond is not
// swept 0.3 ms before it (the sweep floored the start to the millisecond).
TEST_F(ReasonsTest, APendingBookingIsNotExpiredBeforeItsStartToTheNanosecond) {
  const absl::Duration start = absl::Hours(9) + absl::Microseconds(500);
  v1::Booking b;
  grpc::Status s = Book(start, absl::Hours(18), &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(b.state(), v1::Booking::PENDING_APPROVAL);
  clock_.Set(day_ + start - absl::Microseconds(300));
  EXPECT_EQ(*manager_->Sweep(), 0);  // still approvable
  EXPECT_EQ(GetBooking(b.name()).state(), v1::Booking::PENDING_APPROVAL);
  clock_.Set(day_ + start);
  EXPECT_EQ(*manager_->Sweep(), 1);
  EXPECT_EQ(GetBooking(b.name()).state(), v1::Booking::EXPIRED);
}

// CheckIn: "The ON_SITE qualification is checked again (it may have lapsed
// since booking)": valid when ana booked, lapsed (90 days after the grant,
// never used) by the check-in. A revoked one is QUALIFICATION_REVOKED, as
// CreateBooking answers it (it was QUALIFICATION_EXPIRED).
TEST_F(ReasonsTest, CheckInAfterTheQualificationLapsedIsQualificationExpired) {
  clock_.Set(day_ + absl::Hours(24 * 78));
  const absl::Duration start = absl::Hours(24 * 90 + 9);
  v1::Booking b;
  grpc::Status s = Book(start, start + absl::Hours(1), &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(b.state(), v1::Booking::CONFIRMED);
  const size_t events = Events().size();
  clock_.Set(day_ + start);
  v1::CheckInRequest in;
  in.set_name(b.name());
  v1::Booking out;
  ExpectGrpcError(Call(stub_.get(), &Stub::CheckIn, in, &out, ana_), StatusCode::FAILED_PRECONDITION,
                  "QUALIFICATION_EXPIRED", "ana, 90 days after the grant");
  ExpectGrpcError(Call(stub_.get(), &Stub::CheckIn, in, &out, staff_), StatusCode::FAILED_PRECONDITION,
                  "QUALIFICATION_EXPIRED", "owner staff checking ana in");
  Revoke();
  ExpectGrpcError(Call(stub_.get(), &Stub::CheckIn, in, &out, ana_), StatusCode::FAILED_PRECONDITION,
                  "QUALIFICATION_REVOKED", "revoked as well");
  ExpectGrpcError(Call(stub_.get(), &Stub::CheckIn, in, &out, staff_), StatusCode::FAILED_PRECONDITION,
                  "QUALIFICATION_REVOKED", "revoked, owner staff checking ana in");
  ExpectUnchanged(b, events);
}

// ================================================================ ScheduleService

// "BLOCK_TOO_LONG" when rescheduling a SCHEDULED run: the old run stays
// booked, the order as it was (the reschedule is one step, or nothing).
TEST_F(ReasonsTest, ScheduleServiceLongerThanTheMaxBlockIsBlockTooLong) {
  const v1::ServiceOrder order = Scheduled();
  const size_t events = Events().size();
  v1::ScheduleServiceRequest sch;
  sch.set_name(order.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(12));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12 + 24 * 30) + absl::Minutes(15));
  v1::ServiceOrder out;
  ExpectGrpcError(Call(stub_.get(), &Stub::ScheduleService, sch, &out, staff_), StatusCode::FAILED_PRECONDITION,
                  "BLOCK_TOO_LONG", "a reschedule of 30 days and 15 minutes");
  EXPECT_EQ(GetOrder(order.name()).SerializeAsString(), order.SerializeAsString());
  EXPECT_EQ(GetBooking(order.booking()).state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(TemBookings(), 1);
  EXPECT_EQ(Events().size(), events);
}

// "OPERATOR_NOT_STAFF": the run's operator must be FACILITY_STAFF of tem's
// owner or operator: ana (a LAB_USER) is not, nor is zed (staff, of
// another organisation). Neither a first schedule nor a reschedule
// happens: the order, its run and the calendar stay as they were. The
// request_id is free again: with sam, the same request books the run.
TEST_F(ReasonsTest, ScheduleServiceWithAnOperatorNotStaffIsOperatorNotStaff) {
  iv::CreateUserRequest zed;
  zed.set_user_id("zed");
  zed.mutable_user()->set_display_name("zed");
  zed.mutable_user()->set_organization("organizations/outsider");
  zed.mutable_user()->add_roles(labshare::type::v1::FACILITY_STAFF);
  Inv(&iv::InventoryService::Stub::CreateUser, zed);
  const v1::ServiceOrder scheduled = Scheduled();
  const v1::ServiceOrder received = Received();
  const size_t events = Events().size();
  v1::ServiceOrder out;
  for (const std::string op : {"users/ana", "users/zed"}) {
    v1::ScheduleServiceRequest run = Run(received.name(), absl::Hours(13), absl::Hours(15), op);
    run.set_request_id("run-1");
    ExpectGrpcError(Schedule(run, &out), StatusCode::FAILED_PRECONDITION, "OPERATOR_NOT_STAFF", op);
    ExpectGrpcError(Schedule(Run(scheduled.name(), absl::Hours(13), absl::Hours(15), op), &out),
                    StatusCode::FAILED_PRECONDITION, "OPERATOR_NOT_STAFF", op + ", a reschedule");
    v1::CreateBookingRequest as_booking;
    as_booking.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
    as_booking.mutable_booking()->set_service_order(received.name());
    as_booking.mutable_booking()->set_operator_user(op);
    *as_booking.mutable_booking()->mutable_reserved_interval() = run.interval();
    v1::Booking b;
    ExpectGrpcError(Create(as_booking, staff_, &b), StatusCode::FAILED_PRECONDITION, "OPERATOR_NOT_STAFF",
                    op + ", as CreateBooking");
  }
  EXPECT_EQ(GetOrder(received.name()).etag(), received.etag());
  EXPECT_EQ(GetOrder(received.name()).state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  EXPECT_EQ(GetOrder(scheduled.name()).SerializeAsString(), scheduled.SerializeAsString());
  EXPECT_EQ(GetBooking(scheduled.booking()).state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(TemBookings(), 1);
  EXPECT_EQ(Events().size(), events);
  v1::ScheduleServiceRequest run = Run(received.name(), absl::Hours(13), absl::Hours(15), "users/sam");
  run.set_request_id("run-1");
  grpc::Status s = Schedule(run, &out);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.operator_user(), "users/sam");
}

// "USER_DISABLED: the order's requester": ana was disabled after ordering;
// staff schedule neither her received order's run nor a new time for her
// scheduled one (the old run stays booked). A retry of a schedule made
// before gets its first answer.
TEST_F(ReasonsTest, ScheduleServiceOfADisabledRequestersOrderIsUserDisabled) {
  const v1::ServiceOrder scheduled = Scheduled();
  v1::ServiceOrder out;
  size_t events = 0;
  const v1::ServiceOrder received = ScheduleReceiveAndDisable("users/ana", &events);
  ExpectGrpcError(Schedule(Run(received.name(), absl::Hours(13), absl::Hours(15)), &out),
                  StatusCode::FAILED_PRECONDITION, "USER_DISABLED", "a first schedule");
  ExpectGrpcError(Schedule(Run(scheduled.name(), absl::Hours(13), absl::Hours(15)), &out),
                  StatusCode::FAILED_PRECONDITION, "USER_DISABLED", "a reschedule");
  EXPECT_EQ(GetOrder(received.name()).etag(), received.etag());
  EXPECT_EQ(GetOrder(scheduled.name()).SerializeAsString(), scheduled.SerializeAsString());
  EXPECT_EQ(GetBooking(scheduled.booking()).state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(TemBookings(), 2);
  EXPECT_EQ(Events().size(), events);
  SetDisabled("users/ana", false);
  grpc::Status s = Schedule(Run(received.name(), absl::Hours(13), absl::Hours(15)), &out);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
}

// "USER_DISABLED: the operator's account": sam (owner staff, the caller
// and operator) was disabled by an administrator; his token still works,
// but he runs nothing. A retry of a schedule made before answers first.
TEST_F(ReasonsTest, ScheduleServiceWithADisabledOperatorIsUserDisabled) {
  v1::ServiceOrder out;
  size_t events = 0;
  const v1::ServiceOrder received = ScheduleReceiveAndDisable("users/sam", &events);
  v1::ScheduleServiceRequest run = Run(received.name(), absl::Hours(13), absl::Hours(15), "users/sam");
  run.set_request_id("run-1");
  ExpectGrpcError(Schedule(run, &out), StatusCode::FAILED_PRECONDITION, "USER_DISABLED", "a disabled operator");
  EXPECT_EQ(GetOrder(received.name()).etag(), received.etag());
  EXPECT_EQ(Events().size(), events);
  SetDisabled("users/sam", false);
  grpc::Status s = Schedule(run, &out);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
}

// CreateServiceOrder "USER_DISABLED: the requester's account is disabled":
// ana (her token still valid) and owner staff ordering for her are
// refused; nothing is ordered; a retry of an order placed before answers
// first; enabled again, the refused request_id orders.
TEST_F(ReasonsTest, CreateServiceOrderForADisabledRequesterIsUserDisabled) {
  v1::CreateServiceOrderRequest r;
  r.mutable_service_order()->set_instrument("instruments/tem");
  r.mutable_service_order()->set_service_entry_id("imaging");
  r.mutable_service_order()->set_sample_count(2);
  r.set_request_id("order-1");
  v1::ServiceOrder first, out;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateServiceOrder, r, &first, ana_).ok());
  const int orders = Orders();
  const size_t events = Events().size();
  SetDisabled("users/ana", true);
  grpc::Status retry = Call(stub_.get(), &Stub::CreateServiceOrder, r, &out, ana_);
  ASSERT_TRUE(retry.ok()) << "a retry: " << GrpcErrorReason(retry) << ": " << retry.error_message();
  EXPECT_EQ(out.SerializeAsString(), first.SerializeAsString());
  r.set_request_id("order-2");
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, r, &out, ana_), StatusCode::FAILED_PRECONDITION,
                  "USER_DISABLED", "ana herself");
  v1::CreateServiceOrderRequest for_ana = r;
  for_ana.mutable_service_order()->set_requester("users/ana");
  for_ana.set_request_id("order-3");
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, for_ana, &out, staff_),
                  StatusCode::FAILED_PRECONDITION, "USER_DISABLED", "owner staff for ana");
  EXPECT_EQ(Orders(), orders);
  EXPECT_EQ(Events().size(), events);
  SetDisabled("users/ana", false);
  grpc::Status s = Call(stub_.get(), &Stub::CreateServiceOrder, r, &out, ana_);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(Orders(), orders + 1);
}

// "USER_NOT_FOUND": the operator_user named does not exist. A malformed
// one is INVALID_NAME (booking.proto's header) naming operator_user. The
// request_id is free again.
TEST_F(ReasonsTest, ScheduleServiceWithAMissingOperatorIsUserNotFound) {
  const v1::ServiceOrder received = Received();
  const size_t events = Events().size();
  v1::ScheduleServiceRequest run = Run(received.name(), absl::Hours(13), absl::Hours(15), "users/nobody");
  run.set_request_id("run-1");
  v1::ServiceOrder out;
  ExpectGrpcError(Schedule(run, &out), StatusCode::NOT_FOUND, "USER_NOT_FOUND", "users/nobody");
  ExpectGrpcError(Schedule(run, &out), StatusCode::NOT_FOUND, "USER_NOT_FOUND", "users/nobody, again");
  run.set_operator_user("sam");
  grpc::Status malformed = Schedule(run, &out);
  ExpectGrpcError(malformed, StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "sam without users/");
  EXPECT_EQ(ViolatedField(malformed), "operator_user") << malformed.error_message();
  EXPECT_EQ(GetOrder(received.name()).etag(), received.etag());
  EXPECT_EQ(TemBookings(), 0);
  EXPECT_EQ(Events().size(), events);
  run.set_operator_user("");
  grpc::Status s = Schedule(run, &out);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.state(), v1::ServiceOrder::SCHEDULED);
}

// ================================================================ QueryAvailability, SearchAvailableInstruments

// "MODE_NOT_OFFERED": tem is not leased, afm offers nothing but LEASE; the
// mode defaults to ON_SITE.
TEST_F(ReasonsTest, QueryAvailabilityOfAModeNotOfferedIsModeNotOffered) {
  struct Case {
    const char* instrument;
    labshare::type::v1::SharingMode mode;
  };
  for (const Case& c : {Case{"instruments/tem", labshare::type::v1::LEASE},
                        Case{"instruments/afm", labshare::type::v1::SHARING_MODE_UNSPECIFIED},
                        Case{"instruments/afm", labshare::type::v1::ON_SITE},
                        Case{"instruments/afm", labshare::type::v1::JOINT_RESEARCH},
                        Case{"instruments/afm", labshare::type::v1::TECHNICAL_SERVICE}}) {
    v1::QueryAvailabilityRequest q;
    q.set_instrument(c.instrument);
    *q.mutable_range()->mutable_start_time() = ToProto(day_);
    *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24));
    q.set_mode(c.mode);
    const std::string what = std::string(c.instrument) + " " + labshare::type::v1::SharingMode_Name(c.mode);
    v1::QueryAvailabilityResponse resp;
    for (const std::string& token : {ana_, staff_, admin_}) {
      ExpectGrpcError(Call(stub_.get(), &Stub::QueryAvailability, q, &resp, token), StatusCode::FAILED_PRECONDITION,
                      "MODE_NOT_OFFERED", what);
    }
  }
}

// "RANGE_TOO_LONG": a range over 366 days (by a second) is refused before
// anything is searched, in a category with instruments or without;
// exactly 366 days is searched.
TEST_F(ReasonsTest, SearchAvailableInstrumentsOverARangeTooLongIsRangeTooLong) {
  v1::SearchAvailableInstrumentsRequest r;
  r.set_category("electron-microscopy");
  *r.mutable_range()->mutable_start_time() = ToProto(day_);
  *r.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 366) + absl::Seconds(1));
  v1::SearchAvailableInstrumentsResponse resp;
  ExpectGrpcError(Call(stub_.get(), &Stub::SearchAvailableInstruments, r, &resp, ana_), StatusCode::INVALID_ARGUMENT,
                  "RANGE_TOO_LONG", "366 days and a second");
  r.set_category("x-ray");
  ExpectGrpcError(Call(stub_.get(), &Stub::SearchAvailableInstruments, r, &resp, admin_),
                  StatusCode::INVALID_ARGUMENT, "RANGE_TOO_LONG", "a category without instruments");
  r.set_category("electron-microscopy");
  *r.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 366));
  grpc::Status s = Call(stub_.get(), &Stub::SearchAvailableInstruments, r, &resp, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
}

// booking.proto's header: "INVALID_NAME: a resource name in the request
// ... is not {collection}/{id}": the error names the request's field, not
// the field of the inventory request booking made with it ("name"), nor
// that of the method whose loader it shares (GetProject's and
// ScheduleService's "name"; types.proto: a BadRequest names the bad field).
// Admitted callers who may name anyone, so that validation is reached.
TEST_F(ReasonsTest, MalformedReferencesAreInvalidNameNamingTheirField) {
  const auto expect = [](const grpc::Status& s, const std::string& field) {
    ExpectGrpcError(s, StatusCode::INVALID_ARGUMENT, "INVALID_NAME", field);
    EXPECT_EQ(ViolatedField(s), field) << s.error_message();
  };
  v1::QueryAvailabilityRequest q;
  q.set_instrument("instruments/tem");
  *q.mutable_range()->mutable_start_time() = ToProto(day_);
  *q.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(24));
  q.set_organization("lab");
  v1::QueryAvailabilityResponse free;
  expect(Call(stub_.get(), &Stub::QueryAvailability, q, &free, staff_), "organization");
  v1::SearchAvailableInstrumentsRequest search;
  search.set_category("electron-microscopy");
  *search.mutable_range() = q.range();
  search.set_organization("lab");
  v1::SearchAvailableInstrumentsResponse found;
  expect(Call(stub_.get(), &Stub::SearchAvailableInstruments, search, &found, admin_), "organization");

  v1::RequestLeaseRequest lease;
  lease.mutable_lease()->set_instrument("instruments/afm");
  *lease.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 7));
  *lease.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 14));
  lease.mutable_lease()->set_contact_user("ana");
  v1::Lease l;
  expect(Call(stub_.get(), &Stub::RequestLease, lease, &l, admin_), "lease.contact_user");
  lease.mutable_lease()->set_contact_user("users/ana");
  lease.mutable_lease()->set_lessee_organization("lab");
  expect(Call(stub_.get(), &Stub::RequestLease, lease, &l, staff_), "lease.lessee_organization");
  v1::CreateBookingRequest as_booking;
  as_booking.mutable_booking()->set_instrument("instruments/afm");
  as_booking.mutable_booking()->set_mode(labshare::type::v1::LEASE);
  as_booking.mutable_booking()->set_user("ana");
  *as_booking.mutable_booking()->mutable_reserved_interval() = lease.lease().term();
  as_booking.mutable_lease_terms();
  v1::Booking b;
  expect(Create(as_booking, admin_, &b), "booking.user");
  as_booking.mutable_booking()->set_user("users/ana");
  as_booking.mutable_booking()->set_payer_organization("lab");
  expect(Create(as_booking, admin_, &b), "booking.payer_organization");
  v1::CreateBookingRequest on_site = OnSite(absl::Hours(9), absl::Hours(10));
  on_site.mutable_booking()->set_user("users/ana");
  on_site.mutable_booking()->set_payer_organization("lab");
  expect(Create(on_site, staff_, &b), "booking.payer_organization");
  // The project and service order a booking names, and the project an
  // update names (they said "name", the field of Get).
  v1::CreateBookingRequest joint = Joint("instruments/tem", absl::Hours(9), absl::Hours(10));
  joint.mutable_booking()->set_user("users/ana");
  joint.mutable_booking()->set_project("proj");
  expect(Create(joint, admin_, &b), "booking.project");
  v1::CreateBookingRequest run = OnSite(absl::Hours(9), absl::Hours(10));
  run.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  run.mutable_booking()->set_service_order("order");
  expect(Create(run, staff_, &b), "booking.service_order");  // on the order's instrument, named
  run.mutable_booking()->clear_instrument();
  expect(Create(run, staff_, &b), "booking.service_order");  // left to the order
  v1::UpdateProjectRequest update;
  update.mutable_project()->set_name("proj");
  update.mutable_project()->set_title("Cryo-EM");
  update.mutable_update_mask()->add_paths("title");
  v1::Project project;
  expect(Call(stub_.get(), &Stub::UpdateProject, update, &project, admin_), "project.name");
  v1::GetProjectRequest get;
  get.set_name("proj");
  expect(Call(stub_.get(), &Stub::GetProject, get, &project, admin_), "name");
  EXPECT_TRUE(Events().empty());
}

// "ORGANIZATION_NOT_FOUND": the organisation whose view is asked for does
// not exist (a caller's own organisation too, if it went); a LAB_USER
// naming another organisation hears ORGANIZATION_SCOPE first.
TEST_F(ReasonsTest, SearchAvailableInstrumentsForAMissingOrganizationIsOrganizationNotFound) {
  v1::SearchAvailableInstrumentsRequest r;
  r.set_category("electron-microscopy");
  *r.mutable_range()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *r.mutable_range()->mutable_end_time() = ToProto(day_ + absl::Hours(10));
  r.set_organization("organizations/ghost");
  v1::SearchAvailableInstrumentsResponse resp;
  for (const std::string& token : {staff_, admin_}) {
    ExpectGrpcError(Call(stub_.get(), &Stub::SearchAvailableInstruments, r, &resp, token), StatusCode::NOT_FOUND,
                    "ORGANIZATION_NOT_FOUND", "organizations/ghost");
  }
  r.set_category("x-ray");
  ExpectGrpcError(Call(stub_.get(), &Stub::SearchAvailableInstruments, r, &resp, admin_), StatusCode::NOT_FOUND,
                  "ORGANIZATION_NOT_FOUND", "a category without instruments");
  r.set_category("electron-microscopy");
  ExpectGrpcError(Call(stub_.get(), &Stub::SearchAvailableInstruments, r, &resp, ana_),
                  StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "ana naming another organisation");
  r.clear_organization();
  const std::string gil = Token("gil", "ghost", {Role::kLabUser});
  ExpectGrpcError(Call(stub_.get(), &Stub::SearchAvailableInstruments, r, &resp, gil), StatusCode::NOT_FOUND, "ORGANIZATION_NOT_FOUND", "the caller's own, gone");
  r.set_organization("organizations/lab");
  grpc::Status s = Call(stub_.get(), &Stub::SearchAvailableInstruments, r, &resp, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  ASSERT_EQ(resp.instruments_size(), 1);
  EXPECT_EQ(resp.instruments(0).instrument(), "instruments/tem");
}

// ================================================================ CreateProject

// "DUPLICATE_PARTICIPANT", "DUPLICATE_INSTRUMENT", TEMPLATE_PARTICIPANT_COUNT
// ("ONE_THIRD_TWO_THIRDS needs exactly two participants") and
// MODE_NOT_OFFERED ("an instrument without JOINT_RESEARCH": afm is leased
// only). None takes the project id: a valid create of it succeeds after.
TEST_F(ReasonsTest, CreateProjectRefusalsNameTheirReasonsAndLeaveTheIdFree) {
  const std::string lab = "organizations/lab", owner = "organizations/owner", outsider = "organizations/outsider";
  const size_t events = Events().size();
  v1::Project p;
  ExpectGrpcError(MakeProject("proj", {lab, owner, lab}, v1::Project::EQUAL_SPLIT, {"instruments/tem"}, &p),
                  StatusCode::INVALID_ARGUMENT, "DUPLICATE_PARTICIPANT", "lab twice");
  ExpectGrpcError(MakeProject("proj", {lab, owner}, v1::Project::EQUAL_SPLIT, {"instruments/tem", "instruments/tem"},
                              &p),
                  StatusCode::INVALID_ARGUMENT, "DUPLICATE_INSTRUMENT", "tem twice");
  ExpectGrpcError(MakeProject("proj", {lab, owner, outsider}, v1::Project::ONE_THIRD_TWO_THIRDS, {"instruments/tem"},
                              &p),
                  StatusCode::INVALID_ARGUMENT, "TEMPLATE_PARTICIPANT_COUNT", "ONE_THIRD_TWO_THIRDS");
  ExpectGrpcError(MakeProject("proj", {lab, owner}, v1::Project::EQUAL_SPLIT, {"instruments/tem", "instruments/afm"},
                              &p),
                  StatusCode::FAILED_PRECONDITION, "MODE_NOT_OFFERED", "JOINT_RESEARCH");
  EXPECT_EQ(Events().size(), events);
  v1::GetProjectRequest g;
  g.set_name("projects/proj");
  ExpectGrpcError(Call(stub_.get(), &Stub::GetProject, g, &p, admin_), StatusCode::NOT_FOUND, "PROJECT_NOT_FOUND",
                  "after the refusals");
  grpc::Status s = MakeProject("proj", {lab, owner, outsider}, v1::Project::EQUAL_SPLIT, {"instruments/tem"}, &p);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(p.participants(0).share_bps(), 3334);
}

// ================================================================ CreateServiceOrder

// "SERVICE_ENTRY_NOT_FOUND": tem's catalogue has "imaging" only. No order,
// no event; the request_id is free again.
TEST_F(ReasonsTest, CreateServiceOrderOfAnUnknownEntryIsServiceEntryNotFound) {
  v1::CreateServiceOrderRequest r;
  r.mutable_service_order()->set_instrument("instruments/tem");
  r.mutable_service_order()->set_service_entry_id("sectioning");
  r.mutable_service_order()->set_sample_count(2);
  r.set_request_id("order-1");
  v1::ServiceOrder o;
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, ana_), StatusCode::NOT_FOUND,
                  "SERVICE_ENTRY_NOT_FOUND", "ana");
  r.mutable_service_order()->set_requester("users/ana");
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, staff_), StatusCode::NOT_FOUND,
                  "SERVICE_ENTRY_NOT_FOUND", "owner staff for ana");
  v1::ListServiceOrdersRequest l;
  v1::ListServiceOrdersResponse listed;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ListServiceOrders, l, &listed, admin_).ok());
  EXPECT_EQ(listed.service_orders_size(), 0);
  EXPECT_TRUE(Events().empty());
  r.mutable_service_order()->set_service_entry_id("imaging");
  grpc::Status s = Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, ana_);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
}

// ServiceOrder.service_entry_id is "Required": an order naming no entry is
// INVALID_ARGUMENT (INVALID_FIELD, on the field), not an entry the
// catalogue lacks (it answered NOT_FOUND SERVICE_ENTRY_NOT_FOUND). Nothing
// is written; the same request with the entry is then placed.
TEST_F(ReasonsTest, CreateServiceOrderWithoutAnEntryIsInvalidField) {
  v1::CreateServiceOrderRequest r;
  r.mutable_service_order()->set_instrument("instruments/tem");
  r.mutable_service_order()->set_sample_count(2);
  r.set_request_id("order-no-entry");
  v1::ServiceOrder o;
  for (const auto& [who, token] : {std::pair<std::string, std::string>{"ana", ana_}, {"owner staff", staff_}}) {
    grpc::Status s = Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, token);
    ExpectGrpcError(s, StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", who);
    EXPECT_EQ(ViolatedField(s), "service_order.service_entry_id") << who;
    r.mutable_service_order()->set_requester("users/ana");
  }
  EXPECT_TRUE(Events().empty());
  r.mutable_service_order()->set_service_entry_id("imaging");
  grpc::Status s = Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, ana_);
  EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
}

// types.proto: "A retry with the same request_id and the same content
// returns the first answer" -- also after the catalogue entry was taken
// off the instrument (a new order of it is SERVICE_ENTRY_NOT_FOUND), or
// the instrument stopped offering TECHNICAL_SERVICE (MODE_NOT_OFFERED), as
// it does after an access policy change.
TEST_F(ReasonsTest, CreateServiceOrderRetriedAfterTheEntryWentAnswersFirst) {
  v1::CreateServiceOrderRequest r;
  r.mutable_service_order()->set_instrument("instruments/tem");
  r.mutable_service_order()->set_service_entry_id("imaging");
  r.mutable_service_order()->set_sample_count(2);
  r.set_request_id("order-1");
  v1::ServiceOrder first, again;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateServiceOrder, r, &first, ana_).ok());
  iv::UpdateInstrumentRequest u;
  u.mutable_instrument()->set_name("instruments/tem");
  auto* entry = u.mutable_instrument()->add_service_catalogue();
  entry->set_entry_id("sectioning");
  entry->set_display_name("Ultramicrotome sectioning, per sample");
  entry->set_unit(iv::PER_SAMPLE);
  u.mutable_update_mask()->add_paths("service_catalogue");
  Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  grpc::Status s = Call(stub_.get(), &Stub::CreateServiceOrder, r, &again, ana_);
  ASSERT_TRUE(s.ok()) << "entry gone: " << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  r.set_request_id("order-2");
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, r, &again, ana_), StatusCode::NOT_FOUND,
                  "SERVICE_ENTRY_NOT_FOUND", "a new order of the entry gone");

  // The mode goes with its catalogue.
  u.mutable_instrument()->clear_service_catalogue();
  const iv::Instrument tem = InventoryInstrument("tem");
  for (const auto& m : tem.modes()) {
    if (m.mode() != labshare::type::v1::TECHNICAL_SERVICE) *u.mutable_instrument()->add_modes() = m;
  }
  u.mutable_update_mask()->add_paths("modes");
  Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  r.set_request_id("order-1");
  s = Call(stub_.get(), &Stub::CreateServiceOrder, r, &again, ana_);
  ASSERT_TRUE(s.ok()) << "mode gone: " << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  r.set_request_id("order-3");
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, r, &again, ana_), StatusCode::FAILED_PRECONDITION,
                  "MODE_NOT_OFFERED", "a new order once the mode is gone");
}

// NOT_FOUND "INSTRUMENT_NOT_FOUND" (no such instrument, for ana, owner staff
// and an administrator), "ORGANIZATION_NOT_FOUND" (a client_organization
// that does not exist, named by staff or an administrator) and
// "USER_NOT_FOUND" (a requester that does not exist). No order, no event,
// and the request_id is free again.
TEST_F(ReasonsTest, CreateServiceOrderOfMissingThingsIsNotFound) {
  v1::CreateServiceOrderRequest valid;
  valid.mutable_service_order()->set_instrument("instruments/tem");
  valid.mutable_service_order()->set_service_entry_id("imaging");
  valid.mutable_service_order()->set_sample_count(2);
  valid.set_request_id("order-1");
  struct Case {
    std::string what, reason;
    std::vector<std::string> tokens;
    std::string instrument, requester, client;
  };
  const std::vector<Case> cases = {
      {"a missing instrument", "INSTRUMENT_NOT_FOUND", {ana_, staff_, admin_}, "instruments/no-such-instrument",
       "users/ana", ""},
      {"a missing client", "ORGANIZATION_NOT_FOUND", {staff_, admin_}, "instruments/tem", "users/ana",
       "organizations/ghost"},
      {"a missing requester", "USER_NOT_FOUND", {staff_, admin_}, "instruments/tem", "users/nobody", ""},
  };
  for (const Case& c : cases) {
    v1::CreateServiceOrderRequest r = valid;
    r.mutable_service_order()->set_instrument(c.instrument);
    r.mutable_service_order()->set_requester(c.requester);
    r.mutable_service_order()->set_client_organization(c.client);
    v1::ServiceOrder o;
    for (const std::string& token : c.tokens) {
      for (int attempt = 0; attempt < 2; ++attempt) {
        ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, token), StatusCode::NOT_FOUND, c.reason,
                        c.what);
      }
    }
  }
  // Malformed names are INVALID_NAME (booking.proto's header), naming the field.
  for (const auto& [field, change] :
       std::vector<std::pair<std::string, std::function<void(v1::ServiceOrder*)>>>{
           {"service_order.instrument", [](v1::ServiceOrder* o) { o->set_instrument("tem"); }},
           {"service_order.requester", [](v1::ServiceOrder* o) { o->set_requester("ana"); }},
           {"service_order.client_organization", [](v1::ServiceOrder* o) {
              o->set_requester("users/ana");
              o->set_client_organization("lab");
            }}}) {
    v1::CreateServiceOrderRequest r = valid;
    change(r.mutable_service_order());
    v1::ServiceOrder o;
    grpc::Status malformed = Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, admin_);
    ExpectGrpcError(malformed, StatusCode::INVALID_ARGUMENT, "INVALID_NAME", field);
    EXPECT_EQ(ViolatedField(malformed), field) << malformed.error_message();
  }
  EXPECT_EQ(Orders(), 0);
  EXPECT_TRUE(Events().empty());
  v1::ServiceOrder o;
  grpc::Status s = Call(stub_.get(), &Stub::CreateServiceOrder, valid, &o, ana_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(o.client_organization(), "organizations/lab");
}

// ================================================================ ApplyMaintenanceWindow

// "MAINTENANCE_WINDOW_NOT_FOUND": no such window on tem (also a window id of
// another instrument); the booking in its place stays, nothing is
// announced, and the request_id is free again.
TEST_F(ReasonsTest, ApplyMaintenanceWindowOfAMissingWindowIsMaintenanceWindowNotFound) {
  v1::Booking b;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &b).ok());
  iv::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/afm");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(8));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(12));
  mw.mutable_maintenance_window()->set_reason("alignment");
  iv::MaintenanceWindow afm_window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &afm_window, admin_).ok());
  const std::string afm_window_id = afm_window.name().substr(afm_window.name().rfind('/') + 1);
  const size_t events = Events().size();

  for (const std::string& name : {std::string("instruments/tem/maintenanceWindows/no-such-window"),
                                  "instruments/tem/maintenanceWindows/" + afm_window_id}) {
    for (const std::string& token : {admin_, staff_}) {
      v1::ApplyMaintenanceWindowRequest apply;
      apply.set_maintenance_window(name);
      apply.set_request_id("apply-1");
      v1::ApplyMaintenanceWindowResponse resp;
      ExpectGrpcError(Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, &resp, token), StatusCode::NOT_FOUND,
                      "MAINTENANCE_WINDOW_NOT_FOUND", name);
    }
  }
  EXPECT_EQ(GetBooking(b.name()).state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(Events().size(), events);
  // The same request_id applies a real window.
  mw.set_parent("instruments/tem");
  iv::MaintenanceWindow tem_window;
  ASSERT_TRUE(Call(inventory_.get(), &iv::InventoryService::Stub::CreateMaintenanceWindow, mw, &tem_window, admin_).ok());
  v1::ApplyMaintenanceWindowRequest apply;
  apply.set_maintenance_window(tem_window.name());
  apply.set_request_id("apply-1");
  v1::ApplyMaintenanceWindowResponse resp;
  grpc::Status s = Call(stub_.get(), &Stub::ApplyMaintenanceWindow, apply, &resp, admin_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(GetBooking(b.name()).state(), v1::Booking::CANCELLED);
}

// ================================================================ NOT_FOUND of leases and orders

// Every lease and order method named with a well-formed name that does not
// exist, by a caller the comment admits, with a request otherwise valid:
// NOT_FOUND with the collection's reason, twice with one request_id (a
// refusal keeps nothing). Two names each: an id nothing has, and the id of
// something else (the ON_SITE booking's id as a lease or an order; a
// lease's id as an order). The caller's role is checked first (types.proto:
// "checked before validation"): a role the method does not admit hears
// ROLE_NOT_ALLOWED, missing resource or not. The resource is looked up
// before the caller's organisation scope on it (there is no organisation to
// check against): a caller of another organisation, in a role the method
// admits, hears NOT_FOUND too.
TEST_F(ReasonsTest, LeaseAndOrderMethodsOfMissingResourcesAreNotFound) {
  v1::Booking booking;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &booking).ok());
  v1::Lease lease;
  ASSERT_TRUE(Request(7, 14, &lease).ok());
  const std::string booking_id = booking.name().substr(booking.name().find('/') + 1);
  const std::string lease_id = lease.name().substr(lease.name().find('/') + 1);
  const std::string other_user = Token("oli", "outsider", {Role::kLabUser});
  const std::string other_staff = Token("zed", "outsider", {Role::kFacilityStaff});

  using Run = NamedCall;
  struct Case {
    const char* method;
    const char* reason;
    std::vector<std::string> names;
    std::string caller, other;  // admitted; of another organisation
    Run run;
    std::string refused = "";  // a role the method does not admit ("": none here)
  };
  // A call of `method` with `req` (its name and request_id set).
  auto lease_call = [&](auto method, auto req) -> Run { return Named(method, req); };
  auto order_call = [&](auto method, auto req) -> Run {
    return [this, method, req](const std::string& name, const std::string& token, const std::string& request_id) {
      auto r = req;
      r.set_name(name);
      if constexpr (!std::is_same_v<decltype(r), v1::GetServiceOrderRequest>) r.set_request_id(request_id);
      v1::ServiceOrder out;
      return Call(stub_.get(), method, r, &out, token);
    };
  };
  const std::vector<std::string> leases = {"leases/no-such-lease", "leases/" + booking_id};
  const std::vector<std::string> orders = {"serviceOrders/no-such-order", "serviceOrders/" + booking_id,
                                           "serviceOrders/" + lease_id};
  v1::RejectLeaseRequest reject;
  reject.set_reason("the instrument is needed in house");
  v1::CancelLeaseRequest cancel_lease;
  cancel_lease.set_reason("plans changed");
  v1::RecordHandoverRequest handover;
  handover.set_condition_notes("clean, calibrated");
  v1::RecordReturnRequest ret;
  ret.set_condition_notes("clean");
  v1::ExtendLeaseRequest extend;
  *extend.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 21));
  v1::IssueQuoteRequest quote;
  quote.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
  quote.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(20000);
  *quote.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24 * 14));
  v1::AcceptQuoteRequest accept_quote;
  accept_quote.set_quote_etag("0123456789abcdef");
  v1::ReceiveSamplesRequest samples;
  samples.set_received_sample_count(3);
  v1::ScheduleServiceRequest schedule;
  *schedule.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(13));
  *schedule.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  v1::DeliverReportRequest deliver;
  deliver.mutable_report()->set_uri("dms://reports/1");
  v1::DisputeReportRequest dispute;
  dispute.set_reason("grid 2 missing");
  v1::CancelOrderRequest cancel_order;
  cancel_order.set_reason("no longer needed");

  // GetLease and GetServiceOrder take no request_id: the lambdas give it
  // only to requests that have one.
  auto get_lease = [this](const std::string& name, const std::string& token, const std::string&) {
    v1::GetLeaseRequest g;
    g.set_name(name);
    v1::Lease out;
    return Call(stub_.get(), &Stub::GetLease, g, &out, token);
  };
  const std::vector<Case> cases = {
      {"GetLease", "LEASE_NOT_FOUND", leases, ana_, other_user, get_lease},
      {"ApproveLease", "LEASE_NOT_FOUND", leases, staff_, other_staff,
       lease_call(&Stub::ApproveLease, Approval("")), ana_},
      {"RejectLease", "LEASE_NOT_FOUND", leases, staff_, other_staff, lease_call(&Stub::RejectLease, reject), ana_},
      {"CancelLease", "LEASE_NOT_FOUND", leases, ana_, other_user, lease_call(&Stub::CancelLease, cancel_lease)},
      {"RecordHandover", "LEASE_NOT_FOUND", leases, staff_, other_staff,
       lease_call(&Stub::RecordHandover, handover), ana_},
      {"RecordReturn", "LEASE_NOT_FOUND", leases, staff_, other_staff, lease_call(&Stub::RecordReturn, ret), ana_},
      {"ExtendLease", "LEASE_NOT_FOUND", leases, staff_, other_staff, lease_call(&Stub::ExtendLease, extend), ana_},
      {"CloseLease", "LEASE_NOT_FOUND", leases, staff_, other_staff,
       lease_call(&Stub::CloseLease, v1::CloseLeaseRequest()), ana_},
      {"GetServiceOrder", "SERVICE_ORDER_NOT_FOUND", orders, ana_, other_user,
       order_call(&Stub::GetServiceOrder, v1::GetServiceOrderRequest())},
      {"IssueQuote", "SERVICE_ORDER_NOT_FOUND", orders, staff_, other_staff, order_call(&Stub::IssueQuote, quote), ana_},
      {"AcceptQuote", "SERVICE_ORDER_NOT_FOUND", orders, ana_, other_user,
       order_call(&Stub::AcceptQuote, accept_quote), staff_},
      {"ReceiveSamples", "SERVICE_ORDER_NOT_FOUND", orders, staff_, other_staff,
       order_call(&Stub::ReceiveSamples, samples), ana_},
      {"ScheduleService", "SERVICE_ORDER_NOT_FOUND", orders, staff_, other_staff,
       order_call(&Stub::ScheduleService, schedule), ana_},
      {"StartService", "SERVICE_ORDER_NOT_FOUND", orders, staff_, other_staff,
       order_call(&Stub::StartService, v1::StartServiceRequest()), ana_},
      {"DeliverReport", "SERVICE_ORDER_NOT_FOUND", orders, staff_, other_staff,
       order_call(&Stub::DeliverReport, deliver), ana_},
      {"AcceptReport", "SERVICE_ORDER_NOT_FOUND", orders, ana_, other_user,
       order_call(&Stub::AcceptReport, v1::AcceptReportRequest()), staff_},
      {"DisputeReport", "SERVICE_ORDER_NOT_FOUND", orders, ana_, other_user,
       order_call(&Stub::DisputeReport, dispute), staff_},
      {"CancelOrder", "SERVICE_ORDER_NOT_FOUND", orders, ana_, other_user,
       order_call(&Stub::CancelOrder, cancel_order)},
  };
  const size_t events = Events().size();
  for (const Case& c : cases) {
    for (const std::string& name : c.names) {
      const std::string request_id = std::string("nf-") + c.method;
      for (int attempt = 0; attempt < 2; ++attempt) {
        ExpectGrpcError(c.run(name, c.caller, request_id), StatusCode::NOT_FOUND, c.reason,
                        std::string(c.method) + " " + name + " by an admitted caller");
      }
      ExpectGrpcError(c.run(name, c.other, ""), StatusCode::NOT_FOUND, c.reason,
                      std::string(c.method) + " " + name + " by a caller of another organisation");
      if (!c.refused.empty()) {
        ExpectGrpcError(c.run(name, c.refused, ""), StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED",
                        std::string(c.method) + " " + name + " by a role it does not admit");
      }
    }
  }
  EXPECT_EQ(Events().size(), events);
  EXPECT_EQ(GetBooking(booking.name()).etag(), booking.etag());
}

// ================================================================ NOT_FOUND of bookings

// CancelBooking, ApproveBooking, RejectBooking, CheckIn and CheckOut of a
// well-formed booking name that does not exist, in a request otherwise
// valid: NOT_FOUND BOOKING_NOT_FOUND, as the lease and order table above:
// twice with one request_id, also for a caller of another organisation in
// an admitted role; a role the method does not admit hears
// ROLE_NOT_ALLOWED. Two names: an id nothing has, and a service order's id
// (orders and their runs have ids of their own). Nothing changes.
TEST_F(ReasonsTest, BookingMethodsOfMissingBookingsAreBookingNotFound) {
  v1::Booking booking;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(18), &booking).ok());  // pending approval
  const v1::ServiceOrder order = Order3();
  const std::vector<std::string> names = {"bookings/no-such-booking",
                                          "bookings/" + order.name().substr(order.name().find('/') + 1)};
  const std::string other_user = Token("oli", "outsider", {Role::kLabUser});
  const std::string other_staff = Token("zed", "outsider", {Role::kFacilityStaff});
  const std::string auditor = Token("aud", "", {Role::kAuditor});
  const std::string billing = Token("bea", "lab", {Role::kMemberBillingAdmin});

  struct Case {
    const char* method;
    std::vector<std::string> callers;  // admitted roles (the first retries with one request_id)
    std::string other;                 // an admitted role, of another organisation
    std::vector<std::string> refused;  // roles the method does not admit
    NamedCall run;
  };
  v1::CancelBookingRequest cancel;
  cancel.set_reason("plans changed");
  v1::ApproveBookingRequest approve;
  approve.set_note("fine");
  v1::RejectBookingRequest reject;
  reject.set_reason("the instrument is needed in house");
  v1::CheckInRequest in;
  in.set_notes("arrived");
  v1::CheckOutRequest out;
  out.set_notes("done");
  const std::vector<Case> cases = {
      {"CancelBooking", {ana_, staff_, admin_}, other_user, {auditor}, Named(&Stub::CancelBooking, cancel)},
      {"ApproveBooking", {staff_, admin_}, other_staff, {ana_, auditor}, Named(&Stub::ApproveBooking, approve)},
      {"RejectBooking", {staff_, admin_}, other_staff, {ana_, auditor}, Named(&Stub::RejectBooking, reject)},
      {"CheckIn", {ana_, staff_}, other_user, {billing, admin_}, Named(&Stub::CheckIn, in)},
      {"CheckOut", {ana_, staff_}, other_user, {billing, admin_}, Named(&Stub::CheckOut, out)},
  };
  const size_t events = Events().size();
  for (const Case& c : cases) {
    for (const std::string& name : names) {
      const std::string what = std::string(c.method) + " " + name;
      const std::string request_id = std::string("nf-") + c.method;
      ExpectGrpcError(c.run(name, c.callers[0], request_id), StatusCode::NOT_FOUND, "BOOKING_NOT_FOUND",
                      what + ", a retry of one request_id");
      for (const std::string& token : c.callers) {
        ExpectGrpcError(c.run(name, token, request_id), StatusCode::NOT_FOUND, "BOOKING_NOT_FOUND",
                        what + " by an admitted caller");
      }
      ExpectGrpcError(c.run(name, c.other, ""), StatusCode::NOT_FOUND, "BOOKING_NOT_FOUND",
                      what + " by a caller of another organisation");
      for (const std::string& token : c.refused) {
        ExpectGrpcError(c.run(name, token, ""), StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED",
                        what + " by a role it does not admit");
      }
    }
  }
  EXPECT_EQ(Events().size(), events);
  EXPECT_EQ(GetBooking(booking.name()).etag(), booking.etag());
  EXPECT_EQ(GetOrder(order.name()).etag(), order.etag());
}

}  // namespace
}  // namespace labshare::booking
