// Leases and technical-service orders held to the words of their proto
// comments (proto/labshare/booking/v1/booking.proto, "leases" and
// "technical service"), where the implementation had drifted from them:
// access rules on ordering, the run's check-in window, chosen ids, sample
// receipt, quote validity, the early return's term and the reschedule's
// cancellation initiator. Every answer also passes the strict error-contract
// check when ctest runs it (LABSHARE_STRICT_REASONS=1).
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "google/rpc/error_details.pb.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "tests/booking/booking_fixture.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;

class LeaseOrderContractTest : public BookingServiceTest {
 protected:
  // An order of `samples` "imaging" samples on tem, by `token` for themselves.
  grpc::Status PlaceOrder(const std::string& token, v1::ServiceOrder* out, const std::string& id = "",
                          const std::string& request_id = "", int samples = 2) {
    v1::CreateServiceOrderRequest r;
    r.mutable_service_order()->set_instrument("instruments/tem");
    r.mutable_service_order()->set_service_entry_id("imaging");
    r.mutable_service_order()->set_sample_count(samples);
    r.set_service_order_id(id);
    r.set_request_id(request_id);
    return Call(stub_.get(), &Stub::CreateServiceOrder, r, out, token);
  }

  // organizations/guest: a NON_MEMBER university (tem's facility admits
  // members only).
  void CreateGuestOrganization() {
    iv::CreateOrganizationRequest org;
    org.set_organization_id("guest");
    org.mutable_organization()->set_display_name("guest");
    org.mutable_organization()->set_type(iv::UNIVERSITY);
    org.mutable_organization()->set_membership_state(iv::NON_MEMBER);
    Inv(&iv::InventoryService::Stub::CreateOrganization, org);
  }

  // A quote of 100.00 per sample, valid for `validity` from now.
  grpc::Status QuoteOrder(const std::string& name, absl::Duration validity, v1::ServiceOrder* out) {
    v1::IssueQuoteRequest q;
    q.set_name(name);
    q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
    q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(10000);
    *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + validity);
    return Call(stub_.get(), &Stub::IssueQuote, q, out, staff_);
  }

  // A new order by ana, taken step by step up to `until` (at most
  // SCHEDULED: a run over [day 9:00, day 11:00)).
  v1::ServiceOrder OrderIn(v1::ServiceOrder::State until) {
    v1::ServiceOrder o;
    grpc::Status s = PlaceOrder(ana_, &o);
    for (int step = v1::ServiceOrder::QUOTED; s.ok() && step <= until; ++step) {
      switch (step) {
        case v1::ServiceOrder::QUOTED:
          s = QuoteOrder(o.name(), absl::Hours(24 * 14), &o);
          break;
        case v1::ServiceOrder::QUOTE_ACCEPTED: {
          v1::AcceptQuoteRequest a;
          a.set_name(o.name());
          a.set_quote_etag(o.quote().quote_etag());
          s = Call(stub_.get(), &Stub::AcceptQuote, a, &o, ana_);
          break;
        }
        case v1::ServiceOrder::SAMPLES_RECEIVED: {
          v1::ReceiveSamplesRequest rs;
          rs.set_name(o.name());
          rs.set_received_sample_count(o.sample_count());
          s = Call(stub_.get(), &Stub::ReceiveSamples, rs, &o, staff_);
          break;
        }
        default: {
          s = Schedule(o.name(), "", &o);
          break;
        }
      }
    }
    EXPECT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
    EXPECT_EQ(o.state(), until);
    return o;
  }

  grpc::Status Schedule(const std::string& name, const std::string& booking_id, v1::ServiceOrder* out) {
    v1::ScheduleServiceRequest sch;
    sch.set_name(name);
    *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
    *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
    sch.set_booking_id(booking_id);
    return Call(stub_.get(), &Stub::ScheduleService, sch, out, staff_);
  }

  // ana's lease of afm over [day + 1 d, day + 11 d).
  grpc::Status LeaseAfm(v1::Lease* out, const std::string& lease_id = "") {
    v1::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 11));
    r.set_lease_id(lease_id);
    return Call(stub_.get(), &Stub::RequestLease, r, out, ana_);
  }

  // LeaseAfm, approved at 3,000.00 a day (`out`: the approved lease).
  void ApprovedLeaseAfm(v1::Lease* lease, v1::Lease* out) {
    ASSERT_TRUE(LeaseAfm(lease).ok());
    v1::ApproveLeaseRequest approve;
    approve.set_name(lease->name());
    approve.mutable_contract()->set_rate_basis(v1::LeaseContract::DAILY);
    approve.mutable_contract()->mutable_rate()->set_currency_code("CNY");
    approve.mutable_contract()->mutable_rate()->set_amount_minor(300000);
    ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveLease, approve, out, staff_).ok());
  }

  void SetTemState(iv::InstrumentState state) {
    iv::SetInstrumentStateRequest st;
    st.set_name("instruments/tem");
    st.set_state(state);
    st.set_reason("vacuum pump service");
    Inv(&iv::InventoryService::Stub::SetInstrumentState, st);
  }
};

// CreateServiceOrder lists INSTRUMENT_NOT_ACTIVE: an instrument out of
// service takes no orders; a retry of an order placed before still gets its
// first answer.
TEST_F(LeaseOrderContractTest, CreateServiceOrderRefusesAnInstrumentOutOfService) {
  v1::ServiceOrder first, retry, refused;
  ASSERT_TRUE(PlaceOrder(ana_, &first, "", "order-1").ok());
  SetTemState(iv::MAINTENANCE);
  ASSERT_TRUE(PlaceOrder(ana_, &retry, "", "order-1").ok());
  EXPECT_EQ(retry.SerializeAsString(), first.SerializeAsString());
  ExpectGrpcError(PlaceOrder(ana_, &refused, "", "order-2"), grpc::StatusCode::FAILED_PRECONDITION,
                  "INSTRUMENT_NOT_ACTIVE", "ordering on tem under maintenance");
  ExpectGrpcError(PlaceOrder(ana_, &refused, "chosen-order"), grpc::StatusCode::FAILED_PRECONDITION,
                  "INSTRUMENT_NOT_ACTIVE", "ordering a chosen id on tem under maintenance");
  SetTemState(iv::ACTIVE);
  EXPECT_TRUE(PlaceOrder(ana_, &refused, "chosen-order").ok());
}

// CreateServiceOrder lists ACCESS_POLICY_FORBIDS: the facility of tem
// admits members only, so a non-member client cannot order, whoever places
// the order; the owner's own orders are always admitted.
TEST_F(LeaseOrderContractTest, CreateServiceOrderRefusesAClientTheAccessPolicyDoesNotAdmit) {
  CreateGuestOrganization();
  iv::CreateUserRequest user;
  user.set_user_id("gil");
  user.mutable_user()->set_display_name("gil");
  user.mutable_user()->set_organization("organizations/guest");
  user.mutable_user()->add_roles(labshare::type::v1::LAB_USER);
  Inv(&iv::InventoryService::Stub::CreateUser, user);
  v1::ServiceOrder o;
  ExpectGrpcError(PlaceOrder(Token("gil", "guest", {Role::kLabUser}), &o), grpc::StatusCode::FAILED_PRECONDITION,
                  "ACCESS_POLICY_FORBIDS", "a non-member ordering for itself");
  v1::CreateServiceOrderRequest r;
  r.mutable_service_order()->set_instrument("instruments/tem");
  r.mutable_service_order()->set_service_entry_id("imaging");
  r.mutable_service_order()->set_sample_count(1);
  r.mutable_service_order()->set_requester("users/gil");
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "ACCESS_POLICY_FORBIDS", "owner staff ordering for a non-member");
  r.mutable_service_order()->clear_requester();  // sam, for the owner itself
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateServiceOrder, r, &o, staff_).ok());
  EXPECT_EQ(o.client_organization(), "organizations/owner");
}

