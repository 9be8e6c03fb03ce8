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

MethodPolicy InventoryPolicy() {
  const auto admin = {Role::kConsortiumAdmin};
  // Scope (own organisation, own instrument) is checked by the manager.
  const auto staff = {Role::kConsortiumAdmin, Role::kFacilityStaff};
  MethodPolicy p;
  for (const char* m : {"GetOrganization", "ListOrganizations", "ListMembershipChanges",
                        "GetFacility", "ListFacilities", "GetInstrument", "ListInstruments",
                        "GetRate", "ListRates", "LookupRate", "GetQualification",
                        "ListQualifications", "GetMaintenanceWindow", "ListMaintenanceWindows",
                        "GetUser", "ListUsers"}) {
    p.AllowAll(M(m));
  }
  for (const char* m : {"CreateOrganization", "UpdateOrganization", "ChangeMembership",
                        "CreateUser", "UpdateUser", "CreateFacility", "UpdateFacility",
                        "CreateRate"}) {
    p.Allow(M(m), admin);
  }
  for (const char* m : {"CreateInstrument", "UpdateInstrument", "SetInstrumentState",
                        "GrantQualification", "RevokeQualification", "CreateMaintenanceWindow",
                        "CancelMaintenanceWindow"}) {
    p.Allow(M(m), staff);
  }
  p.Allow(M("RecordQualificationUse"), {Role::kService});
  p.Allow(M("CheckAccess"), {Role::kLabUser, Role::kFacilityStaff, Role::kConsortiumAdmin,
                             Role::kAuditor, Role::kService});
  return p;
}

#define LABSHARE_INVENTORY_RPC(Method, Req, Resp)                                      \
  grpc::Status InventoryService::Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) { \
    return HandleUnary(*auth_, ctx, kDomain, resp,                                        \
                       [&](const Principal& p) -> absl::StatusOr<v1::Resp> {              \
                         LS_RETURN_IF_ERROR(CheckInputRanges(*req));  /* before arithmetic */ \
                         return manager_->Method(p, *req);                                 \
                       });                                                                \
  }
#include "services/inventory/inventory_methods.inc"
#undef LABSHARE_INVENTORY_RPC

}  // namespace labshare::inventory
