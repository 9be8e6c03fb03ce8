// The body every unary RPC adapter shares: authorize the call, run the use
// case, convert its status. Services keep their methods about one line.
#ifndef LABSHARE_COMMON_UNARY_H_
#define LABSHARE_COMMON_UNARY_H_

#include <grpcpp/server_context.h>

#include "common/auth.h"
#include "common/grpc_status.h"

namespace labshare {

// fn(const Principal&) returns absl::StatusOr<Resp>.
template <typename Resp, typename Fn>
grpc::Status HandleUnary(const Authorizer& auth, const grpc::ServerContextBase* ctx,
                         absl::string_view domain, Resp* resp, Fn&& fn) {
  auto principal = auth.Authorize(ctx);
  if (!principal.ok()) return ToGrpcStatus(principal.status(), domain);
  auto result = fn(*principal);
  if (!result.ok()) return ToGrpcStatus(result.status(), domain);
  *resp = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace labshare

#endif  // LABSHARE_COMMON_UNARY_H_
