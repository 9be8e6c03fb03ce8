#include "common/auth.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/error.h"

namespace labshare {

std::initializer_list<Role> AllRoles() {
  static const std::initializer_list<Role> kAll = {
      Role::kLabUser,         Role::kFacilityStaff, Role::kMemberBillingAdmin,
      Role::kConsortiumAdmin, Role::kAuditor,       Role::kService};
  return kAll;
}

MethodPolicy& MethodPolicy::Allow(absl::string_view method, std::initializer_list<Role> roles,
                                  unsigned scope) {
  auto& entry = allowed_[std::string(method)];
  for (Role r : roles) entry[r] |= scope;
  return *this;
}

MethodPolicy& MethodPolicy::AllowAll(absl::string_view method) { return Allow(method, AllRoles()); }

MethodPolicy& MethodPolicy::AllowUnauthenticated(absl::string_view method) {
  unauthenticated_.emplace(method);
  return *this;
}

bool MethodPolicy::AllowsUnauthenticated(absl::string_view method) const {
  return unauthenticated_.count(method) > 0;
}

bool MethodPolicy::Knows(absl::string_view method) const {
  return allowed_.count(method) > 0 || unauthenticated_.count(method) > 0;
}

unsigned MethodPolicy::ScopesOf(absl::string_view method, const Principal& principal) const {
  auto it = allowed_.find(method);
  if (it == allowed_.end()) return kScopeNone;
  unsigned scopes = kScopeNone;
  for (Role r : principal.roles) {
    auto role = it->second.find(r);
    if (role != it->second.end()) scopes |= role->second;
  }
  return scopes;
}

absl::Status MethodPolicy::CheckScope(absl::string_view method, const Principal& principal,
                                      const ScopeFacts& facts) const {
  LS_RETURN_IF_ERROR(Check(method, principal));
  const unsigned scopes = ScopesOf(method, principal);
  if (scopes & kScopeAny) return absl::OkStatus();
  const std::string org = ActorOrganization(principal);
  auto among = [&](const std::vector<std::string>& orgs) {
    return !org.empty() && std::find(orgs.begin(), orgs.end(), org) != orgs.end();
  };
  if ((scopes & kScopeSelf) && !facts.user.empty() && !principal.HasRole(Role::kService) &&
      facts.user == ActorName(principal)) {
    return absl::OkStatus();
  }
  if ((scopes & kScopeParty) && among(facts.parties)) return absl::OkStatus();
  if ((scopes & kScopePayer) && !org.empty() && !facts.parties.empty() && facts.parties.front() == org) {
    return absl::OkStatus();
  }
  if ((scopes & kScopeOwner) && among(facts.owners)) return absl::OkStatus();
  const absl::string_view name = method.substr(method.rfind('/') + 1);
  if ((scopes & (kScopeParty | kScopePayer | kScopeOwner)) == 0) {
    return MakeError(absl::StatusCode::kPermissionDenied, "USER_SCOPE",
                     absl::StrCat("your role may call ", name, " only for yourself"),
                     {{"method", std::string(method)}});
  }
  std::vector<std::string> whom;
  if (scopes & kScopeSelf) whom.push_back("its own user");
  if (scopes & kScopeParty) whom.push_back("its parties' organisations");
  if ((scopes & kScopePayer) && !(scopes & kScopeParty)) whom.push_back("its paying organisation");
  if (scopes & kScopeOwner) whom.push_back("the instrument's owner or operator organisation");
  return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                   absl::StrCat("with your role, ", name, " serves only ", absl::StrJoin(whom, ", "),
                                "; your organisation is ", org.empty() ? "none" : org),
                   {{"method", std::string(method)}});
}

absl::Status MethodPolicy::Check(absl::string_view method, const Principal& principal) const {
  if (ScopesOf(method, principal) != kScopeNone) return absl::OkStatus();
  std::string roles;
  for (Role r : principal.roles) absl::StrAppend(&roles, roles.empty() ? "" : ",", RoleName(r));
  return MakeError(absl::StatusCode::kPermissionDenied, "ROLE_NOT_ALLOWED",
                   absl::StrCat("roles [", roles, "] may not call ", method),
                   {{"method", std::string(method)}});
}