// "A role or organisation that may not call a method: PERMISSION_DENIED
// ..., checked before validation" (types.proto): a LAB_USER naming another
// organisation as lessee or client is told so even when the request is
// incomplete as well.
TEST_F(LeaseOrderContractTest, ALabUserNamingAnotherOrganisationIsRefusedBeforeValidation) {
  v1::RequestLeaseRequest lease;  // no term
  lease.mutable_lease()->set_instrument("instruments/afm");
  lease.mutable_lease()->set_lessee_organization("organizations/outsider");
  v1::Lease l;
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, lease, &l, ana_), grpc::StatusCode::PERMISSION_DENIED,
                  "ORGANIZATION_SCOPE", "ana leasing for outsider without a term");
  v1::CreateServiceOrderRequest order;  // no samples
  order.mutable_service_order()->set_instrument("instruments/tem");
  order.mutable_service_order()->set_service_entry_id("imaging");
  order.mutable_service_order()->set_client_organization("organizations/outsider");
  v1::ServiceOrder o;
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateServiceOrder, order, &o, ana_), grpc::StatusCode::PERMISSION_DENIED,
                  "ORGANIZATION_SCOPE", "ana ordering for outsider without samples");
  // Her own organisation named explicitly is fine.
  order.mutable_service_order()->set_client_organization("organizations/lab");
  order.mutable_service_order()->set_sample_count(1);
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateServiceOrder, order, &o, ana_).ok());
}

// StartService checks the run in "same window as CheckIn": it closes at the
// run's start + no_show_grace (15 min for tem), not at the run's end; the
// window is half-open, closed at exactly start + grace.
TEST_F(LeaseOrderContractTest, StartServiceClosesAfterTheNoShowGraceAsCheckInDoes) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), out;
  v1::StartServiceRequest start;
  start.set_name(o.name());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15));
  ExpectGrpcError(Call(stub_.get(), &Stub::StartService, start, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "CHECK_IN_WINDOW_CLOSED", "starting a run at the end of its grace");
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(15) - absl::Milliseconds(1));
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, start, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
}

// An instrument that stopped offering TECHNICAL_SERVICE after the run was
// scheduled: StartService still answers (the mode's rules default), it does
// not take the server down.
TEST_F(LeaseOrderContractTest, StartServiceAfterTheModeWasWithdrawnStillAnswers) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), out;
  const iv::Instrument tem = InventoryInstrument("tem");
  iv::UpdateInstrumentRequest u;
  *u.mutable_instrument() = tem;
  u.mutable_instrument()->clear_modes();
  for (const auto& m : tem.modes()) {
    if (m.mode() != labshare::type::v1::TECHNICAL_SERVICE) *u.mutable_instrument()->add_modes() = m;
  }
  ASSERT_LT(u.instrument().modes_size(), tem.modes_size());
  u.mutable_instrument()->clear_service_catalogue();  // it needs the mode
  u.mutable_update_mask()->add_paths("modes");
  u.mutable_update_mask()->add_paths("service_catalogue");
  u.set_request_id("tem-no-service");
  Inv(&iv::InventoryService::Stub::UpdateInstrument, u);
  v1::StartServiceRequest start;
  start.set_name(o.name());
  clock_.Set(day_ + absl::Hours(9));
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, start, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
}

// ... and it opens at "the later of (reserved start - the instrument's
// buffer) and the end of the previous booking's blocked interval": not
// while the booking before is still in its buffer.
TEST_F(LeaseOrderContractTest, StartServiceOpensAfterThePreviousBookingsBlockedInterval) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), out;
  v1::Booking before;  // [7:00, 8:30), blocked until 9:00 by its 30 min buffer
  ASSERT_TRUE(Book(absl::Hours(7), absl::Hours(8) + absl::Minutes(30), &before).ok());
  ASSERT_EQ(FromProto(before.blocked_interval().end_time()), day_ + absl::Hours(9));
  v1::StartServiceRequest start;
  start.set_name(o.name());
  clock_.Set(day_ + absl::Hours(8) + absl::Minutes(45));  // inside the run's own 30 min buffer
  ExpectGrpcError(Call(stub_.get(), &Stub::StartService, start, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "CHECK_IN_TOO_EARLY", "starting while the booking before is in its buffer");
  clock_.Set(day_ + absl::Hours(9));
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, start, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
}

// lease_id, service_order_id and ScheduleService's booking_id are
// "[a-z][a-z0-9-]{3,62}": a letter first, at least four characters.
TEST_F(LeaseOrderContractTest, ChosenIdsFollowTheContractPattern) {
  v1::Lease lease;
  for (const char* bad : {"abc", "9afm-lease", "-afm"}) {
    ExpectGrpcError(LeaseAfm(&lease, bad), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD",
                    std::string("lease_id ") + bad);
  }
  ASSERT_TRUE(LeaseAfm(&lease, "afmq").ok());
  EXPECT_EQ(lease.name(), "leases/afmq");
  v1::ServiceOrder o;
  for (const char* bad : {"ord", "7-order"}) {
    ExpectGrpcError(PlaceOrder(ana_, &o, bad), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD",
                    std::string("service_order_id ") + bad);
  }
  o = OrderIn(v1::ServiceOrder::SAMPLES_RECEIVED);
  v1::ServiceOrder out;
  for (const char* bad : {"run", "1run"}) {
    ExpectGrpcError(Schedule(o.name(), bad, &out), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD",
                    std::string("booking_id ") + bad);
  }
  ASSERT_TRUE(Schedule(o.name(), "run1", &out).ok());
  EXPECT_EQ(out.booking(), "bookings/run1");
}

