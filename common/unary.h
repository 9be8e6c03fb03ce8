// The body every unary RPC adapter shares: authorize the call, run the use
// case, convert its status. Services keep their methods about one line.
//
// Three forms with the same behaviour: HandleUnary for the synchronous API,
// HandleUnaryAsync for the callback API (no thread waits: the use case
// answers through a callback, typically from a RedisPipeline thread), and
// HandleUnaryBlocking for the callback API with a use case that blocks
// (synchronous Redis or gRPC calls): it runs on a bounded pool of workers
// (ServiceWorkers), so no thread is made per call and a flood of calls
// waits in a bounded queue instead of growing the process's threads. All
// run inside the same server interceptor (common/server.cc: token and role
// check, trace id, metrics, access log), and all convert statuses with
// ToGrpcStatus (reason, ErrorInfo, retry delay).
#ifndef LABSHARE_COMMON_UNARY_H_
#define LABSHARE_COMMON_UNARY_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/message_allocator.h>
#include <grpcpp/support/server_callback.h>
#include <google/protobuf/arena.h>

#include <functional>
#include <utility>

#include "absl/time/time.h"
#include "common/auth.h"
#include "common/blocking_executor.h"
#include "common/error.h"
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

// What a call answers when the workers' queue is full: UNAVAILABLE
// (SERVER_BUSY, types.proto) with a retry delay.
absl::Status ServerBusy();

// The workers HandleUnaryBlocking runs `service`'s use cases on: one pool
// per service name in the process (--worker_threads threads, at most
// --worker_queue calls waiting; flags of common/server.cc), made on first
// use and never destroyed. One per service, not one per process: a use
// case that calls another service in the same process (tests run several
// in one) must not wait for a worker its own calls hold.
BlockingExecutor* ServiceWorkers(absl::string_view service);

// The blocking form: fn(const Principal&) returns absl::StatusOr<Resp> and
// may block; it runs on `workers` (e.g. ServiceWorkers("billing")); copies of
// what it captures must stay valid until the call is answered (the request,
// the response and the service do). A call whose deadline passed, or that
// its client cancelled, while it waited is answered without running fn
// (DEADLINE_EXCEEDED / CANCELLED); a full queue answers ServerBusy().
template <typename Resp, typename Fn>
grpc::ServerUnaryReactor* HandleUnaryBlocking(const Authorizer& auth, grpc::CallbackServerContext* ctx,
                                              absl::string_view domain, Resp* resp, Fn&& fn,
                                              BlockingExecutor* workers) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto principal = auth.Authorize(ctx);
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status(), domain));
    return reactor;
  }
  const bool accepted = workers->Submit([reactor, ctx, resp, domain, p = *std::move(principal),
                                      fn = std::forward<Fn>(fn)]() mutable {
                              if (ctx->IsCancelled()) return reactor->Finish(grpc::Status::CANCELLED);
                              if (absl::FromChrono(ctx->deadline()) <= absl::Now()) {
                                return reactor->Finish(ToGrpcStatus(
                                    MakeError(absl::StatusCode::kDeadlineExceeded, "DEADLINE_EXCEEDED",
                                              "the call's deadline passed while it waited for a worker"),
                                    domain));
                              }
                              auto result = fn(p);
                              if (!result.ok()) return reactor->Finish(ToGrpcStatus(result.status(), domain));
                              *resp = *std::move(result);
                              reactor->Finish(grpc::Status::OK);
                            });
  if (!accepted) reactor->Finish(ToGrpcStatus(ServerBusy(), domain));
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
