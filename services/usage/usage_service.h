// gRPC adapter of the usage service and its role policy (deny by default).
// Methods not built yet fall through to the generated base class
// (UNIMPLEMENTED).
#ifndef LABSHARE_SERVICES_USAGE_USAGE_SERVICE_H_
#define LABSHARE_SERVICES_USAGE_USAGE_SERVICE_H_

#include "common/auth.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "services/usage/usage_figures.h"

namespace labshare::usage {

MethodPolicy UsagePolicy();

// Consumer group of usage on every outbox.
inline constexpr char kEventsGroup[] = "usage";

class UsageService final : public v1::UsageService::Service {
 public:
  UsageService(UsageFigures* figures, const Authorizer* authorizer) : figures_(figures), auth_(authorizer) {}
#define LABSHARE_USAGE_RPC(Method, Req, Resp) \
  grpc::Status Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) override;
#include "services/usage/usage_methods.inc"
#undef LABSHARE_USAGE_RPC

 private:
  UsageFigures* figures_;
  const Authorizer* auth_;
};

}  // namespace labshare::usage

#endif  // LABSHARE_SERVICES_USAGE_USAGE_SERVICE_H_