// ReceiveSamples lists INVALID_FIELD: no samples at all, or a receive time
// still to come, is a bad field; receive_time in the past is kept.
TEST_F(LeaseOrderContractTest, ReceiveSamplesRefusesNoSamplesAndAFutureTime) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::QUOTE_ACCEPTED), out;
  v1::ReceiveSamplesRequest rs;
  rs.set_name(o.name());
  rs.set_received_sample_count(0);
  ExpectGrpcError(Call(stub_.get(), &Stub::ReceiveSamples, rs, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "no samples received");
  rs.set_received_sample_count(2);
  *rs.mutable_receive_time() = ToProto(clock_.Now() + absl::Hours(1));
  ExpectGrpcError(Call(stub_.get(), &Stub::ReceiveSamples, rs, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "samples received in an hour");
  *rs.mutable_receive_time() = ToProto(clock_.Now() - absl::Hours(1));
  ASSERT_TRUE(Call(stub_.get(), &Stub::ReceiveSamples, rs, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  EXPECT_EQ(FromProto(out.samples_receive_time()), clock_.Now() - absl::Hours(1));
}

// IssueQuote computes total = per_sample_fee * sample_count + staff_time_fee
// + consumables; each input is within the limits of types.proto, the total
// must be too: INVALID_FIELD (which the contract lists), not an overflow.
TEST_F(LeaseOrderContractTest, AQuoteWhoseTotalWouldExceedTheMoneyLimitIsAnInvalidField) {
  v1::ServiceOrder o, out;
  ASSERT_TRUE(PlaceOrder(ana_, &o, "", "", 1000000).ok());
  v1::IssueQuoteRequest q;
  q.set_name(o.name());
  q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
  q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(1'000'000'000'000'000);
  *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24));
  ExpectGrpcError(Call(stub_.get(), &Stub::IssueQuote, q, &out, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a total of 10^21 minor units");
  // The largest total there is still fits.
  q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(1'000'000'000);
  ASSERT_TRUE(Call(stub_.get(), &Stub::IssueQuote, q, &out, staff_).ok());
  EXPECT_EQ(out.quote().total().amount_minor(), 1'000'000'000'000'000);
}

// A quote "may be accepted until" valid_until: times are half-open, so at
// valid_until itself it has expired.
TEST_F(LeaseOrderContractTest, AQuoteExpiresAtItsValidUntil) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::REQUESTED), out;
  ASSERT_TRUE(QuoteOrder(o.name(), absl::Hours(1), &o).ok());
  v1::AcceptQuoteRequest a;
  a.set_name(o.name());
  a.set_quote_etag(o.quote().quote_etag());
  clock_.Set(FromProto(o.quote().valid_until()));
  ExpectGrpcError(Call(stub_.get(), &Stub::AcceptQuote, a, &out, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "QUOTE_EXPIRED", "accepting at valid_until");
  clock_.Set(FromProto(o.quote().valid_until()) - absl::Milliseconds(1));
  ASSERT_TRUE(Call(stub_.get(), &Stub::AcceptQuote, a, &out, ana_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::QUOTE_ACCEPTED);
}

// On an early return the lease term ends at the return; the lease's booking
// reserves "for LEASE the lease term", so its reserved interval ends there
// too (and stays inside its blocked interval).
TEST_F(LeaseOrderContractTest, AnEarlyReturnEndsTheBookingsReservedIntervalWithTheTerm) {
  v1::Lease lease, out;
  ApprovedLeaseAfm(&lease, &out);
  clock_.Set(day_ + absl::Hours(24));
  v1::RecordHandoverRequest handover;
  handover.set_name(lease.name());
  handover.set_condition_notes("as new");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, handover, &out, staff_).ok());
  const absl::Time returned = day_ + absl::Hours(24 * 6);
  clock_.Set(returned);
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as new");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_).ok());
  ASSERT_TRUE(out.return_record().early_return());
  EXPECT_EQ(FromProto(out.term().end_time()), returned);
  v1::GetBookingRequest g;
  g.set_name(lease.booking());
  v1::Booking b;
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &b, admin_).ok());
  EXPECT_EQ(FromProto(b.reserved_interval().start_time()), day_ + absl::Hours(24));
  EXPECT_EQ(FromProto(b.reserved_interval().end_time()), returned);
  EXPECT_EQ(FromProto(b.blocked_interval().end_time()), returned + absl::Hours(48));
  int changed = 0;
  for (const auto& e : Events()) {
    if (!e.has_booking_interval_changed()) continue;
    ++changed;
    const auto& c = e.booking_interval_changed();
    EXPECT_EQ(c.cause(), v1::BookingIntervalChanged::EARLY_RETURN);
    EXPECT_EQ(FromProto(c.previous_reserved_interval().end_time()), day_ + absl::Hours(24 * 11));
    EXPECT_EQ(FromProto(c.booking().reserved_interval().end_time()), returned);
  }
  EXPECT_EQ(changed, 1);
}

// BookingIntervalChanged announces intervals, never a state change: an
// early return's (cause EARLY_RETURN) comes in RecordReturn's step after
// the BookingCheckedOut that completes the booking, and carries the booking
// as the step left it (COMPLETED, the shorter term).
TEST_F(LeaseOrderContractTest, AnEarlyReturnsIntervalChangeFollowsItsCheckOutInOneStep) {
  v1::Lease lease, out;
  ApprovedLeaseAfm(&lease, &out);
  clock_.Set(day_ + absl::Hours(24));
  v1::RecordHandoverRequest handover;
  handover.set_name(lease.name());
  handover.set_condition_notes("as new");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, handover, &out, staff_).ok());
  clock_.Set(day_ + absl::Hours(24 * 6));
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("as new");
  ret.set_request_id("back-early");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_).ok());
  std::vector<std::string> step;
  for (const auto& e : Events()) {
    if (e.header().request_id() != "back-early") continue;
    if (e.has_lease_returned()) step.push_back("LeaseReturned");
    if (e.has_booking_checked_out()) {
      step.push_back("BookingCheckedOut");
      EXPECT_EQ(e.booking_checked_out().booking().state(), v1::Booking::COMPLETED);
    }
    if (e.has_booking_interval_changed()) {
      step.push_back("BookingIntervalChanged");
      EXPECT_EQ(e.booking_interval_changed().cause(), v1::BookingIntervalChanged::EARLY_RETURN);
      EXPECT_EQ(e.booking_interval_changed().booking().state(), v1::Booking::COMPLETED);
      EXPECT_EQ(FromProto(e.booking_interval_changed().booking().reserved_interval().end_time()),
                day_ + absl::Hours(24 * 6));
    }
  }
  EXPECT_EQ(step, (std::vector<std::string>{"LeaseReturned", "BookingCheckedOut", "BookingIntervalChanged"}));
}

// ServiceOrder.operator_user is the staff member running the scheduled run,
// "empty while no run is scheduled": unscheduling the run (CancelBooking of
// it) clears it with booking and scheduled_interval, on the order and on
// its ServiceOrderUnscheduled; scheduling again names the operator again.
TEST_F(LeaseOrderContractTest, AnUnscheduledOrderNamesNoOperator) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), got;
  EXPECT_EQ(o.operator_user(), "users/sam");
  v1::CancelBookingRequest c;
  c.set_name(o.booking());
  c.set_reason("operator ill");
  v1::Booking b;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, c, &b, staff_).ok());
  v1::GetServiceOrderRequest g;
  g.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetServiceOrder, g, &got, ana_).ok());
  EXPECT_EQ(got.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  EXPECT_TRUE(got.booking().empty());
  EXPECT_FALSE(got.has_scheduled_interval());
  EXPECT_EQ(got.operator_user(), "");
  int unscheduled = 0;
  for (const auto& e : Events()) {
    if (!e.has_service_order_unscheduled()) continue;
    ++unscheduled;
    EXPECT_EQ(e.service_order_unscheduled().service_order().operator_user(), "");
  }
  EXPECT_EQ(unscheduled, 1);
  ASSERT_TRUE(Schedule(o.name(), "run-again", &got).ok());
  EXPECT_EQ(got.operator_user(), "users/sam");
}

// A reschedule cancels the old run because "its ... service order was
// rescheduled": initiator PARENT_RESOURCE, on the booking and its event.
TEST_F(LeaseOrderContractTest, ARescheduleCancelsTheOldRunAsItsParentResource) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), out;
  const std::string first = o.booking();
  ASSERT_TRUE(Schedule(o.name(), "run-moved", &out).ok());
  EXPECT_EQ(out.booking(), "bookings/run-moved");
  v1::GetBookingRequest g;
  g.set_name(first);
  v1::Booking old;
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &old, staff_).ok());
  EXPECT_EQ(old.state(), v1::Booking::CANCELLED);
  EXPECT_EQ(old.cancellation().initiator(), v1::Booking::PARENT_RESOURCE);
  int cancelled = 0;
  for (const auto& e : Events()) {
    if (!e.has_booking_cancelled() || e.booking_cancelled().booking().name() != first) continue;
    ++cancelled;
    EXPECT_EQ(e.booking_cancelled().initiator(), v1::Booking::PARENT_RESOURCE);
  }
  EXPECT_EQ(cancelled, 1);
}

