// Technical-service orders held to their proto comments, second read
// (proto/labshare/booking/v1/booking.proto, "technical service", and
// types.proto's conventions), where the first audit's tests
// (booking_lease_order_contract_test.cc) left a gap: a request_id across
// partitions, CancelOrder of a run already begun, the run's check-out by
// DeliverReport, and a re-quote after acceptance. Every answer also passes
// the strict error-contract check when ctest runs it
// (LABSHARE_STRICT_REASONS=1).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "tests/booking/booking_flows.h"

namespace labshare::booking {
namespace {

using Stub = v1::BookingService::Stub;
using Order = v1::ServiceOrder;

class OrderContractTest : public BookingFlowsTest {
 protected:
  static void ExpectOk(const grpc::Status& s, const std::string& what) {
    EXPECT_TRUE(s.ok()) << what << ": " << GrpcErrorReason(s) << ": " << s.error_message();
  }

  // ana's order of 2 samples on `instrument`, with `request_id`.
  grpc::Status Place(const std::string& instrument, const std::string& request_id, Order* out) {
    v1::CreateServiceOrderRequest r;
    r.mutable_service_order()->set_instrument(instrument);
    r.mutable_service_order()->set_service_entry_id("imaging");
    r.mutable_service_order()->set_sample_count(2);
    r.set_request_id(request_id);
    return Call(stub_.get(), &Stub::CreateServiceOrder, r, out, ana_);
  }
  // A quote of 150.00 per sample, valid for two weeks, with `request_id`.
  grpc::Status QuoteOf(const std::string& name, const std::string& request_id, Order* out) {
    v1::IssueQuoteRequest q;
    q.set_name(name);
    q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
    q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(15000);
    *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24 * 14));
    q.set_request_id(request_id);
    return Call(stub_.get(), &Stub::IssueQuote, q, out, staff_);
  }
  grpc::Status Accept(const Order& o, Order* out) {
    v1::AcceptQuoteRequest a;
    a.set_name(o.name());
    a.set_quote_etag(o.quote().quote_etag());
    return Call(stub_.get(), &Stub::AcceptQuote, a, out, ana_);
  }
  // A new order on `instrument` with its samples received.
  Order WithSamples(const std::string& instrument) {
    Order o;
    ExpectOk(Place(instrument, "", &o), "ordering");
    ExpectOk(QuoteOf(o.name(), "", &o), "quoting");
    ExpectOk(Accept(o, &o), "accepting the quote");
    v1::ReceiveSamplesRequest rs;
    rs.set_name(o.name());
    rs.set_received_sample_count(2);
    ExpectOk(Call(stub_.get(), &Stub::ReceiveSamples, rs, &o, staff_), "receiving the samples");
    EXPECT_EQ(o.state(), Order::SAMPLES_RECEIVED);
    return o;
  }
  grpc::Status Cancel(const std::string& name, const std::string& token, Order* out,
                      const std::string& request_id = "") {
    v1::CancelOrderRequest c;
    c.set_name(name);
    c.set_reason("no longer needed");
    c.set_request_id(request_id);
    return Call(stub_.get(), &Stub::CancelOrder, c, out, token);
  }
  v1::Booking Run(const std::string& booking) {
    v1::GetBookingRequest g;
    g.set_name(booking);
    v1::Booking b;
    ExpectOk(Call(stub_.get(), &Stub::GetBooking, g, &b, admin_), "reading the run");
    return b;
  }
  Order Get(const std::string& name) {
    v1::GetServiceOrderRequest g;
    g.set_name(name);
    Order o;
    ExpectOk(Call(stub_.get(), &Stub::GetServiceOrder, g, &o, admin_), "reading the order");
    return o;
  }
};

