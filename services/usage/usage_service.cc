#include "services/usage/usage_service.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/input_limits.h"
#include "common/log.h"
#include "common/error.h"
#include "common/unary.h"

namespace labshare::usage {
namespace {

constexpr char kDomain[] = "usage.labshare";
std::string M(const char* method) { return absl::StrCat("/labshare.usage.v1.UsageService/", method); }

}  // namespace

// The contract's "Roles:" lines as one table (tests/authz checks it against
// proto/labshare/usage/v1/usage.proto). The interceptor checks the role;
// UsageFigures checks the scope (its own organisation named in the filter)
// before it validates the rest of the request.
const MethodPolicy& UsagePolicy() {
  static const MethodPolicy* const kPolicy = [] {
    constexpr Role kStaff = Role::kFacilityStaff, kBilling = Role::kMemberBillingAdmin,
                   kAdmin = Role::kConsortiumAdmin, kAuditor = Role::kAuditor;
    auto* p = new MethodPolicy();
    for (const char* m : {"ListAuditEntries", "VerifyAuditChain", "ExportAuditTrail", "UpdateThresholds"}) {
      p->Allow(M(m), {kAdmin});
    }
    for (const char* m : {"ListAuditEntries", "VerifyAuditChain", "ExportAuditTrail"}) p->Allow(M(m), {kAuditor});
    for (const char* m : {"GetUsageFigures", "QueryUsage", "ExportUsage", "ListIdleInstruments",
                          "ListUnderSharedInstruments", "GetSharingMatrix", "GetAnnualReport",
                          "ExportAnnualReportCsv"}) {
      p->Allow(M(m), {kAuditor, kAdmin}).Allow(M(m), {kBilling, kStaff}, kScopeParty);
    }
    // The thresholds are not secret.
    p->Allow(M("GetThresholds"), {kAuditor, kAdmin, kBilling, kStaff});
    return p;
  }();
  return *kPolicy;
}

#define LABSHARE_USAGE_RPC(Method, Req, Resp)                                                    \
  grpc::Status UsageService::Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) { \
    return HandleUnary(*auth_, ctx, kDomain, resp,                                                \
                       [&](const Principal& p) -> absl::StatusOr<v1::Resp> {              \
                         LS_RETURN_IF_ERROR(CheckInputRanges(*req));  /* before arithmetic */ \
                         return figures_->Method(p, *req);                                 \
                       });                                                                \
  }
#include "services/usage/usage_methods.inc"
#undef LABSHARE_USAGE_RPC

grpc::Status UsageService::ListAuditEntries(grpc::ServerContext* ctx, const v1::ListAuditEntriesRequest* req,
                                            v1::ListAuditEntriesResponse* resp) {
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal& p) -> decltype(audit_->List(p, *req)) {
    LS_RETURN_IF_ERROR(CheckInputRanges(*req));
    return audit_->List(p, *req);
  });
}

grpc::Status UsageService::VerifyAuditChain(grpc::ServerContext* ctx, const v1::VerifyAuditChainRequest* req,
                                            v1::VerifyAuditChainResponse* resp) {
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal& p) -> decltype(audit_->Verify(*req)) {
    LS_RETURN_IF_ERROR(CheckInputRanges(*req));
    // The caller's deadline: checked per batch, so a range too long for it
    // ends with DEADLINE_EXCEEDED and records no run nobody receives.
    return figures_->VerifyAuditChain(p, *req, *audit_, absl::FromChrono(ctx->deadline()));
  });
}

namespace {

// A sink that writes to the stream. ServerWriter::Write blocks until gRPC's
// flow control lets the message out, so an export produces only as fast as
// its client reads. CANCELLED when the client went away.
template <typename Msg>
std::function<absl::Status(const Msg&)> WriterSink(grpc::ServerWriter<Msg>* writer, ExportStats* stats) {
  return [writer, stats](const Msg& m) {
    stats->WriteBegins();
    const bool ok = writer->Write(m);
    stats->WriteEnds(ok, static_cast<int64_t>(m.ByteSizeLong()));
    if (!ok) return MakeError(absl::StatusCode::kCancelled, "CLIENT_GONE", "the client went away");
    return absl::OkStatus();
  };
}

// The caller of a streaming call, then the numbers of its request
// range-checked before anything uses them (HandleUnary does both for the
// unary methods).
absl::StatusOr<Principal> AuthorizeStream(const Authorizer& auth, grpc::ServerContext* ctx,
                                          const google::protobuf::Message& req) {
  LS_ASSIGN_OR_RETURN(Principal p, auth.Authorize(ctx));
  LS_RETURN_IF_ERROR(CheckInputRanges(req));
  return p;
}

}  // namespace