// StartService "checks in the run's booking"; CheckIn may have done so
// already ("TECHNICAL_SERVICE runs usually by StartService"): the run has
// started then, and its session is not begun a second time. A run checked
// out already is not started again either: its session stands and the order
// moves on to its report (it can no longer be cancelled).
TEST_F(LeaseOrderContractTest, StartServiceOfARunCheckedInAlreadyKeepsItsSession) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), out;
  v1::CheckInRequest in;
  in.set_name(o.booking());
  v1::Booking run;
  clock_.Set(day_ + absl::Hours(9));
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &run, staff_).ok());
  clock_.Set(day_ + absl::Hours(9) + absl::Minutes(5));
  v1::StartServiceRequest start;
  start.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, start, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
  v1::GetBookingRequest g;
  g.set_name(o.booking());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &run, staff_).ok());
  EXPECT_EQ(run.state(), v1::Booking::CHECKED_IN);
  EXPECT_EQ(FromProto(run.session().start_time()), day_ + absl::Hours(9));
  int checked_in = 0;
  for (const auto& e : Events()) {
    checked_in += e.has_booking_checked_in() && e.booking_checked_in().booking().name() == run.name();
  }
  EXPECT_EQ(checked_in, 1);

  // Checked in and out before StartService: the session stands.
  v1::ServiceOrder other = OrderIn(v1::ServiceOrder::SAMPLES_RECEIVED), moved;
  v1::ScheduleServiceRequest sch;
  sch.set_name(other.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(24 + 9));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(24 + 10));
  ASSERT_TRUE(Call(stub_.get(), &Stub::ScheduleService, sch, &moved, staff_).ok());
  clock_.Set(day_ + absl::Hours(24 + 9));
  in.set_name(moved.booking());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &run, staff_).ok());
  v1::CheckOutRequest co;
  co.set_name(moved.booking());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckOut, co, &run, staff_).ok());
  start.set_name(other.name());
  clock_.Set(day_ + absl::Hours(24 + 11));
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, start, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
  g.set_name(moved.booking());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &run, staff_).ok());
  EXPECT_EQ(run.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(run.session().start_time()), day_ + absl::Hours(24 + 9));
  EXPECT_EQ(FromProto(run.session().end_time()), day_ + absl::Hours(24 + 9));
}

// A run checked in and out before StartService "keeps its session as
// recorded: the order moves to IN_PROGRESS all the same", also once the
// instrument went out of service since (it could not be cancelled either:
// it would be stuck); a run not checked in yet still needs the instrument
// in service.
TEST_F(LeaseOrderContractTest, StartServiceOfARunDoneAlreadyIgnoresTheInstrumentsStateSince) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), out;
  v1::StartServiceRequest start;
  start.set_name(o.name());
  // Not checked in yet: starting checks the run in, on an instrument in
  // service only.
  SetTemState(iv::MAINTENANCE);
  clock_.Set(day_ + absl::Hours(9));
  ExpectGrpcError(Call(stub_.get(), &Stub::StartService, start, &out, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "INSTRUMENT_NOT_ACTIVE", "a run not checked in, instrument in maintenance");
  SetTemState(iv::ACTIVE);
  v1::CheckInRequest in;
  in.set_name(o.booking());
  v1::Booking run;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &run, staff_).ok());
  v1::CheckOutRequest co;
  co.set_name(o.booking());
  clock_.Set(day_ + absl::Hours(10));
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckOut, co, &run, staff_).ok());
  // Checked in and out, then the instrument went out of service: the order
  // still moves on (it can no longer be cancelled).
  SetTemState(iv::MAINTENANCE);
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, start, &out, staff_).ok());
  EXPECT_EQ(out.state(), v1::ServiceOrder::IN_PROGRESS);
}

// A lease handed over early (inside its handover buffer) and returned before
// its term began: the term and the booking's reserved interval end at their
// start (empty), never before it.
TEST_F(LeaseOrderContractTest, AReturnBeforeTheTermBeganLeavesAnEmptyTermNotAnInvertedOne) {
  v1::Lease lease, out;
  ApprovedLeaseAfm(&lease, &out);
  const absl::Time term_start = day_ + absl::Hours(24);
  ASSERT_GT(FromProto(out.handover_buffer()), absl::Hours(1));
  clock_.Set(term_start - absl::Hours(1));
  v1::RecordHandoverRequest handover;
  handover.set_name(lease.name());
  handover.set_condition_notes("as new");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordHandover, handover, &out, staff_).ok());
  const absl::Time returned = term_start - absl::Minutes(30);
  clock_.Set(returned);
  v1::RecordReturnRequest ret;
  ret.set_name(lease.name());
  ret.set_condition_notes("not needed after all");
  ASSERT_TRUE(Call(stub_.get(), &Stub::RecordReturn, ret, &out, staff_).ok());
  EXPECT_TRUE(out.return_record().early_return());
  EXPECT_EQ(FromProto(out.return_record().return_time()), returned);
  EXPECT_EQ(FromProto(out.term().start_time()), term_start);
  EXPECT_EQ(FromProto(out.term().end_time()), term_start);
  v1::GetBookingRequest g;
  g.set_name(lease.booking());
  v1::Booking b;
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &b, admin_).ok());
  EXPECT_EQ(FromProto(b.reserved_interval().start_time()), term_start);
  EXPECT_EQ(FromProto(b.reserved_interval().end_time()), term_start);
  EXPECT_EQ(FromProto(b.blocked_interval().end_time()), returned + FromProto(out.return_buffer()));
}

// CancelBooking: "Cancelling a TECHNICAL_SERVICE booking (owner staff, or
// CONSORTIUM_ADMIN for them) unschedules the run: the order returns to
// SAMPLES_RECEIVED; clients cancel with CancelOrder." (An administrator's
// cancellation: ServiceOrderTest.CancellingTheRunUnschedulesItsOrder.)
TEST_F(LeaseOrderContractTest, CancellingARunUnschedulesItsOrderAndIsForOwnerStaffOnly) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), got;
  const std::string run = o.booking();
  v1::CancelBookingRequest c;
  c.set_name(run);
  c.set_reason("operator ill");
  c.set_request_id("cancel-run");
  v1::Booking b;
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelBooking, c, &b, ana_), grpc::StatusCode::PERMISSION_DENIED,
                  "ORGANIZATION_SCOPE", "cancelling the run as its client");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, c, &b, staff_).ok());
  EXPECT_EQ(b.state(), v1::Booking::CANCELLED);
  EXPECT_EQ(b.cancellation().initiator(), v1::Booking::OWNER_STAFF);
  EXPECT_FALSE(b.late_cancellation());
  v1::Booking again;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, c, &again, staff_).ok());  // a retry: the same answer
  EXPECT_EQ(again.SerializeAsString(), b.SerializeAsString());
  v1::GetServiceOrderRequest g;
  g.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetServiceOrder, g, &got, ana_).ok());
  EXPECT_EQ(got.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  EXPECT_TRUE(got.booking().empty());
  int unscheduled = 0;
  for (const auto& e : Events()) {
    if (!e.has_service_order_unscheduled()) continue;
    ++unscheduled;
    EXPECT_EQ(e.service_order_unscheduled().cancelled_booking(), run);
    EXPECT_FALSE(e.service_order_unscheduled().cancelled_by_outage());
    EXPECT_EQ(e.service_order_unscheduled().service_order().state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  }
  EXPECT_EQ(unscheduled, 1);
  // The slot is free, and the order can be scheduled again.
  v1::Booking slot;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &slot).ok());
  v1::ServiceOrder moved;
  v1::ScheduleServiceRequest sch;
  sch.set_name(o.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(13));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(14));
  ASSERT_TRUE(Call(stub_.get(), &Stub::ScheduleService, sch, &moved, staff_).ok());
  EXPECT_EQ(moved.state(), v1::ServiceOrder::SCHEDULED);
  // A cancelled run is not cancelled twice (another request).
  c.set_request_id("cancel-run-2");
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelBooking, c, &b, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "BOOKING_STATE", "cancelling a cancelled run");
}


