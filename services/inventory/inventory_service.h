// gRPC adapter of the inventory: authorize, call the manager, convert the
// status. The role policy of every method is declared in the .cc, next to
// the methods (deny by default).
#ifndef LABSHARE_SERVICES_INVENTORY_INVENTORY_SERVICE_H_
#define LABSHARE_SERVICES_INVENTORY_INVENTORY_SERVICE_H_

#include "common/auth.h"
#include "common/unary.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "services/inventory/inventory_manager.h"

namespace labshare::inventory {

// Which roles may call which InventoryService method.
const MethodPolicy& InventoryPolicy();

// On the callback API: each use case runs on the process's workers
// (common/unary.h HandleUnaryBlocking), not on a thread of its own per call.
class InventoryService final : public v1::InventoryService::CallbackService {
 public:
  // manager and authorizer must outlive the service.
  InventoryService(InventoryManager* manager, const Authorizer* authorizer)
      : manager_(manager), auth_(authorizer) {}

#define LABSHARE_INVENTORY_RPC(Method, Req, Resp)                                                    \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* ctx, const v1::Req* req, v1::Resp* resp) \
      override;
#include "services/inventory/inventory_methods.inc"
#undef LABSHARE_INVENTORY_RPC

 private:
  InventoryManager* manager_;
  const Authorizer* auth_;
  BlockingExecutor* const workers_ = ServiceWorkers("inventory");
};

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_INVENTORY_SERVICE_H_
