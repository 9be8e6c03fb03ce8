#include "services/billing/billing_service.h"

#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/input_limits.h"
#include "common/unary.h"
#include "services/billing/billing_scope.h"

namespace labshare::billing {
namespace {

constexpr char kDomain[] = "billing.labshare";
std::string M(const char* method) { return absl::StrCat("/labshare.billing.v1.BillingService/", method); }

}  // namespace

// The contract's "Roles:" lines as one table (tests/authz checks it against
// proto/labshare/billing/v1/billing.proto). The interceptor checks the role;
// the manager checks the scope against the same table once it has loaded the
// resource. LAB_USER has no access to billing.
const MethodPolicy& BillingPolicy() {
  static const MethodPolicy* const kPolicy = [] {
    constexpr Role kStaff = Role::kFacilityStaff, kBilling = Role::kMemberBillingAdmin,
                   kAdmin = Role::kConsortiumAdmin, kAuditor = Role::kAuditor, kService = Role::kService;
    auto* p = new MethodPolicy();
    auto readers = [&](const char* m) -> MethodPolicy& { return p->Allow(M(m), {kAdmin, kAuditor, kService}); };
    for (const char* m : {"GetCharge", "ListCharges"}) {
      readers(m).Allow(M(m), {kBilling}, kScopeParty | kScopeOwner).Allow(M(m), {kStaff}, kScopeOwner);
    }
    for (const char* m : {"GetDeposit", "ListDeposits"}) {
      readers(m).Allow(M(m), {kBilling}, kScopeParty | kScopeOwner).Allow(M(m), {kStaff}, kScopeOwner);
    }
    for (const char* m : {"GetSubsidyPool", "ListSubsidyPools"}) readers(m).Allow(M(m), {kBilling, kStaff});
    for (const char* m : {"GetSubsidyAllowance", "GetPosting", "ListPostings", "GetAccountBalance", "ListBalances",
                          "GetPayment", "ListPayments", "GetInvoice", "GetInvoiceDocument", "ListInvoices",
                          "GetOrganizationStatement"}) {
      readers(m).Allow(M(m), {kBilling}, kScopeParty);
    }
    // "MEMBER_BILLING_ADMIN of the paying organisation": the one it names.
    readers("PreviewInvoice").Allow(M("PreviewInvoice"), {kBilling}, kScopePayer);
    // A settlement is shown to a billing admin reduced to its own organisation.
    for (const char* m : {"GetSettlement", "ListSettlements"}) readers(m).Allow(M(m), {kBilling});
    p->Allow(M("GetOwnerIncomeReport"), {kAdmin, kAuditor, kService})
        .Allow(M("GetOwnerIncomeReport"), {kBilling, kStaff}, kScopeOwner);
    p->Allow(M("RecordPayment"), {kAdmin}).Allow(M("RecordPayment"), {kBilling}, kScopeParty);
    for (const char* m : {"CreateSubsidyPool", "UpdateSubsidyPool", "TopUpSubsidyPool", "IssueInvoice",
                          "ComputeSettlement", "MarkInvoicePaid", "VoidInvoice", "PostCorrection"}) {
      p->Allow(M(m), {kAdmin});
    }
    return p;
  }();
  return *kPolicy;
}

absl::Status CheckScope(const char* method, const Principal& p, const ScopeFacts& facts) {
  return BillingPolicy().CheckScope(M(method), p, facts);
}

ScopeFacts ChargeFacts(const v1::Charge& c) {
  ScopeFacts facts;
  facts.parties.push_back(c.payer_organization());
  for (const auto& s : c.splits()) facts.parties.push_back(s.organization());
  facts.owners.push_back(c.owner_organization());
  return facts;
}

ScopeFacts DepositFacts(const v1::Deposit& d) { return {"", {d.lessee_organization()}, {d.owner_organization()}}; }

#define LABSHARE_BILLING_RPC(Method, Req, Resp)                                                          \
  grpc::ServerUnaryReactor* BillingService::Method(grpc::CallbackServerContext* ctx, const v1::Req* req, \
                                                   v1::Resp* resp) {                                     \
    return HandleUnaryBlocking(*auth_, ctx, kDomain, resp,                                                \
                               [this, req](const Principal& p) -> absl::StatusOr<v1::Resp> {             \
                                 LS_RETURN_IF_ERROR(CheckInputRanges(*req)); /* types.proto: first */     \
                                 return manager_->Method(p, *req);                                        \
                               },                                                                         \
                               workers_);                                                                 \
  }
#include "services/billing/billing_methods.inc"
#undef LABSHARE_BILLING_RPC

namespace {
template <typename Req, typename Resp, typename Call>
absl::StatusOr<Resp> Ask(const Req& req, Call call) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  Resp resp;
  grpc::Status s = call(&ctx, req, &resp);
  // Inventory unreachable (or its storage): billing's callers read
  // UNAVAILABLE (INVENTORY_UNAVAILABLE), as its contract lists it.
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return MakeError(absl::StatusCode::kUnavailable, "INVENTORY_UNAVAILABLE",
                     "the inventory service cannot be reached; retry the request");
  }
  if (!s.ok()) return FromGrpcStatus(s);
  return resp;
}
}  // namespace

absl::StatusOr<inv::LookupRateResponse> GrpcInventoryReader::LookupRate(const inv::LookupRateRequest& r) {
  return Ask<inv::LookupRateRequest, inv::LookupRateResponse>(
      r, [&](grpc::ClientContext* c, const auto& q, auto* a) { return stub_->LookupRate(c, q, a); });
}

absl::StatusOr<inv::Instrument> GrpcInventoryReader::GetInstrument(const std::string& name) {
  inv::GetInstrumentRequest r;
  r.set_name(name);
  return Ask<inv::GetInstrumentRequest, inv::Instrument>(
      r, [&](grpc::ClientContext* c, const auto& q, auto* a) { return stub_->GetInstrument(c, q, a); });
}

absl::StatusOr<inv::Organization> GrpcInventoryReader::GetOrganization(const std::string& name) {
  inv::GetOrganizationRequest r;
  r.set_name(name);
  return Ask<inv::GetOrganizationRequest, inv::Organization>(
      r, [&](grpc::ClientContext* c, const auto& q, auto* a) { return stub_->GetOrganization(c, q, a); });
}

}  // namespace labshare::billing
