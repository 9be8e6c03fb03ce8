// gRPC adapter of the billing service, its role policy (deny by default),
// the inventory reader over gRPC and the booking-event handler. Methods not
// built yet fall through to the generated base class (UNIMPLEMENTED).
#ifndef LABSHARE_SERVICES_BILLING_BILLING_SERVICE_H_
#define LABSHARE_SERVICES_BILLING_BILLING_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <memory>

#include "common/auth.h"
#include "common/events.h"
#include "common/unary.h"
#include "labshare/billing/v1/billing.grpc.pb.h"
#include "services/billing/billing_manager.h"

namespace labshare::billing {

const MethodPolicy& BillingPolicy();

// Consumer group of billing on the booking outboxes.
inline constexpr char kBookingEventsGroup[] = "billing";

// On the callback API: each use case runs on the process's workers
// (common/unary.h HandleUnaryBlocking; it blocks on Redis and inventory),
// not on a thread of its own per call.
class BillingService final : public v1::BillingService::CallbackService {
 public:
  BillingService(BillingManager* manager, const Authorizer* authorizer) : manager_(manager), auth_(authorizer) {}
#define LABSHARE_BILLING_RPC(Method, Req, Resp)                                                   \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* ctx, const v1::Req* req, v1::Resp* resp) \
      override;
#include "services/billing/billing_methods.inc"
#undef LABSHARE_BILLING_RPC

 private:
  BillingManager* manager_;
  const Authorizer* auth_;
  BlockingExecutor* const workers_ = ServiceWorkers("billing");
};

// Reads inventory over gRPC; the channel proves billing's identity (its
// client certificate), calls carry no bearer token.
class GrpcInventoryReader final : public InventoryReader {
 public:
  explicit GrpcInventoryReader(std::shared_ptr<grpc::Channel> channel)
      : stub_(inv::InventoryService::NewStub(channel)) {}
  absl::StatusOr<inv::LookupRateResponse> LookupRate(const inv::LookupRateRequest& r) override;
  absl::StatusOr<inv::Instrument> GetInstrument(const std::string& name) override;
  absl::StatusOr<inv::Organization> GetOrganization(const std::string& name) override;

 private:
  std::unique_ptr<inv::InventoryService::Stub> stub_;
};

}  // namespace labshare::billing

#endif  // LABSHARE_SERVICES_BILLING_BILLING_SERVICE_H_