// CreateBooking held to its own comment and to types.proto's conventions
// (second audit): its LEASE path answers in CreateBooking's terms, and a
// request_id is one request whichever partition its instrument is in.
class CreateBookingContractTest : public LeaseOrderContractTest {
 protected:
  // A CreateBooking of `mode` on `instrument` by `token` over [day + from, day + to).
  static v1::CreateBookingRequest Request(const std::string& instrument, labshare::type::v1::SharingMode mode,
                                          absl::Time from, absl::Time to, const std::string& request_id,
                                          const std::string& booking_id = "") {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_instrument(instrument);
    r.mutable_booking()->set_mode(mode);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(from);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(to);
    if (mode == labshare::type::v1::LEASE) r.mutable_lease_terms();
    r.set_request_id(request_id);
    r.set_booking_id(booking_id);
    return r;
  }
  grpc::Status Create(const v1::CreateBookingRequest& r, v1::Booking* out, const std::string& token = "") {
    return Call(stub_.get(), &Stub::CreateBooking, r, out, token.empty() ? ana_ : token);
  }
  // ana's ON_SITE booking of tem over [day + from h, day + to h).
  v1::CreateBookingRequest OnSite(int from, int to, const std::string& request_id,
                                  const std::string& booking_id = "") const {
    return Request("instruments/tem", labshare::type::v1::ON_SITE, day_ + absl::Hours(from), day_ + absl::Hours(to),
                   request_id, booking_id);
  }
  // ana's LEASE of afm over [day + 1 d, day + 11 d).
  v1::CreateBookingRequest Lease(const std::string& request_id, const std::string& booking_id = "") const {
    return Request("instruments/afm", labshare::type::v1::LEASE, day_ + absl::Hours(24), day_ + absl::Hours(24 * 11),
                   request_id, booking_id);
  }
  static std::string FirstField(const grpc::Status& s) {
    const google::rpc::Status rpc = ToRpcStatus(s);
    for (const auto& any : rpc.details()) {
      google::rpc::BadRequest bad;
      if (any.UnpackTo(&bad) && bad.field_violations_size() > 0) return bad.field_violations(0).field();
    }
    return "";
  }
};

// Item 1: "ALREADY_EXISTS (BOOKING_EXISTS: booking_id taken)"; INVALID_FIELD
// and INVALID_INTERVAL name CreateBooking's fields, not RequestLease's.
TEST_F(CreateBookingContractTest, ALeaseBookingAnswersInCreateBookingsTerms) {
  v1::Booking b;
  ASSERT_TRUE(Create(OnSite(9, 10, "", "slot-a"), &b).ok());
  grpc::Status s = Create(Lease("", "slot-a"), &b);
  ExpectGrpcError(s, grpc::StatusCode::ALREADY_EXISTS, "BOOKING_EXISTS", "a lease booking of a taken booking_id");
  s = Create(Lease("taken-lease", "slot-a"), &b);
  ExpectGrpcError(s, grpc::StatusCode::ALREADY_EXISTS, "BOOKING_EXISTS", "the same, with a request_id");
  s = Create(Lease("", "Bad_Id"), &b);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "a lease booking of a malformed booking_id");
  EXPECT_EQ(FirstField(s), "booking_id");
  v1::CreateBookingRequest unset = Lease("");
  unset.mutable_booking()->clear_reserved_interval();
  s = Create(unset, &b);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_INTERVAL", "a lease booking without a term");
  EXPECT_EQ(FirstField(s), "booking.reserved_interval");
  // RequestLease keeps its own terms.
  v1::Lease l;
  ASSERT_TRUE(LeaseAfm(&l, "lease-a").ok());
  ExpectGrpcError(LeaseAfm(&l, "lease-a"), grpc::StatusCode::ALREADY_EXISTS, "LEASE_EXISTS", "RequestLease of a taken id");
}

// Item 2: "the same request_id with different content fails with
// FAILED_PRECONDITION, reason REQUEST_ID_REUSED", whichever instrument (and
// so partition) each names; a refused request leaves its request_id free.
TEST_F(CreateBookingContractTest, ARequestIdIsReusedAcrossPartitions) {
  ASSERT_NE(keys::Partition("sem"), keys::Partition("tem"));
  AddTemCopy("sem");
  v1::Booking first, b;
  ASSERT_TRUE(Create(OnSite(9, 10, "r"), &first).ok());
  v1::CreateBookingRequest other = OnSite(9, 10, "r");
  other.mutable_booking()->set_instrument("instruments/sem");
  ExpectGrpcError(Create(other, &b), grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED",
                  "the same request_id on an instrument of another partition");
  ExpectGrpcError(Create(Lease("r"), &b), grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED",
                  "the same request_id for a lease of another partition");
  ASSERT_TRUE(Create(OnSite(9, 10, "r"), &b).ok());
  EXPECT_EQ(b.SerializeAsString(), first.SerializeAsString());  // the first answer still comes back
  // A refusal (the slot is taken) keeps nothing: the request_id is free again.
  ExpectGrpcError(Create(OnSite(9, 10, "s"), &b), grpc::StatusCode::FAILED_PRECONDITION, "SLOT_TAKEN", "a taken slot");
  other.set_request_id("s");
  v1::Booking on_sem;
  ASSERT_TRUE(Create(other, &on_sem).ok());
  int created = 0;
  for (const auto& e : Events()) created += e.has_booking_created();
  EXPECT_EQ(created, 2);

  // CancelBooking of two bookings in different partitions with one request_id.
  v1::CancelBookingRequest c;
  c.set_name(first.name());
  c.set_request_id("cancel");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, c, &b, ana_).ok());
  EXPECT_EQ(b.state(), v1::Booking::CANCELLED);
  c.set_name(on_sem.name());
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelBooking, c, &b, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "REQUEST_ID_REUSED", "cancelling a booking of another partition with the same request_id");
  c.set_name(first.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelBooking, c, &b, ana_).ok());  // its retry
  EXPECT_EQ(b.state(), v1::Booking::CANCELLED);
  // A technical-service run (unscheduled with its order) likewise.
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED);
  c.set_name(on_sem.name());
  c.set_request_id("cancel-2");
  grpc::Status cancelled = Call(stub_.get(), &Stub::CancelBooking, c, &b, ana_);  // on_sem, in sem's partition
  ASSERT_TRUE(cancelled.ok()) << GrpcErrorReason(cancelled) << ": " << cancelled.error_message();
  c.set_name(o.booking());
  ExpectGrpcError(Call(stub_.get(), &Stub::CancelBooking, c, &b, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "REQUEST_ID_REUSED", "cancelling a run of another partition with the same request_id");
}

