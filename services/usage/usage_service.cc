#include "services/usage/usage_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/error.h"
#include "common/unary.h"

namespace labshare::usage {
namespace {

constexpr char kDomain[] = "usage.labshare";
std::string M(const char* method) { return absl::StrCat("/labshare.usage.v1.UsageService/", method); }

}  // namespace

MethodPolicy UsagePolicy() {
  MethodPolicy p;
  // Organisation scope (own organisation named in the filter) is checked by
  // UsageFigures.
  for (const char* m : {"ListAuditEntries", "VerifyAuditChain", "ExportAuditTrail"}) {
    p.Allow(M(m), {Role::kAuditor, Role::kConsortiumAdmin});
  }
  for (const char* m : {"GetUsageFigures", "QueryUsage"}) {
    p.Allow(M(m), {Role::kAuditor, Role::kConsortiumAdmin, Role::kMemberBillingAdmin, Role::kFacilityStaff});
  }
  return p;
}

#define LABSHARE_USAGE_RPC(Method, Req, Resp)                                                    \
  grpc::Status UsageService::Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) { \
    return HandleUnary(*auth_, ctx, kDomain, resp,                                                \
                       [&](const Principal& p) { return figures_->Method(p, *req); });            \
  }
#include "services/usage/usage_methods.inc"
#undef LABSHARE_USAGE_RPC

grpc::Status UsageService::ListAuditEntries(grpc::ServerContext* ctx, const v1::ListAuditEntriesRequest* req,
                                            v1::ListAuditEntriesResponse* resp) {
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal&) { return audit_->List(*req); });
}

grpc::Status UsageService::VerifyAuditChain(grpc::ServerContext* ctx, const v1::VerifyAuditChainRequest* req,
                                            v1::VerifyAuditChainResponse* resp) {
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal&) { return audit_->Verify(*req); });
}

grpc::Status UsageService::ExportAuditTrail(grpc::ServerContext* ctx, const v1::ExportAuditTrailRequest* req,
                                            grpc::ServerWriter<v1::ExportAuditTrailResponse>* writer) {
  auto principal = auth_->Authorize(ctx);
  if (!principal.ok()) return ToGrpcStatus(principal.status(), kDomain);
  absl::Status s = audit_->ExportAuditTrail(*req, [&](const v1::ExportAuditTrailResponse& chunk) {
    if (!writer->Write(chunk)) return MakeError(absl::StatusCode::kCancelled, "CLIENT_GONE", "the client went away");
    return absl::OkStatus();
  });
  return ToGrpcStatus(s, kDomain);
}

absl::Status ApplyEvent(AuditChain* audit, UsageFigures* figures, absl::string_view source, const StreamEvent& e) {
  auto appended = audit->Append(source, e);
  // An event without an id cannot be keyed: it is acknowledged (and logged
  // by the caller) rather than retried forever.
  if (!appended.ok() && ErrorReason(appended.status()) != "UNDECODABLE_EVENT") return appended.status();
  return figures->Fold(source, e);
}

}  // namespace labshare::usage
