#include "services/booking/booking_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/input_limits.h"
#include "common/unary.h"

namespace labshare::booking {
namespace {

constexpr char kDomain[] = "booking.labshare";
std::string M(const char* method) { return absl::StrCat("/labshare.booking.v1.BookingService/", method); }

}  // namespace

// The contract's "Roles:" lines as one table (tests/authz checks it against
// proto/labshare/booking/v1/booking.proto). The interceptor checks the role;
// the manager checks the scope against the same table once it has loaded the
// resource, before it validates the rest of the request.
const MethodPolicy& BookingPolicy() {
  static const MethodPolicy* const kPolicy = [] {
    constexpr Role kUser = Role::kLabUser, kStaff = Role::kFacilityStaff, kBilling = Role::kMemberBillingAdmin,
                   kAdmin = Role::kConsortiumAdmin, kAuditor = Role::kAuditor, kService = Role::kService;
    auto* p = new MethodPolicy();
    auto readers = [&](const char* m) { p->Allow(M(m), {kAdmin, kAuditor, kService}); };
    // Bookings.
    p->Allow(M("CreateBooking"), {kUser}, kScopeSelf).Allow(M("CreateBooking"), {kStaff}, kScopeOwner)
        .Allow(M("CreateBooking"), {kAdmin});
    // FACILITY_STAFF: the owner's or operator's, and its own organisation's
    // (it pays or shares the cost): Get opens what List shows.
    for (const char* m : {"GetBooking", "ListBookings"}) {
      readers(m);
      p->Allow(M(m), {kUser}, kScopeSelf).Allow(M(m), {kBilling}, kScopeParty)
          .Allow(M(m), {kStaff}, kScopeOwner | kScopeParty);
    }
    p->Allow(M("CancelBooking"), {kUser}, kScopeSelf).Allow(M("CancelBooking"), {kBilling}, kScopePayer)
        .Allow(M("CancelBooking"), {kStaff}, kScopeOwner).Allow(M("CancelBooking"), {kAdmin});
    for (const char* m : {"ApproveBooking", "RejectBooking"}) p->Allow(M(m), {kStaff}, kScopeOwner).Allow(M(m), {kAdmin});
    for (const char* m : {"CheckIn", "CheckOut"}) {
      p->Allow(M(m), {kUser}, kScopeSelf).Allow(M(m), {kStaff}, kScopeOwner).Allow(M(m), {kService});
    }
    // Availability: other organisations' view only for the wider roles.
    for (const char* m : {"QueryAvailability", "SearchAvailableInstruments"}) {
      p->Allow(M(m), {kStaff, kAdmin, kAuditor, kService}).Allow(M(m), {kUser, kBilling}, kScopeParty);
    }
    // Leases.
    p->Allow(M("RequestLease"), {kUser}, kScopeSelf).Allow(M("RequestLease"), {kStaff}, kScopeOwner)
        .Allow(M("RequestLease"), {kAdmin});
    for (const char* m : {"GetLease", "ListLeases"}) {  // staff: also its organisation's leases
      readers(m);
      p->Allow(M(m), {kUser, kBilling}, kScopeParty).Allow(M(m), {kStaff}, kScopeOwner | kScopeParty);
    }
    for (const char* m : {"ApproveLease", "RejectLease", "RecordHandover", "RecordReturn", "ExtendLease",
                          "CloseLease"}) {
      p->Allow(M(m), {kStaff}, kScopeOwner).Allow(M(m), {kAdmin});
    }
    p->Allow(M("CancelLease"), {kUser, kBilling}, kScopeParty).Allow(M("CancelLease"), {kStaff}, kScopeOwner)
        .Allow(M("CancelLease"), {kAdmin});
    // Joint-research projects.
    for (const char* m : {"CreateProject", "UpdateProject"}) p->Allow(M(m), {kAdmin});
    for (const char* m : {"GetProject", "ListProjects"}) {
      readers(m);
      p->Allow(M(m), {kUser, kBilling}, kScopeParty).Allow(M(m), {kStaff}, kScopeOwner);
    }
    // Technical-service orders.
    p->Allow(M("CreateServiceOrder"), {kUser}, kScopeSelf).Allow(M("CreateServiceOrder"), {kStaff}, kScopeOwner)
        .Allow(M("CreateServiceOrder"), {kAdmin});
    for (const char* m : {"GetServiceOrder", "ListServiceOrders"}) {  // staff: also its organisation's orders
      readers(m);
      p->Allow(M(m), {kUser, kBilling}, kScopeParty).Allow(M(m), {kStaff}, kScopeOwner | kScopeParty);
    }
    for (const char* m : {"IssueQuote", "ReceiveSamples", "ScheduleService", "StartService", "DeliverReport"}) {
      p->Allow(M(m), {kStaff}, kScopeOwner);
    }
    for (const char* m : {"AcceptQuote", "AcceptReport", "DisputeReport"}) p->Allow(M(m), {kUser, kBilling}, kScopeParty);
    p->Allow(M("CancelOrder"), {kUser, kBilling}, kScopeParty).Allow(M("CancelOrder"), {kStaff}, kScopeOwner)
        .Allow(M("CancelOrder"), {kAdmin});
    // Quotas.
    for (const char* m : {"SetQuota", "DeleteQuota"}) p->Allow(M(m), {kAdmin});
    for (const char* m : {"ListQuotas", "GetQuotaUsage"}) {
      readers(m);
      p->Allow(M(m), {kStaff}, kScopeOwner | kScopeParty).Allow(M(m), {kUser, kBilling}, kScopeParty);
    }
    // Maintenance.
    p->Allow(M("ApplyMaintenanceWindow"), {kService, kAdmin}).Allow(M("ApplyMaintenanceWindow"), {kStaff}, kScopeOwner);
    return p;
  }();
  return *kPolicy;
}

std::string BookingMethod(const char* method) { return M(method); }

// Callback-API methods: the same authorization, input ranges and status
// conversion as the synchronous ones below.
#define LABSHARE_BOOKING_ASYNC_RPC(Method, Req, Resp, Async)                                      \
  grpc::ServerUnaryReactor* BookingService::Method(grpc::CallbackServerContext* ctx, const v1::Req* req, \
                                                   v1::Resp* resp) {                                \
    return HandleUnaryAsync(*auth_, ctx, kDomain, resp, [&](const Principal& p, UnaryDone<v1::Resp> done) { \
      if (absl::Status range = CheckInputRanges(*req); !range.ok()) return done(range);             \
      manager_->Async(p, *req, std::move(done));                                                    \
    });                                                                                             \
  }
LABSHARE_BOOKING_ASYNC_RPC(CreateBooking, CreateBookingRequest, Booking, CreateBookingAsync)
LABSHARE_BOOKING_ASYNC_RPC(GetBooking, GetBookingRequest, Booking, GetBookingAsync)
LABSHARE_BOOKING_ASYNC_RPC(SearchAvailableInstruments, SearchAvailableInstrumentsRequest,
                           SearchAvailableInstrumentsResponse, SearchAvailableInstrumentsAsync)
#undef LABSHARE_BOOKING_ASYNC_RPC

// Built in place on the call's arena: 50 bookings a page, about 56 busy
// intervals for a week.
#define LABSHARE_BOOKING_IN_PLACE_RPC(Method, Req, Resp)                                           \
  grpc::ServerUnaryReactor* BookingService::Method(grpc::CallbackServerContext* ctx, const v1::Req* req, \
                                                   v1::Resp* resp) {                                \
    return HandleUnaryAsyncInPlace(*auth_, ctx, kDomain, [&](const Principal& p, StatusDone done) { \
      if (absl::Status range = CheckInputRanges(*req); !range.ok()) return done(range);            \
      manager_->Method##Async(p, *req, resp, std::move(done));                                     \
    });                                                                                            \
  }
LABSHARE_BOOKING_IN_PLACE_RPC(ListBookings, ListBookingsRequest, ListBookingsResponse)
LABSHARE_BOOKING_IN_PLACE_RPC(QueryAvailability, QueryAvailabilityRequest, QueryAvailabilityResponse)
#undef LABSHARE_BOOKING_IN_PLACE_RPC

#define LABSHARE_BOOKING_RPC(Method, Req, Resp)                                                          \
  grpc::ServerUnaryReactor* BookingService::Method(grpc::CallbackServerContext* ctx, const v1::Req* req, \
                                                   v1::Resp* resp) {                                     \
    return HandleUnaryBlocking(*auth_, ctx, kDomain, resp,                                                \
                               [this, req](const Principal& p) -> absl::StatusOr<v1::Resp> {             \
                                 LS_RETURN_IF_ERROR(CheckInputRanges(*req)); /* before arithmetic */      \
                                 return manager_->Method(p, *req);                                        \
                               },                                                                         \
                               workers_);                                                                 \
  }
#include "services/booking/booking_methods.inc"
#undef LABSHARE_BOOKING_RPC

}  // namespace labshare::booking