// Item 1b: a create naming its booking_id keeps its record apart from one
// whose id the request_id derives; one request_id is one request all the same.
TEST_F(CreateBookingContractTest, ARequestIdIsOneRequestWithOrWithoutABookingId) {
  v1::Booking first, b;
  ASSERT_TRUE(Create(OnSite(9, 10, "q", "slot-q"), &first).ok());
  ExpectGrpcError(Create(OnSite(12, 13, "q"), &b), grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED",
                  "the request_id of a create with a booking_id, without one");
  ASSERT_TRUE(Create(OnSite(14, 15, "p"), &first).ok());
  ExpectGrpcError(Create(OnSite(16, 17, "p", "slot-p"), &b), grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED",
                  "the request_id of a create without a booking_id, with one");
  int created = 0;
  for (const auto& e : Events()) created += e.has_booking_created();
  EXPECT_EQ(created, 2);
}


// A LEASE create retried after afm stopped offering LEASE (its check runs
// before the step reads the stored answer): "A retry with the same
// request_id and the same content returns the first answer", and the
// request_id stays that request's (review of 2026-12-04: the refused retry
// dropped the claim, and other content took the request_id in another
// partition).
TEST_F(CreateBookingContractTest, ALeaseRetryAfterTheModeWasWithdrawnAnswersTheFirstAnswer) {
  ASSERT_NE(keys::Partition("afm"), keys::Partition("tem"));
  v1::Booking first, b;
  ASSERT_TRUE(Create(Lease("lease-w"), &first).ok());
  const iv::Instrument tem = InventoryInstrument("tem");  // afm offers tem's ON_SITE instead of LEASE
  ASSERT_EQ(tem.modes(0).mode(), labshare::type::v1::ON_SITE);
  OfferModes("afm", {tem.modes(0)}, "afm-no-lease");
  ExpectGrpcError(Create(Lease("lease-x"), &b), grpc::StatusCode::FAILED_PRECONDITION, "MODE_NOT_OFFERED",
                  "a new lease request");

  grpc::Status s = Create(Lease("lease-w"), &b);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(b.SerializeAsString(), first.SerializeAsString());
  ExpectGrpcError(Create(OnSite(9, 10, "lease-w"), &b), grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED",
                  "the lease's request_id for a booking of tem (another partition)");
  // RequestLease alike.
  v1::RequestLeaseRequest lr;
  lr.mutable_lease()->set_instrument("instruments/afm");
  *lr.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 20));
  *lr.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
  lr.set_request_id("lease-rl");
  v1::Lease refused;
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, lr, &refused, ana_), grpc::StatusCode::FAILED_PRECONDITION,
                  "MODE_NOT_OFFERED", "RequestLease of a new request");
}

// The claim of a request_id is dropped on a refusal only by the call that
// made it: one an earlier attempt of the same request made (a replica
// stopped after claiming; or an acknowledged request whose retry is
// refused) is kept, so other content cannot take the request_id.
TEST_F(CreateBookingContractTest, ARefusalKeepsAClaimItDidNotMake) {
  v1::Booking b;
  ASSERT_TRUE(Create(OnSite(9, 10, ""), &b).ok());
  const v1::CreateBookingRequest refused = OnSite(9, 10, "held");  // SLOT_TAKEN
  const std::string claim = keys::RequestClaim("CreateBooking", "held");
  ASSERT_TRUE(pool_->Command({"SET", claim, RequestFingerprint("CreateBooking", refused, "users/ana"), "EX", "600"}).ok());
  ExpectGrpcError(Create(refused, &b), grpc::StatusCode::FAILED_PRECONDITION, "SLOT_TAKEN", "the retry");
  EXPECT_EQ(pool_->Command({"GET", claim})->str, RequestFingerprint("CreateBooking", refused, "users/ana"));
  ExpectGrpcError(Create(OnSite(12, 13, "held"), &b), grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED",
                  "other content with the request_id");
  // A refusal of a request that made the claim itself still frees it.
  ExpectGrpcError(Create(OnSite(9, 10, "free"), &b), grpc::StatusCode::FAILED_PRECONDITION, "SLOT_TAKEN", "a new request");
  EXPECT_TRUE(pool_->Command({"GET", keys::RequestClaim("CreateBooking", "free")})->is_nil());
}

// The run of `order` over [day + from h, day + to h) through CreateBooking.
static v1::CreateBookingRequest RunOf(const std::string& order, absl::Time from, absl::Time to,
                                      const std::string& request_id) {
  v1::CreateBookingRequest r;
  r.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
  r.mutable_booking()->set_service_order(order);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(from);
  *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(to);
  r.set_request_id(request_id);
  return r;
}

// Item 3: "A retry with the same request_id and the same content returns
// the first answer": the booking as created, not as it is now.
TEST_F(CreateBookingContractTest, ALeaseOrRunRetryReturnsTheFirstAnswer) {
  v1::Booking first, again;
  ASSERT_TRUE(Create(Lease("lease-r"), &first).ok());
  EXPECT_EQ(first.state(), v1::Booking::PENDING_APPROVAL);
  v1::ApproveLeaseRequest a;
  a.set_name(first.lease());
  a.mutable_contract()->set_rate_basis(v1::LeaseContract::DAILY);
  a.mutable_contract()->mutable_rate()->set_currency_code("CNY");
  a.mutable_contract()->mutable_rate()->set_amount_minor(300000);
  a.mutable_contract()->mutable_deposit()->set_currency_code("CNY");
  a.mutable_contract()->mutable_deposit()->set_amount_minor(100000);
  v1::Lease approved;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ApproveLease, a, &approved, staff_).ok());
  ASSERT_TRUE(Create(Lease("lease-r"), &again).ok());
  EXPECT_EQ(again.state(), v1::Booking::PENDING_APPROVAL);
  EXPECT_EQ(again.etag(), "1");
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());

  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SAMPLES_RECEIVED), moved;
  const auto run = RunOf(o.name(), day_ + absl::Hours(9), day_ + absl::Hours(11), "run-r");
  ASSERT_TRUE(Create(run, &first, staff_).ok());
  ASSERT_TRUE(Schedule(o.name(), "run-moved", &moved).ok());  // [9:00, 11:00) again, another booking
  ASSERT_TRUE(Create(run, &again, staff_).ok());
  EXPECT_EQ(again.state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
}

// CreateBookingRequest: "Settable: ... purpose" for every mode -- a
// TECHNICAL_SERVICE run keeps it too (preview, answer, document, event).
TEST_F(CreateBookingContractTest, ARunBookedThroughCreateBookingKeepsItsPurpose) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SAMPLES_RECEIVED);
  auto run = RunOf(o.name(), day_ + absl::Hours(9), day_ + absl::Hours(11), "run-purpose");
  run.mutable_booking()->set_purpose("XRD of three powders");
  run.set_validate_only(true);
  v1::Booking preview, created, stored;
  ASSERT_TRUE(Create(run, &preview, staff_).ok());
  EXPECT_EQ(preview.purpose(), "XRD of three powders");
  run.set_validate_only(false);
  ASSERT_TRUE(Create(run, &created, staff_).ok());
  EXPECT_EQ(created.purpose(), "XRD of three powders");
  v1::GetBookingRequest g;
  g.set_name(created.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetBooking, g, &stored, admin_).ok());
  EXPECT_EQ(stored.purpose(), "XRD of three powders");
  int announced = 0;
  for (const auto& e : Events()) {
    if (!e.has_booking_created() || e.booking_created().booking().name() != created.name()) continue;
    ++announced;
    EXPECT_EQ(e.booking_created().booking().purpose(), "XRD of three powders");
  }
  EXPECT_EQ(announced, 1);
}

