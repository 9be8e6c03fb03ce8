// Booking test fixture with the lease and service-order flows several
// booking tests walk through (booking_service_test's LeaseTest and
// ServiceOrderTest, booking_busy_reason_test).
#ifndef LABSHARE_TESTS_BOOKING_BOOKING_FLOWS_H_
#define LABSHARE_TESTS_BOOKING_BOOKING_FLOWS_H_

#include <string>

#include "tests/booking/booking_fixture.h"

namespace labshare::booking {

class BookingFlowsTest : public BookingServiceTest {
 protected:
  // A lease of afm by lab over [day + from days, day + to days).
  grpc::Status Request(int from_days, int to_days, v1::Lease* out) {
    v1::RequestLeaseRequest r;
    r.mutable_lease()->set_instrument("instruments/afm");
    *r.mutable_lease()->mutable_term()->mutable_start_time() = ToProto(day_ + absl::Hours(24 * from_days));
    *r.mutable_lease()->mutable_term()->mutable_end_time() = ToProto(day_ + absl::Hours(24 * to_days));
    r.mutable_lease()->set_purpose("surface study at our site");
    return Call(stub_.get(), &v1::BookingService::Stub::RequestLease, r, out, ana_);
  }
  // The approval of lease `name`: 3000.00 a day, deposit 1000.00.
  static v1::ApproveLeaseRequest Approval(const std::string& name, const std::string& request_id = "") {
    v1::ApproveLeaseRequest a;
    a.set_name(name);
    a.mutable_contract()->set_rate_basis(v1::LeaseContract::DAILY);
    a.mutable_contract()->mutable_rate()->set_currency_code("CNY");
    a.mutable_contract()->mutable_rate()->set_amount_minor(300000);
    a.mutable_contract()->mutable_deposit()->set_currency_code("CNY");
    a.mutable_contract()->mutable_deposit()->set_amount_minor(100000);
    a.set_request_id(request_id);
    return a;
  }
  grpc::Status Approve(const std::string& name, v1::Lease* out) {
    return Call(stub_.get(), &v1::BookingService::Stub::ApproveLease, Approval(name), out, staff_);
  }
  // The booking `name` as the consortium admin reads it.
  v1::Booking Get(const std::string& name) {
    v1::GetBookingRequest g;
    g.set_name(name);
    v1::Booking b;
    EXPECT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::GetBooking, g, &b, admin_).ok());
    return b;
  }
  v1::Booking BookingOf(const v1::Lease& l) { return Get(l.booking()); }
  v1::ServiceOrder Order3() {
    v1::CreateServiceOrderRequest r;
    r.mutable_service_order()->set_instrument("instruments/tem");
    r.mutable_service_order()->set_service_entry_id("imaging");
    r.mutable_service_order()->set_sample_count(3);
    r.mutable_service_order()->set_sample_description("membrane protein grids");
    v1::ServiceOrder o;
    auto s = Call(stub_.get(), &v1::BookingService::Stub::CreateServiceOrder, r, &o, ana_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return o;
  }
  grpc::Status Quote(const std::string& name, v1::ServiceOrder* out, const std::string& token) {
    v1::IssueQuoteRequest q;
    q.set_name(name);
    q.mutable_quote()->mutable_per_sample_fee()->set_currency_code("CNY");
    q.mutable_quote()->mutable_per_sample_fee()->set_amount_minor(20000);
    q.mutable_quote()->mutable_staff_time_fee()->set_currency_code("CNY");
    q.mutable_quote()->mutable_staff_time_fee()->set_amount_minor(30000);
    q.mutable_quote()->mutable_consumables()->set_currency_code("CNY");
    q.mutable_quote()->mutable_consumables()->set_amount_minor(5000);
    *q.mutable_quote()->mutable_valid_until() = ToProto(clock_.Now() + absl::Hours(24 * 14));
    return Call(stub_.get(), &v1::BookingService::Stub::IssueQuote, q, out, token);
  }
  // Order -> quote -> accept -> samples: in SAMPLES_RECEIVED.
  v1::ServiceOrder Received() {
    v1::ServiceOrder o = Order3(), out;
    EXPECT_TRUE(Quote(o.name(), &out, staff_).ok());
    v1::AcceptQuoteRequest a;
    a.set_name(o.name());
    a.set_quote_etag(out.quote().quote_etag());
    EXPECT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::AcceptQuote, a, &out, ana_).ok());
    v1::ReceiveSamplesRequest rs;
    rs.set_name(o.name());
    rs.set_received_sample_count(3);
    EXPECT_TRUE(Call(stub_.get(), &v1::BookingService::Stub::ReceiveSamples, rs, &out, staff_).ok());
    return out;
  }
  // Order -> quote -> accept -> samples -> scheduled run [9:00, 11:00).
  v1::ServiceOrder Scheduled() {
    v1::ServiceOrder o = Received(), out;
    v1::ScheduleServiceRequest sch;
    sch.set_name(o.name());
    *sch.mutable_interval()->mutable_start_time() = ToProto(day_ + absl::Hours(9));
    *sch.mutable_interval()->mutable_end_time() = ToProto(day_ + absl::Hours(11));
    auto s = Call(stub_.get(), &v1::BookingService::Stub::ScheduleService, sch, &out, staff_);
    EXPECT_TRUE(s.ok()) << s.error_message() << " " << GrpcErrorReason(s);
    return out;
  }
};

}  // namespace labshare::booking

#endif  // LABSHARE_TESTS_BOOKING_BOOKING_FLOWS_H_