// types.proto: "the same request_id with different content fails with
// FAILED_PRECONDITION, reason REQUEST_ID_REUSED" — for the order mutations
// too, whichever partition each order's instrument is in (CreateBooking and
// the booking transitions claim their request_id across partitions; the
// order mutations kept it per partition and applied the second request).
TEST_F(OrderContractTest, ARequestIdIsOneRequestAcrossPartitions) {
  ASSERT_NE(keys::Partition("sem"), keys::Partition("tem"));
  AddTemCopy("sem");
  Order first, again, other;
  ASSERT_TRUE(Place("instruments/tem", "order-r", &first).ok());
  ExpectGrpcError(Place("instruments/sem", "order-r", &other), grpc::StatusCode::FAILED_PRECONDITION,
                  "REQUEST_ID_REUSED", "CreateServiceOrder on an instrument of another partition");
  ASSERT_TRUE(Place("instruments/tem", "order-r", &again).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());  // its retry: the first answer
  ASSERT_TRUE(Place("instruments/sem", "order-s", &other).ok());    // a refusal left nothing behind

  // A transition of the order alone (IssueQuote), and CancelOrder.
  Order quoted;
  ASSERT_TRUE(QuoteOf(first.name(), "quote-r", &quoted).ok());
  ExpectGrpcError(QuoteOf(other.name(), "quote-r", &again), grpc::StatusCode::FAILED_PRECONDITION,
                  "REQUEST_ID_REUSED", "IssueQuote of an order in another partition");
  EXPECT_EQ(Get(other.name()).state(), Order::REQUESTED);
  ASSERT_TRUE(QuoteOf(first.name(), "quote-r", &again).ok());
  EXPECT_EQ(again.SerializeAsString(), quoted.SerializeAsString());
  Order cancelled;
  ASSERT_TRUE(Cancel(first.name(), ana_, &cancelled, "cancel-r").ok());
  ExpectGrpcError(Cancel(other.name(), ana_, &again, "cancel-r"), grpc::StatusCode::FAILED_PRECONDITION,
                  "REQUEST_ID_REUSED", "CancelOrder of an order in another partition");
  EXPECT_EQ(Get(other.name()).state(), Order::REQUESTED);

  // ScheduleService, which books the run in the order's partition.
  const Order on_tem = WithSamples("instruments/tem"), on_sem = WithSamples("instruments/sem");
  v1::ScheduleServiceRequest sch;
  sch.set_name(on_tem.name());
  *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
  *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
  sch.set_request_id("run-r");
  Order scheduled;
  ASSERT_TRUE(Call(stub_.get(), &Stub::ScheduleService, sch, &scheduled, staff_).ok());
  sch.set_name(on_sem.name());
  ExpectGrpcError(Call(stub_.get(), &Stub::ScheduleService, sch, &again, staff_), grpc::StatusCode::FAILED_PRECONDITION,
                  "REQUEST_ID_REUSED", "ScheduleService of an order in another partition");
  EXPECT_EQ(Get(on_sem.name()).state(), Order::SAMPLES_RECEIVED);
}

// CancelOrder: "SAMPLES_RECEIVED, SCHEDULED: ... a SCHEDULED run's booking
// is cancelled"; "IN_PROGRESS ...: not cancellable". A run checked in
// already (CheckIn on the run, before StartService) has begun: the order is
// not cancellable, and its running booking is not turned CANCELLED (it was,
// with its slot taken off the calendar). A run checked out already is over:
// the order may still be cancelled, its COMPLETED booking stays as it is.
TEST_F(OrderContractTest, AnOrderWhoseRunHasBegunOrRunIsNotCancellable) {
  const Order o = Scheduled();
  clock_.Set(day_ + absl::Hours(9));
  v1::CheckInRequest in;
  in.set_name(o.booking());
  v1::Booking run;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckIn, in, &run, staff_).ok());
  Order out;
  for (const std::string* token : {&ana_, &staff_, &admin_}) {
    ExpectGrpcError(Cancel(o.name(), *token, &out), grpc::StatusCode::FAILED_PRECONDITION, "ORDER_NOT_CANCELLABLE",
                    "cancelling an order whose run is checked in");
  }
  EXPECT_EQ(Run(o.booking()).state(), v1::Booking::CHECKED_IN);
  EXPECT_EQ(Get(o.name()).state(), Order::SCHEDULED);

  // Checked out too: it has run. Still not cancellable (the owner would
  // lose the fee of a service given); StartService takes the order on to
  // its report with the session as recorded.
  clock_.Set(day_ + absl::Hours(10));
  v1::CheckOutRequest co;
  co.set_name(o.booking());
  ASSERT_TRUE(Call(stub_.get(), &Stub::CheckOut, co, &run, staff_).ok());
  for (const std::string* token : {&ana_, &staff_, &admin_}) {
    ExpectGrpcError(Cancel(o.name(), *token, &out), grpc::StatusCode::FAILED_PRECONDITION, "ORDER_NOT_CANCELLABLE",
                    "cancelling an order whose run was checked out");
  }
  v1::StartServiceRequest start;
  start.set_name(o.name());
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, start, &out, staff_).ok());
  EXPECT_EQ(out.state(), Order::IN_PROGRESS);
  v1::DeliverReportRequest d;
  d.set_name(o.name());
  d.mutable_report()->set_uri("dms://reports/run");
  ASSERT_TRUE(Call(stub_.get(), &Stub::DeliverReport, d, &out, staff_).ok());
  EXPECT_EQ(out.state(), Order::REPORT_DELIVERED);
  const v1::Booking after = Run(o.booking());
  EXPECT_EQ(after.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(after.session().end_time()), day_ + absl::Hours(10));
  int run_cancelled = 0, order_cancelled = 0;
  for (const auto& e : Events()) {
    run_cancelled += e.has_booking_cancelled() && e.booking_cancelled().booking().name() == o.booking();
    order_cancelled += e.has_service_order_cancelled();
  }
  EXPECT_EQ(run_cancelled, 0);
  EXPECT_EQ(order_cancelled, 0);
}

