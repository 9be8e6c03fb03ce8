// Authentication and authorization of incoming calls.
//
// A server interceptor (server.cc) calls Begin() when a call's metadata
// arrives: it verifies the bearer token and checks the method's role policy,
// and keeps the outcome for the call. The handler's first act is
// Authorize(context), which returns the principal or the precise error:
// UNAUTHENTICATED (MISSING_CREDENTIALS, INVALID_TOKEN, TOKEN_EXPIRED) or
// PERMISSION_DENIED (ROLE_NOT_ALLOWED). Methods absent from the policy are
// denied (deny by default). Scoping (a billing admin sees only their
// organisation) needs the resource, so the manager loads it and asks the same
// policy (CheckScope) before it validates anything else.
#ifndef LABSHARE_COMMON_AUTH_H_
#define LABSHARE_COMMON_AUTH_H_

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/token.h"

namespace grpc {
class ServerContextBase;
}

namespace labshare {

// Which callers of an admitted role a method serves, relative to the
// resource (or the request) it acts on. A bit set: a role may be admitted
// through several scopes ("the booking's user; MEMBER_BILLING_ADMIN of the
// payer, the owner or a split participant").
enum Scope : unsigned {
  kScopeNone = 0,
  // The resource's own user, or the caller acting for themselves.
  kScopeSelf = 1,
  // The caller's organisation is a party of the resource: payer, lessee,
  // client, participant, payee, the subject of a statement or filter.
  kScopeParty = 2,
  // The caller's organisation owns or operates the instrument ("owner staff").
  kScopeOwner = 4,
  // Every caller holding the role.
  kScopeAny = 8,
  // The caller's organisation is the resource's paying organisation, the
  // first of ScopeFacts.parties (not any party: not a cost-sharing one).
  kScopePayer = 16,
};

// What a scope check compares the caller with.
struct ScopeFacts {
  std::string user;                  // "users/{id}", or "" when none
  std::vector<std::string> parties;  // "organizations/{id}"
  std::vector<std::string> owners;   // owner and operator organisations
};

// Which roles may call which method, and within which scope. Method names
// are full gRPC paths: "/labshare.inventory.v1.InventoryService/CreateOrganization".
// One table per service (XxxPolicy()), written from the "Roles:" lines of the
// proto comments; tests/authz checks the two against each other.
class MethodPolicy {
 public:
  MethodPolicy& Allow(absl::string_view method, std::initializer_list<Role> roles,
                      unsigned scope = kScopeAny);
  MethodPolicy& AllowAll(absl::string_view method);  // any authenticated caller
  // A method that needs no credentials (sign-in itself): Authorizer::Decide
  // admits every call, ignoring any token or certificate, as an anonymous
  // principal (no user, no roles). The contract says "Roles: anyone,
  // without a LabShare token."
  MethodPolicy& AllowUnauthenticated(absl::string_view method);
  bool AllowsUnauthenticated(absl::string_view method) const;
  // Role check (the interceptor's): ROLE_NOT_ALLOWED unless one of the
  // caller's roles is admitted in some scope.
  absl::Status Check(absl::string_view method, const Principal& principal) const;
  // Scope check (the manager's, once it has the resource): OK when one of the
  // caller's admitted roles has a scope the facts satisfy; otherwise
  // PERMISSION_DENIED, USER_SCOPE when the caller's roles are admitted only
  // for their own resources, else ORGANIZATION_SCOPE.
  absl::Status CheckScope(absl::string_view method, const Principal& principal,
                          const ScopeFacts& facts) const;
  // The scopes (bit set) in which `principal`'s roles are admitted.
  unsigned ScopesOf(absl::string_view method, const Principal& principal) const;
  bool Knows(absl::string_view method) const;
  // method -> role -> scope bits, for tests and documentation.
  const std::map<std::string, std::map<Role, unsigned>, std::less<>>& rules() const { return allowed_; }

 private:
  std::map<std::string, std::map<Role, unsigned>, std::less<>> allowed_;
  std::set<std::string, std::less<>> unauthenticated_;
};

// All roles: for methods any authenticated caller may use.
std::initializer_list<Role> AllRoles();

class Authorizer {
 public:
  // verifier, clock must outlive this. Thread-safe.
  Authorizer(const TokenVerifier* verifier, MethodPolicy policy, const Clock* clock)
      : verifier_(verifier), policy_(std::move(policy)), clock_(clock) {}

  // The decision for one call, from the value of its "authorization" header
  // ("Bearer <token>"; absent = empty) and the calling service's name as
  // proven by its client certificate (peer_service, "" when the peer showed
  // no service certificate; see common/peer_identity.h). A bearer token, when
  // present, decides (also on a certified channel: a gateway calls for its
  // signed-in user). Without a token, a certified platform service
  // (IsPlatformService) is the principal {user_id: peer_service, roles:
  // {SERVICE}}; other certified names (the console) get MISSING_CREDENTIALS.
  // SERVICE never comes from a token.
  absl::StatusOr<Principal> Decide(absl::string_view method, absl::string_view authorization,
                                   absl::string_view peer_service = {}) const;

  // Interceptor side: remember / forget the decision for a call. A decided
  // principal carries the call's trace_id (EventHeader.trace_id).
  void Begin(const grpc::ServerContextBase* call, absl::string_view method,
             absl::string_view authorization, absl::string_view peer_service = {},
             absl::string_view trace_id = {});
  void End(const grpc::ServerContextBase* call);

  // Handler side. UNAUTHENTICATED when no decision was recorded.
  absl::StatusOr<Principal> Authorize(const grpc::ServerContextBase* call) const;

  const MethodPolicy& policy() const { return policy_; }

 private:
  // Verify() with a cache of tokens already verified, keyed by the whole
  // token (so by its signature too): a client sends the same token on every
  // call, and checking its ECDSA signature and claims each time costs more
  // than the rest of the decision. An entry is used only before its expiry
  // and while the key set is the one it was verified with (a key removed
  // from the JWKS takes its tokens with it); otherwise the token goes
  // through Verify() again (which says why not).
  absl::StatusOr<Principal> VerifyToken(absl::string_view token) const;

  static constexpr size_t kMaxCachedTokens = 4096;  // then the cache starts over

  struct CachedToken {
    Principal principal;
    uint64_t key_generation;
  };

  const TokenVerifier* verifier_;
  MethodPolicy policy_;
  const Clock* clock_;
  mutable std::mutex mu_;
  std::unordered_map<const grpc::ServerContextBase*, absl::StatusOr<Principal>> calls_;
  mutable std::mutex tokens_mu_;
  mutable absl::flat_hash_map<std::string, CachedToken> tokens_;  // guarded by tokens_mu_
};

// The services whose certificate alone makes them the SERVICE principal:
// inventory, booking, billing, usage, notify.
bool IsPlatformService(absl::string_view name);

// "users/{id}" for people, "services/{id}" for a service (by its certificate).
std::string ActorName(const Principal& principal);
// "organizations/{id}" or "".
std::string ActorOrganization(const Principal& principal);

}  // namespace labshare

#endif  // LABSHARE_COMMON_AUTH_H_
