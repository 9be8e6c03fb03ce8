#include "services/billing/billing_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/unary.h"

namespace labshare::billing {
namespace {

constexpr char kDomain[] = "billing.labshare";
std::string M(const char* method) { return absl::StrCat("/labshare.billing.v1.BillingService/", method); }

}  // namespace

MethodPolicy BillingPolicy() {
  MethodPolicy p;
  // Organisation scope is checked by the manager; LAB_USER has no access.
  for (const char* m : {"GetCharge", "ListCharges", "GetDeposit", "GetSubsidyPool", "ListSubsidyPools"}) {
    p.Allow(M(m), {Role::kConsortiumAdmin, Role::kAuditor, Role::kService, Role::kMemberBillingAdmin,
                   Role::kFacilityStaff});
  }
  for (const char* m : {"GetPosting", "GetAccountBalance", "PreviewInvoice", "GetInvoice", "GetSettlement"}) {
    p.Allow(M(m), {Role::kConsortiumAdmin, Role::kAuditor, Role::kService, Role::kMemberBillingAdmin});
  }
  p.Allow(M("ListDeposits"), {Role::kConsortiumAdmin, Role::kAuditor, Role::kService, Role::kMemberBillingAdmin,
                              Role::kFacilityStaff});
  for (const char* m : {"GetOrganizationStatement", "ListBalances", "ListInvoices", "ListPostings", "GetPayment",
                        "ListPayments", "ListSettlements", "GetSubsidyAllowance"}) {
    p.Allow(M(m), {Role::kConsortiumAdmin, Role::kAuditor, Role::kService, Role::kMemberBillingAdmin});
  }
  p.Allow(M("GetOwnerIncomeReport"), {Role::kConsortiumAdmin, Role::kAuditor, Role::kService,
                                      Role::kMemberBillingAdmin, Role::kFacilityStaff});
  p.Allow(M("RecordPayment"), {Role::kConsortiumAdmin, Role::kMemberBillingAdmin});
  for (const char* m : {"CreateSubsidyPool", "UpdateSubsidyPool", "TopUpSubsidyPool", "IssueInvoice",
                        "ComputeSettlement",
                        "MarkInvoicePaid", "VoidInvoice", "PostCorrection"}) {
    p.Allow(M(m), {Role::kConsortiumAdmin});
  }
  return p;
}

#define LABSHARE_BILLING_RPC(Method, Req, Resp)                                                      \
  grpc::Status BillingService::Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) { \
    return HandleUnary(*auth_, ctx, kDomain, resp,                                                    \
                       [&](const Principal& p) { return manager_->Method(p, *req); });                \
  }
#include "services/billing/billing_methods.inc"
#undef LABSHARE_BILLING_RPC

namespace {
template <typename Req, typename Resp, typename Call>
absl::StatusOr<Resp> Ask(ServiceIdentity* identity, const Req& req, Call call) {
  grpc::ClientContext ctx;
  identity->Attach(&ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  Resp resp;
  grpc::Status s = call(&ctx, req, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}
}  // namespace

absl::StatusOr<inv::LookupRateResponse> GrpcInventoryReader::LookupRate(const inv::LookupRateRequest& r) {
  return Ask<inv::LookupRateRequest, inv::LookupRateResponse>(
      identity_, r, [&](grpc::ClientContext* c, const auto& q, auto* a) { return stub_->LookupRate(c, q, a); });
}

absl::StatusOr<inv::Instrument> GrpcInventoryReader::GetInstrument(const std::string& name) {
  inv::GetInstrumentRequest r;
  r.set_name(name);
  return Ask<inv::GetInstrumentRequest, inv::Instrument>(
      identity_, r, [&](grpc::ClientContext* c, const auto& q, auto* a) { return stub_->GetInstrument(c, q, a); });
}

absl::StatusOr<inv::Organization> GrpcInventoryReader::GetOrganization(const std::string& name) {
  inv::GetOrganizationRequest r;
  r.set_name(name);
  return Ask<inv::GetOrganizationRequest, inv::Organization>(
      identity_, r, [&](grpc::ClientContext* c, const auto& q, auto* a) { return stub_->GetOrganization(c, q, a); });
}

}  // namespace labshare::billing
