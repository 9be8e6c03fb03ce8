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
  // Figures, assessments, matrix, reports and exports; the thresholds are
  // not secret.
  for (const char* m : {"GetUsageFigures", "QueryUsage", "ExportUsage", "ListIdleInstruments",
                        "ListUnderSharedInstruments", "GetSharingMatrix", "GetThresholds", "GetAnnualReport",
                        "ExportAnnualReportCsv"}) {
    p.Allow(M(m), {Role::kAuditor, Role::kConsortiumAdmin, Role::kMemberBillingAdmin, Role::kFacilityStaff});
  }
  p.Allow(M("UpdateThresholds"), {Role::kConsortiumAdmin});
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
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal& p) { return audit_->List(p, *req); });
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

namespace {

// A sink that writes to the stream; CANCELLED when the client went away.
template <typename Msg>
std::function<absl::Status(const Msg&)> WriterSink(grpc::ServerWriter<Msg>* writer) {
  return [writer](const Msg& m) {
    if (!writer->Write(m)) return MakeError(absl::StatusCode::kCancelled, "CLIENT_GONE", "the client went away");
    return absl::OkStatus();
  };
}

}  // namespace

grpc::Status UsageService::ExportUsage(grpc::ServerContext* ctx, const v1::ExportUsageRequest* req,
                                       grpc::ServerWriter<v1::ExportUsageResponse>* writer) {
  auto principal = auth_->Authorize(ctx);
  if (!principal.ok()) return ToGrpcStatus(principal.status(), kDomain);
  return ToGrpcStatus(figures_->ExportUsage(*principal, *req, WriterSink(writer)), kDomain);
}

grpc::Status UsageService::ExportAnnualReportCsv(grpc::ServerContext* ctx, const v1::ExportAnnualReportCsvRequest* req,
                                                 grpc::ServerWriter<v1::CsvChunk>* writer) {
  auto principal = auth_->Authorize(ctx);
  if (!principal.ok()) return ToGrpcStatus(principal.status(), kDomain);
  return ToGrpcStatus(figures_->ExportAnnualReportCsv(*principal, *req, WriterSink(writer)), kDomain);
}

absl::Status ApplyEvent(AuditChain* audit, UsageFigures* figures, absl::string_view source, const StreamEvent& e) {
  auto appended = audit->Append(source, e);
  // An event without an id cannot be keyed: it is acknowledged (and logged
  // by the caller) rather than retried forever.
  if (!appended.ok() && ErrorReason(appended.status()) != "UNDECODABLE_EVENT") return appended.status();
  return figures->Fold(source, e);
}

}  // namespace labshare::usage