// DeliverReport "checks out the run's booking if it is still checked in",
// and a check-out (CheckOut) never records a session past the start of the
// next booking's blocked interval: the session ends there, end_clamped.
// DeliverReport recorded the delivery time, overlapping the next booking.
TEST_F(OrderContractTest, DeliverReportEndsTheRunAtTheNextBookingAsCheckOutDoes) {
  const Order o = Scheduled();  // run [9:00, 11:00), blocked until 11:30
  v1::Booking next;
  ASSERT_TRUE(Book(absl::Hours(11) + absl::Minutes(30), absl::Hours(13), &next).ok());
  clock_.Set(day_ + absl::Hours(9));
  v1::StartServiceRequest start;
  start.set_name(o.name());
  Order out;
  ASSERT_TRUE(Call(stub_.get(), &Stub::StartService, start, &out, staff_).ok());
  clock_.Set(day_ + absl::Hours(12));
  v1::DeliverReportRequest d;
  d.set_name(o.name());
  d.mutable_report()->set_uri("dms://reports/late");
  ASSERT_TRUE(Call(stub_.get(), &Stub::DeliverReport, d, &out, staff_).ok());
  EXPECT_EQ(out.state(), Order::REPORT_DELIVERED);
  const v1::Booking run = Run(o.booking());
  EXPECT_EQ(run.state(), v1::Booking::COMPLETED);
  EXPECT_EQ(FromProto(run.session().end_time()), day_ + absl::Hours(11) + absl::Minutes(30));
  EXPECT_TRUE(run.session().end_clamped());
  for (const auto& e : Events()) {
    if (e.has_booking_checked_out() && e.booking_checked_out().booking().name() == run.name()) {
      EXPECT_EQ(FromProto(e.booking_checked_out().booking().session().end_time()),
                day_ + absl::Hours(11) + absl::Minutes(30));
    }
  }
}

