// The body every unary RPC adapter shares: authorize the call, run the use
// case, convert its status. Services keep their methods about one line.
//
// Two forms with the same behaviour: HandleUnary for the synchronous API,
// HandleUnaryAsync for the callback API (no thread waits: the use case
// answers through a callback, typically from a RedisPipeline thread). Both
// run inside the same server interceptor (common/server.cc: token and role
// check, trace id, metrics, access log), and both convert statuses with
// ToGrpcStatus (reason, ErrorInfo, retry delay).
#ifndef LABSHARE_COMMON_UNARY_H_
#define LABSHARE_COMMON_UNARY_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/message_allocator.h>
#include <grpcpp/support/server_callback.h>
#include <google/protobuf/arena.h>

#include <functional>
#include <utility>

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

// Answers a callback-API call once: `done(result)`, callable from any thread.
template <typename Resp>
using UnaryDone = std::function<void(absl::StatusOr<Resp>)>;

// The callback-API form: fn(const Principal&, UnaryDone<Resp>) starts the use
// case and returns; it copies what it needs of the principal and calls done
// exactly once. `domain` must outlive the call (a string constant).
//   grpc::ServerUnaryReactor* Svc::GetThing(grpc::CallbackServerContext* ctx,
//                                           const GetThingRequest* req, Thing* resp) {
//     return HandleUnaryAsync(*auth_, ctx, kDomain, resp, [&](const Principal& p, auto done) {
//       manager_->GetThingAsync(p, *req, std::move(done));
//     });
//   }
template <typename Resp, typename Fn>
grpc::ServerUnaryReactor* HandleUnaryAsync(const Authorizer& auth, grpc::CallbackServerContext* ctx,
                                           absl::string_view domain, Resp* resp, Fn&& fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto principal = auth.Authorize(ctx);
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status(), domain));
    return reactor;
  }
  fn(*principal, UnaryDone<Resp>([reactor, resp, domain](absl::StatusOr<Resp> result) {
       if (!result.ok()) return reactor->Finish(ToGrpcStatus(result.status(), domain));
       *resp = *std::move(result);
       reactor->Finish(grpc::Status::OK);
     }));
  return reactor;
}

// The in-place form, for a use case that writes its answer into `resp`
// itself (typically a response on the call's arena, ArenaMessages below,
// where building a separate answer and moving it in would copy it whole):
// fn(const Principal&, StatusDone) starts the use case, which fills the
// call's response and calls done(OK) exactly once, or done(error) (then
// whatever it wrote is not sent).
using StatusDone = std::function<void(absl::Status)>;
template <typename Fn>
grpc::ServerUnaryReactor* HandleUnaryAsyncInPlace(const Authorizer& auth, grpc::CallbackServerContext* ctx,
                                                  absl::string_view domain, Fn&& fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto principal = auth.Authorize(ctx);
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status(), domain));
    return reactor;
  }
  fn(*principal, StatusDone([reactor, domain](absl::Status status) {
       reactor->Finish(status.ok() ? grpc::Status::OK : ToGrpcStatus(status, domain));
     }));
  return reactor;
}

// A callback method's request and response on one protobuf Arena per call,
// freed in one go when gRPC is done with the call: a large answer (many
// nested messages) costs no allocation and no destructor per message.
// Install with the generated SetMessageAllocatorFor_<Method>(&allocator)
// (it must outlive the server), and answer through HandleUnaryAsyncInPlace:
// the response must be built in place, as moving a heap message into an
// arena one copies it.
template <typename Req, typename Resp>
class ArenaMessages final : public grpc::MessageAllocator<Req, Resp> {
 public:
  grpc::MessageHolder<Req, Resp>* AllocateMessages() override { return new Holder(); }

 private:
  class Holder final : public grpc::MessageHolder<Req, Resp> {
   public:
    Holder() {
      this->set_request(google::protobuf::Arena::CreateMessage<Req>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Resp>(&arena_));
    }
    void Release() override { delete this; }

   private:
    google::protobuf::Arena arena_;
  };
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_UNARY_H_
