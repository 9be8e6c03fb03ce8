#include "services/usage/usage_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
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

}  // namespace labshare::usage