// IssueQuote: "QUOTE_ACCEPTED before samples arrive (re-quote: the client
// must accept again): -> QUOTED". The new quote is not accepted: the order
// no longer carries the earlier acceptance's quote_accept_time. A negative
// planned staff time is refused like a negative amount (INVALID_FIELD).
TEST_F(OrderContractTest, ARequoteIsNotAcceptedUntilTheClientAcceptsIt) {
  Order o;
  ASSERT_TRUE(Place("instruments/tem", "", &o).ok());
  ASSERT_TRUE(QuoteOf(o.name(), "", &o).ok());
  ASSERT_TRUE(Accept(o, &o).ok());
  ASSERT_TRUE(o.has_quote_accept_time());
  Order requoted;
  ASSERT_TRUE(QuoteOf(o.name(), "", &requoted).ok());
  EXPECT_EQ(requoted.state(), Order::QUOTED);
  EXPECT_FALSE(requoted.has_quote_accept_time());
  EXPECT_NE(requoted.quote().quote_etag(), o.quote().quote_etag());
  for (const auto& e : Events()) {
    if (e.has_service_order_quoted() && e.service_order_quoted().service_order().quote().quote_etag() ==
                                            requoted.quote().quote_etag()) {
      EXPECT_FALSE(e.service_order_quoted().service_order().has_quote_accept_time());
    }
  }
  clock_.Set(clock_.Now() + absl::Hours(1));
  Order accepted;
  ASSERT_TRUE(Accept(requoted, &accepted).ok());
  EXPECT_EQ(FromProto(accepted.quote_accept_time()), clock_.Now());

  v1::IssueQuoteRequest q;
  q.set_name(o.name());
  q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
  q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(15000);
  *q.mutable_quote()->mutable_staff_time() = ToProto(-absl::Hours(2));
  *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24));
  Order refused;
  ExpectGrpcError(Call(stub_.get(), &Stub::IssueQuote, q, &refused, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a negative staff time");
  EXPECT_EQ(Get(o.name()).state(), Order::QUOTE_ACCEPTED);
}

// types.proto: "A retry with the same request_id and the same content
// returns the first answer": also an IssueQuote retried once its
// valid_until has passed (it was refused INVALID_FIELD, valid_until in the
// past, before the stored answer was looked up). Another request is still
// held to a valid_until in the future.
TEST_F(OrderContractTest, AQuoteRetriedAfterItsValidityAnswersTheFirstAnswer) {
  Order o, first, retry;
  ASSERT_TRUE(Place("instruments/tem", "", &o).ok());
  v1::IssueQuoteRequest q;
  q.set_name(o.name());
  q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
  q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(15000);
  *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(1));
  q.set_request_id("quote-once");
  ASSERT_TRUE(Call(stub_.get(), &Stub::IssueQuote, q, &first, staff_).ok());
  clock_.Set(clock_.Now() + absl::Hours(2));
  grpc::Status s = Call(stub_.get(), &Stub::IssueQuote, q, &retry, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(retry.SerializeAsString(), first.SerializeAsString());
  q.set_request_id("quote-twice");
  ExpectGrpcError(Call(stub_.get(), &Stub::IssueQuote, q, &retry, staff_), grpc::StatusCode::INVALID_ARGUMENT,
                  "INVALID_FIELD", "a new quote valid until a time past");
}

// ServiceOrder.requested_completion_time is "the client's wish": an order
// placed without one has none (it was stored and answered as the epoch,
// 1970-01-01, in the answer, GetServiceOrder and ServiceOrderCreated); one
// given is kept.
TEST_F(OrderContractTest, AnOrderWithoutAWishedCompletionTimeLeavesItUnset) {
  Order o;
  ASSERT_TRUE(Place("instruments/tem", "", &o).ok());
  EXPECT_FALSE(o.has_requested_completion_time());
  EXPECT_FALSE(Get(o.name()).has_requested_completion_time());
  v1::CreateServiceOrderRequest r;
  r.mutable_service_order()->set_instrument("instruments/tem");
  r.mutable_service_order()->set_service_entry_id("imaging");
  r.mutable_service_order()->set_sample_count(1);
  *r.mutable_service_order()->mutable_requested_completion_time() = ToProto(day_ + absl::Hours(24 * 5));
  Order wished;
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateServiceOrder, r, &wished, ana_).ok());
  EXPECT_EQ(FromProto(wished.requested_completion_time()), day_ + absl::Hours(24 * 5));
  EXPECT_EQ(FromProto(Get(wished.name()).requested_completion_time()), day_ + absl::Hours(24 * 5));
  int created = 0;
  for (const auto& e : Events()) {
    if (!e.has_service_order_created()) continue;
    const Order& in_event = e.service_order_created().service_order();
    ++created;
    EXPECT_EQ(in_event.has_requested_completion_time(), in_event.name() == wished.name()) << in_event.name();
  }
  EXPECT_EQ(created, 2);
}

// CreateBooking: "TECHNICAL_SERVICE: only owner staff book the run ...
// anyone else, a CONSORTIUM_ADMIN included: PERMISSION_DENIED
// ROLE_NOT_ALLOWED, as ScheduleService" -- and types.proto: a role that may
// not call "checked before validation". A LAB_USER or a CONSORTIUM_ADMIN
// naming an order that does not exist heard SERVICE_ORDER_NOT_FOUND (the
// order was loaded before the role was looked at), one naming none heard
// MODE_FIELDS_MISMATCH, and one reusing the request_id of an earlier
// booking heard REQUEST_ID_REUSED.
TEST_F(OrderContractTest, OnlyOwnerStaffBookARunAndOtherRolesHearSoFirst) {
  const Order o = WithSamples("instruments/tem");
  const auto run = [&](const std::string& order, const std::string& instrument, const std::string& request_id) {
    v1::CreateBookingRequest r;
    r.mutable_booking()->set_mode(labshare::type::v1::TECHNICAL_SERVICE);
    r.mutable_booking()->set_instrument(instrument);
    r.mutable_booking()->set_service_order(order);
    *r.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
    *r.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
    r.set_request_id(request_id);
    return r;
  };
  v1::Booking b;
  for (const std::string* token : {&ana_, &admin_}) {
    for (const std::string& order : {std::string("serviceOrders/none-such"), o.name(), std::string()}) {
      for (const std::string& instrument : {std::string(), std::string("instruments/tem")}) {
        ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, run(order, instrument, ""), &b, *token),
                        grpc::StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED",
                        absl::StrCat(token == &ana_ ? "ana" : "admin", " booking the run of '", order, "' on '",
                                     instrument, "'"));
      }
    }
  }
  // ana's request_id of an ON_SITE booking, on a run: her role, not the id.
  v1::CreateBookingRequest on_site;
  on_site.mutable_booking()->set_instrument("instruments/tem");
  on_site.mutable_booking()->set_mode(labshare::type::v1::ON_SITE);
  *on_site.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(14));
  *on_site.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(15));
  on_site.set_request_id("ana-r1");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateBooking, on_site, &b, ana_).ok());
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, run(o.name(), "", "ana-r1"), &b, ana_),
                  grpc::StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED", "ana booking a run with a used request_id");
  // Owner staff: the order that does not exist is not found; theirs is booked.
  ExpectGrpcError(Call(stub_.get(), &Stub::CreateBooking, run("serviceOrders/none-such", "", ""), &b, staff_),
                  grpc::StatusCode::NOT_FOUND, "SERVICE_ORDER_NOT_FOUND", "staff booking the run of no order");
  ASSERT_TRUE(Call(stub_.get(), &Stub::CreateBooking, run(o.name(), "", ""), &b, staff_).ok());
  EXPECT_EQ(Get(o.name()).state(), Order::SCHEDULED);
}

