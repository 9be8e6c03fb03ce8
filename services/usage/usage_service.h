// gRPC adapter of the usage service and its role policy (deny by default).
#ifndef LABSHARE_SERVICES_USAGE_USAGE_SERVICE_H_
#define LABSHARE_SERVICES_USAGE_USAGE_SERVICE_H_

#include "common/auth.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "services/usage/audit_chain.h"
#include "services/usage/export_limiter.h"
#include "services/usage/usage_figures.h"

namespace labshare::usage {

const MethodPolicy& UsagePolicy();

// Consumer group of usage on every outbox.
inline constexpr char kEventsGroup[] = "usage";

// One outbox entry into the audit trail and the figures (each exactly once).
// An entry the audit cannot decode (UNDECODABLE_EVENT) is logged (a warning)
// and still folded (the figures skip what they cannot parse): OK, so the
// consumer acknowledges it. An entry naming a malformed resource (see
// DecodeEvent's rejected_names) is appended, not indexed under that name,
// and marked as seen by the figures without changing any: OK as well.
absl::Status ApplyEvent(AuditChain* audit, UsageFigures* figures, absl::string_view source, const StreamEvent& e);
// ApplyEvent for a batch of one source's outbox entries: one status per
// event, in order, each event exactly as ApplyEvent would leave it (an
// audit error other than UNDECODABLE_EVENT leaves that event unfolded), the
// audit entries chained in one step (AuditChain::AppendBatch) and the figures
// folded in as few steps (UsageFigures::FoldBatch).
std::vector<absl::Status> ApplyEvents(AuditChain* audit, UsageFigures* figures, absl::string_view source,
                                      const std::vector<StreamEvent>& events);

class UsageService final : public v1::UsageService::Service {
 public:
  UsageService(UsageFigures* figures, AuditChain* audit, const Authorizer* authorizer)
      : figures_(figures), audit_(audit), auth_(authorizer) {}
  grpc::Status ListAuditEntries(grpc::ServerContext* ctx, const v1::ListAuditEntriesRequest* req,
                                v1::ListAuditEntriesResponse* resp) override;
  grpc::Status VerifyAuditChain(grpc::ServerContext* ctx, const v1::VerifyAuditChainRequest* req,
                                v1::VerifyAuditChainResponse* resp) override;
  grpc::Status ExportAuditTrail(grpc::ServerContext* ctx, const v1::ExportAuditTrailRequest* req,
                                grpc::ServerWriter<v1::ExportAuditTrailResponse>* writer) override;
  grpc::Status ExportUsage(grpc::ServerContext* ctx, const v1::ExportUsageRequest* req,
                           grpc::ServerWriter<v1::ExportUsageResponse>* writer) override;
  grpc::Status ExportAnnualReportCsv(grpc::ServerContext* ctx, const v1::ExportAnnualReportCsvRequest* req,
                                     grpc::ServerWriter<v1::CsvChunk>* writer) override;
#define LABSHARE_USAGE_RPC(Method, Req, Resp) \
  grpc::Status Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) override;
#include "services/usage/usage_methods.inc"
#undef LABSHARE_USAGE_RPC

  // What the export streams do (tests, metrics).
  const ExportStats& export_stats() const { return stats_; }

 private:
  ExportStats stats_;
  UsageFigures* figures_;
  AuditChain* audit_;
  const Authorizer* auth_;
};

}  // namespace labshare::usage

#endif  // LABSHARE_SERVICES_USAGE_USAGE_SERVICE_H_
