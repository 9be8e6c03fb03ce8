// gRPC adapter of the inventory: authorize, call the manager, convert the
// status. The role policy of every method is declared in the .cc, next to
// the methods (deny by default).
#ifndef LABSHARE_SERVICES_INVENTORY_INVENTORY_SERVICE_H_
#define LABSHARE_SERVICES_INVENTORY_INVENTORY_SERVICE_H_

#include "common/auth.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "services/inventory/inventory_manager.h"

namespace labshare::inventory {

// Which roles may call which InventoryService method.
const MethodPolicy& InventoryPolicy();

class InventoryService final : public v1::InventoryService::Service {
 public:
  // manager and authorizer must outlive the service.
  InventoryService(InventoryManager* manager, const Authorizer* authorizer)
      : manager_(manager), auth_(authorizer) {}

#define LABSHARE_INVENTORY_RPC(Method, Req, Resp) \
  grpc::Status Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) override;
#include "services/inventory/inventory_methods.inc"
#undef LABSHARE_INVENTORY_RPC

 private:
  InventoryManager* manager_;
  const Authorizer* auth_;
};

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_INVENTORY_SERVICE_H_
