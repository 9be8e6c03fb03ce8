#include "services/inventory/inventory_service.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/input_limits.h"
#include "common/unary.h"

namespace labshare::inventory {
namespace {

constexpr char kDomain[] = "inventory.labshare";
constexpr char kPrefix[] = "/labshare.inventory.v1.InventoryService/";

std::string M(const char* method) { return absl::StrCat(kPrefix, method); }

}  // namespace

// The contract's "Roles:" lines as one table (tests/authz checks it against
// proto/labshare/inventory/v1/inventory.proto). The interceptor checks the
// role; the manager checks the scope (own organisation, own instrument).
const MethodPolicy& InventoryPolicy() {
  static const MethodPolicy* const kPolicy = [] {
    constexpr Role kUser = Role::kLabUser, kStaff = Role::kFacilityStaff, kBilling = Role::kMemberBillingAdmin,
                   kAdmin = Role::kConsortiumAdmin, kAuditor = Role::kAuditor, kService = Role::kService;
    auto* p = new MethodPolicy();
    for (const char* m : {"GetOrganization", "ListOrganizations", "ListMembershipChanges", "GetFacility",
                          "ListFacilities", "GetInstrument", "ListInstruments", "GetRate", "ListRates",
                          "LookupRate", "GetQualification", "ListQualifications", "GetMaintenanceWindow",
                          "ListMaintenanceWindows"}) {
      p->AllowAll(M(m));
    }
    for (const char* m : {"GetUser", "ListUsers"}) {
      p->Allow(M(m), {kAdmin, kAuditor, kService}).Allow(M(m), {kUser, kStaff, kBilling}, kScopeParty);
    }
    p->Allow(M("UpdateOrganization"), {kAdmin}).Allow(M("UpdateOrganization"), {kBilling}, kScopeParty);
    for (const char* m : {"CreateOrganization", "ChangeMembership", "CreateUser",
                          "UpdateUser", "CreateFacility", "UpdateFacility", "CreateRate"}) {
      p->Allow(M(m), {kAdmin});
    }
    for (const char* m : {"CreateInstrument", "UpdateInstrument", "SetInstrumentState", "GrantQualification",
                          "RevokeQualification", "CreateMaintenanceWindow", "CancelMaintenanceWindow"}) {
      p->Allow(M(m), {kAdmin}).Allow(M(m), {kStaff}, kScopeOwner);
    }
    p->Allow(M("RecordQualificationUse"), {kService});
    p->Allow(M("CheckAccess"), {kUser}, kScopeSelf).Allow(M("CheckAccess"), {kStaff, kAdmin, kAuditor, kService});
    return p;
  }();
  return *kPolicy;
}

#define LABSHARE_INVENTORY_RPC(Method, Req, Resp)                                                          \
  grpc::ServerUnaryReactor* InventoryService::Method(grpc::CallbackServerContext* ctx, const v1::Req* req, \
                                                     v1::Resp* resp) {                                     \
    return HandleUnaryBlocking(*auth_, ctx, kDomain, resp,                                                  \
                               [this, req](const Principal& p) -> absl::StatusOr<v1::Resp> {               \
                                 LS_RETURN_IF_ERROR(CheckInputRanges(*req)); /* before arithmetic */        \
                                 return manager_->Method(p, *req);                                          \
                               },                                                                           \
                               workers_);                                                                   \
  }
#include "services/inventory/inventory_methods.inc"
#undef LABSHARE_INVENTORY_RPC

}  // namespace labshare::inventory