// Item 4: TECHNICAL_SERVICE books "the run of booking.service_order (in
// SAMPLES_RECEIVED)", "ORDER_STATE: the service order is not in
// SAMPLES_RECEIVED": a scheduled order is not rescheduled by CreateBooking.
// A TECHNICAL_SERVICE create acknowledged by a version that booked the run
// through ScheduleService (its record under that method, holding the
// order), retried after the upgrade: the run, not ORDER_STATE.
TEST_F(CreateBookingContractTest, ARunRetriedAcrossTheUpgradeFindsTheOlderVersionsRecord) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SAMPLES_RECEIVED), scheduled;
  const auto run = RunOf(o.name(), day_ + absl::Hours(9), day_ + absl::Hours(11), "run-u");
  v1::ScheduleServiceRequest older;  // what that version's CreateBooking sent to ScheduleService
  older.set_name(o.name());
  *older.mutable_interval() = run.booking().reserved_interval();
  older.set_request_id("run-u");
  ASSERT_TRUE(Call(stub_.get(), &Stub::ScheduleService, older, &scheduled, staff_).ok());
  v1::Booking b;
  grpc::Status s = Create(run, &b, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(b.name(), scheduled.booking());
  EXPECT_EQ(b.service_order(), o.name());
  EXPECT_EQ(b.state(), v1::Booking::CONFIRMED);
  int created = 0;
  for (const auto& e : Events()) created += e.has_booking_created();
  EXPECT_EQ(created, 1);
  // Not a retry (other content): the order is booked already.
  ExpectGrpcError(Create(RunOf(o.name(), day_ + absl::Hours(12), day_ + absl::Hours(13), "run-v"), &b, staff_),
                  grpc::StatusCode::FAILED_PRECONDITION, "ORDER_STATE", "another run of the order");
}

TEST_F(CreateBookingContractTest, ARunIsBookedOnlyForAnOrderWithItsSamples) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SCHEDULED), got;
  v1::Booking b;
  ExpectGrpcError(Create(RunOf(o.name(), day_ + absl::Hours(13), day_ + absl::Hours(14), "run-x"), &b, staff_),
                  grpc::StatusCode::FAILED_PRECONDITION, "ORDER_STATE", "booking a run of a scheduled order");
  v1::GetServiceOrderRequest g;
  g.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetServiceOrder, g, &got, staff_).ok());
  EXPECT_EQ(got.booking(), o.booking());
  EXPECT_EQ(got.etag(), o.etag());
}

// Item 5: "With validate_only, every check runs and nothing is written; the
// returned booking has no name", for runs and leases as for the others.
TEST_F(CreateBookingContractTest, ValidateOnlyPreviewsRunsAndLeasesAsTheyWouldBeStored) {
  v1::ServiceOrder o = OrderIn(v1::ServiceOrder::SAMPLES_RECEIVED), got;
  const size_t events = Events().size();
  auto run = RunOf(o.name(), day_ + absl::Hours(9), day_ + absl::Hours(11), "");
  run.set_validate_only(true);
  v1::Booking preview;
  grpc::Status s = Create(run, &preview, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_TRUE(preview.name().empty());
  EXPECT_EQ(preview.mode(), labshare::type::v1::TECHNICAL_SERVICE);
  EXPECT_EQ(preview.state(), v1::Booking::CONFIRMED);
  EXPECT_EQ(preview.service_order(), o.name());
  EXPECT_EQ(preview.user(), "users/ana");
  EXPECT_EQ(preview.operator_user(), "users/sam");
  EXPECT_EQ(preview.payer_organization(), "organizations/lab");
  v1::GetServiceOrderRequest g;
  g.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::GetServiceOrder, g, &got, staff_).ok());
  EXPECT_EQ(got.state(), v1::ServiceOrder::SAMPLES_RECEIVED);
  EXPECT_EQ(Events().size(), events);
  // Every check: a taken slot is refused as the real request would be.
  v1::Booking taken;
  ASSERT_TRUE(Book(absl::Hours(9), absl::Hours(10), &taken).ok());
  ExpectGrpcError(Create(run, &preview, staff_), grpc::StatusCode::FAILED_PRECONDITION, "SLOT_TAKEN",
                  "previewing a run on a taken slot");

  auto lease = Lease("");
  lease.set_validate_only(true);
  ASSERT_TRUE(Create(lease, &preview).ok());
  EXPECT_TRUE(preview.name().empty());
  EXPECT_TRUE(preview.lease().empty());
  EXPECT_EQ(preview.user(), "users/ana");
  EXPECT_EQ(preview.payer_organization(), "organizations/lab");
  EXPECT_EQ(preview.instrument_owner(), "organizations/owner");
  EXPECT_EQ(preview.payer_class(), labshare::type::v1::MEMBER);
  EXPECT_EQ(preview.approval_reason(), v1::Booking::LEASE_CONTRACT);
  EXPECT_EQ(preview.state(), v1::Booking::PENDING_APPROVAL);
}