bool IsPlatformService(absl::string_view name) {
  return name == "inventory" || name == "booking" || name == "billing" || name == "usage" ||
         name == "notify";
}

absl::StatusOr<Principal> Authorizer::Decide(absl::string_view method,
                                             absl::string_view authorization,
                                             absl::string_view peer_service) const {
  if (policy_.AllowsUnauthenticated(method)) {
    Principal anonymous;
    anonymous.expires_at = absl::InfiniteFuture();
    return anonymous;
  }
  // A bearer token, when sent, names the caller, also on a certified
  // channel: a gateway (the console) calls for the signed-in person. Without
  // one, the platform's own services are the SERVICE principal by their
  // certificate; any other certified name must send its user's token, and
  // is told so as an uncertified caller is (a gateway passes the message on
  // to its anonymous callers, who know nothing of its certificate).
  if (authorization.empty() && IsPlatformService(peer_service)) {
    Principal service;
    service.user_id = std::string(peer_service);
    service.roles = {Role::kService};
    service.expires_at = absl::InfiniteFuture();
    LS_RETURN_IF_ERROR(policy_.Check(method, service));
    return service;
  }
  if (authorization.empty()) {
    return MakeError(absl::StatusCode::kUnauthenticated, "MISSING_CREDENTIALS",
                     "missing 'authorization: Bearer <token>' metadata; sign in with `labshare login` "
                     "and send its access token");
  }
  absl::string_view token = authorization;
  if (!absl::ConsumePrefix(&token, "Bearer ") && !absl::ConsumePrefix(&token, "bearer ")) {
    return MakeError(absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
                     "authorization metadata must be 'Bearer <token>'");
  }
  LS_ASSIGN_OR_RETURN(Principal principal, VerifyToken(token));
  LS_RETURN_IF_ERROR(policy_.Check(method, principal));
  return principal;
}

absl::StatusOr<Principal> Authorizer::VerifyToken(absl::string_view token) const {
  const absl::Time now = clock_->Now();
  const uint64_t generation = verifier_->KeyGeneration();
  {
    std::lock_guard<std::mutex> lock(tokens_mu_);
    auto it = tokens_.find(token);
    if (it != tokens_.end()) {
      if (now < it->second.principal.expires_at && it->second.key_generation == generation) {
        return it->second.principal;
      }
      tokens_.erase(it);
    }
  }
  LS_ASSIGN_OR_RETURN(Principal principal, verifier_->Verify(std::string_view(token.data(), token.size()), now));
  std::lock_guard<std::mutex> lock(tokens_mu_);
  if (tokens_.size() >= kMaxCachedTokens) tokens_.clear();
  tokens_.insert_or_assign(std::string(token), CachedToken{principal, generation});
  return principal;
}

void Authorizer::Begin(const grpc::ServerContextBase* call, absl::string_view method,
                       absl::string_view authorization, absl::string_view peer_service,
                       absl::string_view trace_id) {
  auto decision = Decide(method, authorization, peer_service);
  if (decision.ok()) decision->trace_id = std::string(trace_id);
  std::lock_guard<std::mutex> lock(mu_);
  calls_.insert_or_assign(call, std::move(decision));
}

void Authorizer::End(const grpc::ServerContextBase* call) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.erase(call);
}

absl::StatusOr<Principal> Authorizer::Authorize(const grpc::ServerContextBase* call) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(call);
  if (it == calls_.end()) {
    return MakeError(absl::StatusCode::kUnauthenticated, "MISSING_CREDENTIALS",
                     "the call carried no verifiable credentials");
  }
  return it->second;
}

std::string ActorName(const Principal& principal) {
  return principal.HasRole(Role::kService) ? absl::StrCat("services/", principal.user_id)
                                           : absl::StrCat("users/", principal.user_id);
}

std::string ActorOrganization(const Principal& principal) {
  return principal.organization_id.empty()
             ? ""
             : absl::StrCat("organizations/", principal.organization_id);
}

}  // namespace labshare
