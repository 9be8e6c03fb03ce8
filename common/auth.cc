#include "common/auth.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/error.h"

namespace labshare {

std::initializer_list<Role> AllRoles() {
  static const std::initializer_list<Role> kAll = {
      Role::kLabUser,         Role::kFacilityStaff, Role::kMemberBillingAdmin,
      Role::kConsortiumAdmin, Role::kAuditor,       Role::kService};
  return kAll;
}

MethodPolicy& MethodPolicy::Allow(absl::string_view method, std::initializer_list<Role> roles) {
  auto& set = allowed_[std::string(method)];
  set.insert(roles.begin(), roles.end());
  return *this;
}

MethodPolicy& MethodPolicy::AllowAll(absl::string_view method) { return Allow(method, AllRoles()); }

bool MethodPolicy::Knows(absl::string_view method) const { return allowed_.count(method) > 0; }

absl::Status MethodPolicy::Check(absl::string_view method, const Principal& principal) const {
  auto it = allowed_.find(method);
  if (it != allowed_.end()) {
    for (Role r : principal.roles) {
      if (it->second.count(r)) return absl::OkStatus();
    }
  }
  std::string roles;
  for (Role r : principal.roles) absl::StrAppend(&roles, roles.empty() ? "" : ",", RoleName(r));
  return MakeError(absl::StatusCode::kPermissionDenied, "ROLE_NOT_ALLOWED",
                   absl::StrCat("roles [", roles, "] may not call ", method),
                   {{"method", std::string(method)}});
}

absl::StatusOr<Principal> Authorizer::Decide(absl::string_view method,
                                             absl::string_view authorization) const {
  if (authorization.empty()) {
    return MakeError(absl::StatusCode::kUnauthenticated, "MISSING_CREDENTIALS",
                     "missing 'authorization: Bearer <token>' metadata; mint a token with "
                     "labshare-token");
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
  {
    std::lock_guard<std::mutex> lock(tokens_mu_);
    auto it = tokens_.find(token);
    if (it != tokens_.end()) {
      if (now < it->second.expires_at) return it->second;
      tokens_.erase(it);
    }
  }
  LS_ASSIGN_OR_RETURN(Principal principal, signer_->Verify(std::string_view(token.data(), token.size()), now));
  std::lock_guard<std::mutex> lock(tokens_mu_);
  if (tokens_.size() >= kMaxCachedTokens) tokens_.clear();
  tokens_.emplace(std::string(token), principal);
  return principal;
}

void Authorizer::Begin(const grpc::ServerContextBase* call, absl::string_view method,
                       absl::string_view authorization) {
  auto decision = Decide(method, authorization);
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