// RequestLease: "A chosen lease_id already taken (LEASE_EXISTS;
// BOOKING_EXISTS through CreateBooking) is answered before the access
// check's denials, with validate_only too", and MODE_NOT_OFFERED is one of
// those denials, in CreateBooking's order (USER_DISABLED,
// INSTRUMENT_NOT_ACTIVE, ACCESS_POLICY_FORBIDS, MODE_NOT_OFFERED), after
// the named resources (NOT_FOUND) and with metadata "denials". An
// instrument without LEASE was answered MODE_NOT_OFFERED before all of
// them, without "denials" (morning audit of 2026-12-07, finding 1).
TEST_F(CreateBookingContractTest, AnInstrumentWithoutLeaseIsRefusedInTheAccessChecksOrder) {
  // tem offers no LEASE. ana is the contact whoever asks.
  const auto lease_tem = [&](const std::string& id, bool validate_only, const std::string& token,
                             const std::string& lessee = "") {
    v1::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/tem");
    r.mutable_lease()->set_contact_user("users/ana");
    r.mutable_lease()->set_lessee_organization(lessee);
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 20));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
    r.set_lease_id(id);
    r.set_validate_only(validate_only);
    v1::Lease out;
    return Call(stub_.get(), &Stub::RequestLease, r, &out, token);
  };
  const auto book_tem = [&](const std::string& id, bool validate_only) {
    v1::CreateBookingRequest r = Request("instruments/tem", labshare::type::v1::LEASE, day_ + absl::Hours(24 * 20),
                                         day_ + absl::Hours(24 * 30), "", id);
    r.set_validate_only(validate_only);
    v1::Booking out;
    return Create(r, &out);
  };
  const auto denials = [](const grpc::Status& s) { return ErrorMetadataOf(FromGrpcStatus(s))["denials"]; };
  const auto lease_requests = [&] {
    int n = 0;
    for (const auto& e : Events()) n += e.has_lease_requested();
    return n;
  };
  v1::Lease taken;
  ASSERT_TRUE(LeaseAfm(&taken, "lease-one").ok());
  for (bool validate_only : {true, false}) {
    const std::string what = validate_only ? " (validate_only)" : "";
    ExpectGrpcError(lease_tem("lease-one", validate_only, ana_), grpc::StatusCode::ALREADY_EXISTS, "LEASE_EXISTS",
                    "RequestLease of a taken lease_id on tem" + what);
    ExpectGrpcError(book_tem("lease-one", validate_only), grpc::StatusCode::ALREADY_EXISTS, "BOOKING_EXISTS",
                    "CreateBooking LEASE of a taken booking_id on tem" + what);
    grpc::Status s = lease_tem("lease-two", validate_only, ana_);
    ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "MODE_NOT_OFFERED", "RequestLease on tem" + what);
    EXPECT_EQ(denials(s), "MODE_NOT_OFFERED") << what;
    s = book_tem("lease-two", validate_only);
    ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "MODE_NOT_OFFERED", "CreateBooking LEASE on tem" + what);
    EXPECT_EQ(denials(s), "MODE_NOT_OFFERED") << what;
  }
  // The named resources first: a lessee that does not exist (an
  // administrator may name any), also on afm with a buffer below its rules.
  ExpectGrpcError(lease_tem("", false, admin_, "organizations/nowhere"), grpc::StatusCode::NOT_FOUND,
                  "ORGANIZATION_NOT_FOUND", "an unknown lessee on tem");
  v1::RequestLeaseRequest short_buffer;
  short_buffer.mutable_lease()->set_instrument("instruments/afm");
  short_buffer.mutable_lease()->set_contact_user("users/ana");
  short_buffer.mutable_lease()->set_lessee_organization("organizations/nowhere");
  *short_buffer.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 20));
  *short_buffer.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
  *short_buffer.mutable_lease()->mutable_handover_buffer() = ToProto(absl::Hours(1));  // afm's rules: 24 h
  v1::Lease out;
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, short_buffer, &out, admin_), grpc::StatusCode::NOT_FOUND,
                  "ORGANIZATION_NOT_FOUND", "an unknown lessee on afm, buffer too short");
  short_buffer.mutable_lease()->clear_lessee_organization();
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, short_buffer, &out, admin_),
                  grpc::StatusCode::FAILED_PRECONDITION, "BUFFER_TOO_SHORT", "afm, buffer too short");
  // No lease rules, so no buffer is too short for them: the mode is what is missing.
  short_buffer.mutable_lease()->set_instrument("instruments/tem");
  ExpectGrpcError(Call(stub_.get(), &Stub::RequestLease, short_buffer, &out, admin_),
                  grpc::StatusCode::FAILED_PRECONDITION, "MODE_NOT_OFFERED", "tem, a 1 h handover buffer");

  // A lessee the facility's policy (members only) does not admit.
  CreateGuestOrganization();
  grpc::Status s = lease_tem("", false, admin_, "organizations/guest");
  ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "ACCESS_POLICY_FORBIDS", "a non-member lessee of tem");
  EXPECT_EQ(denials(s), "ACCESS_POLICY_FORBIDS,MODE_NOT_OFFERED");
  // tem out of service.
  SetTemState(iv::MAINTENANCE);
  s = lease_tem("", false, ana_);
  ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "INSTRUMENT_NOT_ACTIVE", "tem under maintenance");
  EXPECT_EQ(denials(s), "INSTRUMENT_NOT_ACTIVE,MODE_NOT_OFFERED");
  // ana's account disabled.
  iv::UpdateUserRequest u;
  u.mutable_user()->set_name("users/ana");
  u.mutable_user()->set_disabled(true);
  u.mutable_update_mask()->add_paths("disabled");
  Inv(&iv::InventoryService::Stub::UpdateUser, u);
  for (bool validate_only : {true, false}) {
    const std::string what = validate_only ? " (validate_only)" : "";
    s = lease_tem("", validate_only, ana_);
    ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "USER_DISABLED", "RequestLease by disabled ana" + what);
    EXPECT_EQ(denials(s), "USER_DISABLED,INSTRUMENT_NOT_ACTIVE,MODE_NOT_OFFERED") << what;
    s = book_tem("", validate_only);
    ExpectGrpcError(s, grpc::StatusCode::FAILED_PRECONDITION, "USER_DISABLED", "CreateBooking by disabled ana" + what);
    // The taken id still comes first.
    ExpectGrpcError(lease_tem("lease-one", validate_only, ana_), grpc::StatusCode::ALREADY_EXISTS, "LEASE_EXISTS",
                    "a taken lease_id, by disabled ana" + what);
  }
  // Only the first lease was ever requested; nothing holds the refused id.
  EXPECT_EQ(lease_requests(), 1);
  v1::GetLeaseRequest g;
  g.set_name("leases/lease-two");
  ExpectGrpcError(Call(stub_.get(), &Stub::GetLease, g, &out, admin_), grpc::StatusCode::NOT_FOUND, "LEASE_NOT_FOUND",
                  "the refused lease_id");
}

// ExtendLease: "Checked in this order once the lease is read: the etag
// (ETAG_MISMATCH), the state (LEASE_STATE), new_end_time against the
// current term end (INVALID_FIELD), MODE_NOT_OFFERED, ...": the first three
// need nothing from inventory, so inventory out of reach hides none of
// them. The instrument was read first: each answered UNAVAILABLE
// INVENTORY_UNAVAILABLE, which no retry mends (morning audit of
// 2026-12-07, finding 2).
TEST_F(LeaseOrderContractTest, ExtendLeaseAnswersTheLeasesOwnChecksWithoutInventory) {
  v1::Lease lease, approved, other, cancelled;
  ApprovedLeaseAfm(&lease, &approved);
  ASSERT_EQ(approved.etag(), "2");
  v1::RequestLeaseRequest r;
  r.mutable_lease()->set_instrument("instruments/afm");
  *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * 20));
  *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * 30));
  ASSERT_TRUE(Call(stub_.get(), &Stub::RequestLease, r, &other, ana_).ok());
  v1::CancelLeaseRequest c;
  c.set_name(other.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CancelLease, c, &cancelled, ana_).ok());
  ASSERT_EQ(cancelled.state(), v1::Lease::CANCELLED);

  const Principal admin{"admin", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(24)};
  // The fixture's inventory client keeps nothing: under CacheOnly every
  // read of inventory is INVENTORY_UNAVAILABLE, as with inventory down.
  const auto extend = [&](const std::string& name, const std::string& etag, int end_day) {
    v1::ExtendLeaseRequest e;
    e.set_name(name);
    e.set_etag(etag);
    *e.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * end_day));
    InventoryClient::CacheOnly cached;
    return manager_->ExtendLease(admin, e).status();
  };
  const auto expect = [](const absl::Status& s, absl::StatusCode code, const std::string& reason,
                         const std::string& what) {
    EXPECT_EQ(s.code(), code) << what << ": " << s;
    EXPECT_EQ(ErrorReason(s), reason) << what << ": " << s;
  };
  expect(extend(approved.name(), "1", 15), absl::StatusCode::kAborted, "ETAG_MISMATCH", "a stale etag");
  expect(extend(cancelled.name(), "", 35), absl::StatusCode::kFailedPrecondition, "LEASE_STATE", "a cancelled lease");
  expect(extend(approved.name(), "", 5), absl::StatusCode::kInvalidArgument, "INVALID_FIELD",
         "a new end before the term end");
  // The mode check is the first that needs the instrument.
  expect(extend(approved.name(), "2", 15), absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE",
         "a real extension, inventory out of reach");
  v1::ExtendLeaseRequest e;
  e.set_name(approved.name());
  e.set_etag("2");
  *e.mutable_new_end_time() = ToProto(day_ + absl::Hours(24 * 15));
  v1::Lease extended;
  grpc::Status s = Call(stub_.get(), &Stub::ExtendLease, e, &extended, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(FromProto(extended.term().end_time()), day_ + absl::Hours(24 * 15));
}

}  // namespace
}  // namespace labshare::booking