// IssueQuoteRequest.quote: "Every amount given carries its currency
// (without one: INVALID_FIELD); staff_time_fee or consumables unset (or 0
// without a currency) are 0 in that currency."
TEST_F(OrderContractTest, AQuotesAmountsCarryTheirCurrency) {
  Order o;
  ASSERT_TRUE(Place("instruments/tem", "", &o).ok());
  v1::IssueQuoteRequest q;
  q.set_name(o.name());
  q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(15000);
  *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24));
  Order out;
  grpc::Status s = Call(stub_.get(), &Stub::IssueQuote, q, &out, staff_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "a fee without its currency");
  EXPECT_NE(s.error_message().find("quote.per_sample_fee.currency_code"), std::string::npos) << s.error_message();
  q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
  q.mutable_quote()->mutable_consumables()->set_amount_minor(500);
  s = Call(stub_.get(), &Stub::IssueQuote, q, &out, staff_);
  ExpectGrpcError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "consumables without their currency");
  EXPECT_NE(s.error_message().find("quote.consumables.currency_code"), std::string::npos) << s.error_message();
  q.mutable_quote()->mutable_consumables()->set_amount_minor(0);
  s = Call(stub_.get(), &Stub::IssueQuote, q, &out, staff_);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << ": " << s.error_message();
  EXPECT_EQ(out.quote().consumables().currency_code(), "CNY");
  EXPECT_EQ(out.quote().staff_time_fee().currency_code(), "CNY");
  EXPECT_EQ(out.quote().total().amount_minor(), 30000);
}

// The order transitions authorize as CreateBooking's run does: the role
// first (the manager's own check, the one the interceptor also makes), so
// a role a method never admits hears ROLE_NOT_ALLOWED, not
// SERVICE_ORDER_NOT_FOUND, whether the order exists or not.
TEST_F(OrderContractTest, TheManagerChecksAnOrderMethodsRoleBeforeItReadsTheOrder) {
  Order o;
  ASSERT_TRUE(Place("instruments/tem", "", &o).ok());
  const Principal admin{"admin", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  const Principal ana{"ana", "lab", {Role::kLabUser}, absl::InfiniteFuture()};
  for (const std::string& name : {std::string("serviceOrders/none-such"), o.name()}) {
    v1::IssueQuoteRequest q;
    q.set_name(name);
    absl::Status s = manager_->IssueQuote(admin, q).status();
    EXPECT_EQ(ErrorReason(s), "ROLE_NOT_ALLOWED") << "admin quoting " << name << ": " << s;
    s = manager_->IssueQuote(ana, q).status();
    EXPECT_EQ(ErrorReason(s), "ROLE_NOT_ALLOWED") << "ana quoting " << name << ": " << s;
    v1::AcceptQuoteRequest a;
    a.set_name(name);
    s = manager_->AcceptQuote(admin, a).status();
    EXPECT_EQ(ErrorReason(s), "ROLE_NOT_ALLOWED") << "admin accepting " << name << ": " << s;
    v1::StartServiceRequest start;
    start.set_name(name);
    s = manager_->StartService(admin, start).status();
    EXPECT_EQ(ErrorReason(s), "ROLE_NOT_ALLOWED") << "admin starting " << name << ": " << s;
  }
  v1::IssueQuoteRequest q;
  q.set_name("serviceOrders/none-such");
  const Principal sam{"sam", "owner", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  EXPECT_EQ(ErrorReason(manager_->IssueQuote(sam, q).status()), "SERVICE_ORDER_NOT_FOUND");
}

}  // namespace
}  // namespace labshare::booking
