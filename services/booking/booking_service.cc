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

MethodPolicy BookingPolicy() {
  MethodPolicy p;
  // Scope (own booking, own organisation, own instrument) is checked by the manager.
  for (const char* m : {"GetBooking", "ListBookings", "QueryAvailability", "SearchAvailableInstruments",
                        "GetProject", "ListProjects"}) {
    p.AllowAll(M(m));
  }
  for (const char* m : {"CreateProject", "UpdateProject"}) p.Allow(M(m), {Role::kConsortiumAdmin});
  for (const char* m : {"GetLease", "ListLeases", "GetServiceOrder", "ListServiceOrders"}) p.AllowAll(M(m));
  p.Allow(M("CreateServiceOrder"), {Role::kLabUser, Role::kMemberBillingAdmin, Role::kFacilityStaff, Role::kConsortiumAdmin});
  for (const char* m : {"AcceptQuote", "AcceptReport", "DisputeReport"}) {
    p.Allow(M(m), {Role::kLabUser, Role::kMemberBillingAdmin});
  }
  for (const char* m : {"IssueQuote", "ReceiveSamples", "ScheduleService", "StartService", "DeliverReport"}) {
    p.Allow(M(m), {Role::kFacilityStaff});
  }
  p.Allow(M("CancelOrder"), {Role::kLabUser, Role::kMemberBillingAdmin, Role::kFacilityStaff, Role::kConsortiumAdmin});
  p.Allow(M("RequestLease"), {Role::kLabUser, Role::kMemberBillingAdmin, Role::kFacilityStaff, Role::kConsortiumAdmin});
  p.Allow(M("CancelLease"), {Role::kLabUser, Role::kMemberBillingAdmin, Role::kFacilityStaff, Role::kConsortiumAdmin});
  for (const char* m : {"ApproveLease", "RejectLease", "RecordHandover", "RecordReturn", "ExtendLease", "CloseLease"}) {
    p.Allow(M(m), {Role::kFacilityStaff, Role::kConsortiumAdmin});
  }
  p.Allow(M("CreateBooking"), {Role::kLabUser, Role::kFacilityStaff, Role::kConsortiumAdmin});
  p.Allow(M("CancelBooking"), {Role::kLabUser, Role::kMemberBillingAdmin, Role::kFacilityStaff,
                               Role::kConsortiumAdmin});
  for (const char* m : {"ApproveBooking", "RejectBooking"}) {
    p.Allow(M(m), {Role::kFacilityStaff, Role::kConsortiumAdmin});
  }
  for (const char* m : {"CheckIn", "CheckOut"}) {
    p.Allow(M(m), {Role::kLabUser, Role::kFacilityStaff, Role::kService});
  }
  for (const char* m : {"SetQuota", "DeleteQuota"}) p.Allow(M(m), {Role::kConsortiumAdmin});
  for (const char* m : {"ListQuotas", "GetQuotaUsage"}) {
    p.Allow(M(m), {Role::kConsortiumAdmin, Role::kAuditor, Role::kService, Role::kFacilityStaff, Role::kLabUser,
                   Role::kMemberBillingAdmin});
  }
  p.Allow(M("ApplyMaintenanceWindow"), {Role::kService, Role::kConsortiumAdmin, Role::kFacilityStaff});
  return p;
}

grpc::ServerUnaryReactor* BookingService::CreateBooking(grpc::CallbackServerContext* ctx,
                                                        const v1::CreateBookingRequest* req,
                                                        v1::Booking* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto principal = auth_->Authorize(ctx);
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status(), kDomain));
    return reactor;
  }
  if (absl::Status range = CheckInputRanges(*req); !range.ok()) {
    reactor->Finish(ToGrpcStatus(range, kDomain));
    return reactor;
  }
  manager_->CreateBookingAsync(*principal, *req, [reactor, resp](absl::StatusOr<v1::Booking> result) {
    if (!result.ok()) return reactor->Finish(ToGrpcStatus(result.status(), kDomain));
    *resp = *std::move(result);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

#define LABSHARE_BOOKING_RPC(Method, Req, Resp)                                      \
  grpc::Status BookingService::Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) { \
    return HandleUnary(*auth_, ctx, kDomain, resp,                                        \
                       [&](const Principal& p) -> absl::StatusOr<v1::Resp> {              \
                         LS_RETURN_IF_ERROR(CheckInputRanges(*req));  /* before arithmetic */ \
                         return manager_->Method(p, *req);                                 \
                       });                                                                \
  }
#include "services/booking/booking_methods.inc"
#undef LABSHARE_BOOKING_RPC

}  // namespace labshare::booking