grpc::Status UsageService::ExportAuditTrail(grpc::ServerContext* ctx, const v1::ExportAuditTrailRequest* req,
                                            grpc::ServerWriter<v1::ExportAuditTrailResponse>* writer) {
  auto principal = AuthorizeStream(*auth_, ctx, *req);
  if (!principal.ok()) return ToGrpcStatus(principal.status(), kDomain);
  // The slot is taken once the request is validated and its range
  // resolved (INVALID_ARGUMENT / OUT_OF_RANGE come first), before any entry
  // is read, as ExportUsage does; held until the call ends.
  std::optional<ExportSlot> slot;
  const auto write = WriterSink(writer, &stats_);
  AuditExportSummary summary;
  absl::Status s = audit_->ExportAuditTrail(
      *req,
      [&](const v1::ExportAuditTrailResponse& chunk) -> absl::Status {
        // The whole file is ready: ReportExported (EXPORT_KIND_AUDIT_TRAIL)
        // is recorded before the last message, so a stream that ends with
        // the trailer always has its event, and one whose event could not be
        // recorded ends with that error instead of the trailer.
        if (chunk.has_trailer()) {
          LS_RETURN_IF_ERROR(figures_->PublishAuditExport(*principal, summary.start_sequence,
                                                          summary.end_sequence, chunk.trailer()));
        }
        return write(chunk);
      },
      64 * 1024, &summary, [&]() -> absl::Status {
        LS_ASSIGN_OR_RETURN(ExportSlot acquired, figures_->AcquireExport(*principal));
        slot.emplace(std::move(acquired));
        return absl::OkStatus();
      });
  return ToGrpcStatus(s, kDomain);
}

grpc::Status UsageService::ExportUsage(grpc::ServerContext* ctx, const v1::ExportUsageRequest* req,
                                       grpc::ServerWriter<v1::ExportUsageResponse>* writer) {
  auto principal = AuthorizeStream(*auth_, ctx, *req);
  if (!principal.ok()) return ToGrpcStatus(principal.status(), kDomain);
  return ToGrpcStatus(figures_->ExportUsage(*principal, *req, WriterSink(writer, &stats_)), kDomain);
}

grpc::Status UsageService::ExportAnnualReportCsv(grpc::ServerContext* ctx, const v1::ExportAnnualReportCsvRequest* req,
                                                 grpc::ServerWriter<v1::CsvChunk>* writer) {
  auto principal = AuthorizeStream(*auth_, ctx, *req);
  if (!principal.ok()) return ToGrpcStatus(principal.status(), kDomain);
  return ToGrpcStatus(figures_->ExportAnnualReportCsv(*principal, *req, WriterSink(writer, &stats_)), kDomain);
}

namespace {

// An event the audit cannot decode (unknown type, bytes that do not parse,
// no EventHeader, empty event_id) can never be appended: it is logged here
// and acknowledged rather than retried forever (usage_events.proto).
bool Undecodable(const absl::Status& appended, absl::string_view source, const StreamEvent& e) {
  if (appended.ok() || ErrorReason(appended) != "UNDECODABLE_EVENT") return false;
  LogWarning("event acknowledged without an audit entry: it cannot be decoded",
             {{"source_service", std::string(source)},
              {"stream_id", e.stream_id},
              {"type", e.type.substr(0, 200)},
              {"error", std::string(appended.message())}});
  return true;
}

}  // namespace

absl::Status ApplyEvent(AuditChain* audit, UsageFigures* figures, absl::string_view source, const StreamEvent& e) {
  auto appended = audit->Append(source, e);
  if (!appended.ok() && !Undecodable(appended.status(), source, e)) return appended.status();
  return figures->Fold(source, e);
}

std::vector<absl::Status> ApplyEvents(AuditChain* audit, UsageFigures* figures, absl::string_view source,
                                      const std::vector<StreamEvent>& events) {
  std::vector<absl::Status> out(events.size());
  auto appended = audit->AppendBatch(source, events);
  std::vector<StreamEvent> to_fold;
  std::vector<size_t> index;
  to_fold.reserve(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    if (!appended[i].ok() && !Undecodable(appended[i].status(), source, events[i])) {
      out[i] = appended[i].status();
      continue;
    }
    to_fold.push_back(events[i]);
    index.push_back(i);
  }
  std::vector<absl::Status> folded = figures->FoldBatch(source, to_fold);
  for (size_t j = 0; j < index.size(); ++j) out[index[j]] = std::move(folded[j]);
  return out;
}

}  // namespace labshare::usage
