#include "services/notify/webhook_service.h"

#include "common/error.h"
#include "common/input_limits.h"
#include "common/unary.h"

namespace labshare::notify {
namespace {
constexpr char kDomain[] = "notify.labshare";
}  // namespace

#define LABSHARE_WEBHOOK_RPC(Method, Req, Resp)                                                          \
  grpc::Status WebhookServiceImpl::Method(grpc::ServerContext* ctx, const v1::Req* req, v1::Resp* resp) { \
    return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal& p) -> absl::StatusOr<v1::Resp> {  \
      LS_RETURN_IF_ERROR(CheckInputRanges(*req));                                                       \
      return manager_->Method(p, *req);                                                                 \
    });                                                                                                 \
  }
#include "services/notify/webhook_methods.inc"
#undef LABSHARE_WEBHOOK_RPC

}  // namespace labshare::notify
