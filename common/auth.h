// Authentication and authorization of incoming calls.
//
// A server interceptor (server.cc) calls Begin() when a call's metadata
// arrives: it verifies the bearer token and checks the method's role policy,
// and keeps the outcome for the call. The handler's first act is
// Authorize(context), which returns the principal or the precise error:
// UNAUTHENTICATED (MISSING_CREDENTIALS, INVALID_TOKEN, TOKEN_EXPIRED) or
// PERMISSION_DENIED (ROLE_NOT_ALLOWED). Methods absent from the policy are
// denied (deny by default). Organisation scoping (a billing admin sees only
// their organisation) needs the resource, so the manager checks it.
#ifndef LABSHARE_COMMON_AUTH_H_
#define LABSHARE_COMMON_AUTH_H_

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/token.h"

namespace grpc {
class ServerContextBase;
}

namespace labshare {

// Which roles may call which method. Method names are full gRPC paths:
// "/labshare.inventory.v1.InventoryService/CreateOrganization".
class MethodPolicy {
 public:
  MethodPolicy& Allow(absl::string_view method, std::initializer_list<Role> roles);
  MethodPolicy& AllowAll(absl::string_view method);  // any authenticated caller
  absl::Status Check(absl::string_view method, const Principal& principal) const;
  bool Knows(absl::string_view method) const;

 private:
  std::map<std::string, std::set<Role>, std::less<>> allowed_;
};

// All roles: for methods any authenticated caller may use.
std::initializer_list<Role> AllRoles();

class Authorizer {
 public:
  // signer, clock must outlive this. Thread-safe.
  Authorizer(const TokenSigner* signer, MethodPolicy policy, const Clock* clock)
      : signer_(signer), policy_(std::move(policy)), clock_(clock) {}

  // The decision for one call, from the value of its "authorization" header
  // ("Bearer <token>"; absent = empty).
  absl::StatusOr<Principal> Decide(absl::string_view method, absl::string_view authorization) const;

  // Interceptor side: remember / forget the decision for a call.
  void Begin(const grpc::ServerContextBase* call, absl::string_view method,
             absl::string_view authorization);
  void End(const grpc::ServerContextBase* call);

  // Handler side. UNAUTHENTICATED when no decision was recorded.
  absl::StatusOr<Principal> Authorize(const grpc::ServerContextBase* call) const;

  const MethodPolicy& policy() const { return policy_; }

 private:
  // Verify() with a cache of tokens already verified, keyed by the whole
  // token (so by its signature too): a client sends the same token on every
  // call, and checking its HMAC and parsing its claims each time costs more
  // than the rest of the decision. An entry is used only before its expiry;
  // after that the token goes through Verify() again (which says why not).
  absl::StatusOr<Principal> VerifyToken(absl::string_view token) const;

  static constexpr size_t kMaxCachedTokens = 4096;  // then the cache starts over

  const TokenSigner* signer_;
  MethodPolicy policy_;
  const Clock* clock_;
  mutable std::mutex mu_;
  std::unordered_map<const grpc::ServerContextBase*, absl::StatusOr<Principal>> calls_;
  mutable std::mutex tokens_mu_;
  mutable absl::flat_hash_map<std::string, Principal> tokens_;  // guarded by tokens_mu_
};

// "users/{id}" for people, "services/{id}" for service tokens.
std::string ActorName(const Principal& principal);
// "organizations/{id}" or "".
std::string ActorOrganization(const Principal& principal);

}  // namespace labshare

#endif  // LABSHARE_COMMON_AUTH_H_
