// gRPC adapter of WebhookService: authorize, check input ranges, call the
// manager (which checks the organisation scope).
#ifndef LABSHARE_SERVICES_NOTIFY_WEBHOOK_SERVICE_H_
#define LABSHARE_SERVICES_NOTIFY_WEBHOOK_SERVICE_H_

#include "common/auth.h"
#include "labshare/notify/v1/webhooks.grpc.pb.h"
#include "services/notify/webhook_manager.h"

namespace labshare::notify {

class WebhookServiceImpl final : public v1::WebhookService::Service {
 public:
  WebhookServiceImpl(WebhookManager* manager, const Authorizer* authorizer) : manager_(manager), auth_(authorizer) {}
#define LABSHARE_WEBHOOK_RPC(Method, Req, Resp) \
  grpc::Status Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) override;
#include "services/notify/webhook_methods.inc"
#undef LABSHARE_WEBHOOK_RPC

 private:
  WebhookManager* manager_;
  const Authorizer* auth_;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_WEBHOOK_SERVICE_H_
