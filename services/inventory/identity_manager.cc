#include "services/inventory/identity_manager.h"

#include <algorithm>
#include <optional>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/error.h"
#include "common/proto_util.h"

namespace labshare::inventory {
namespace {

namespace idv1 = identity::v1;

absl::Status ProviderUnavailable(const std::string& issuer, absl::string_view why) {
  return MakeError(absl::StatusCode::kUnavailable, "PROVIDER_UNAVAILABLE",
                   absl::StrCat("the OpenID Connect provider ", issuer, " cannot be used now: ", why,
                                "; try again later"),
                   {{"issuer", issuer}});
}

absl::Status NotRegistered(absl::string_view why) {
  return MakeError(absl::StatusCode::kPermissionDenied, "USER_NOT_REGISTERED",
                   absl::StrCat(why, "; ask your consortium administrator to register you in LabShare"));
}

std::optional<Role> TokenRole(int role) {
  switch (role) {
    case labshare::type::v1::LAB_USER: return Role::kLabUser;
    case labshare::type::v1::FACILITY_STAFF: return Role::kFacilityStaff;
    case labshare::type::v1::MEMBER_BILLING_ADMIN: return Role::kMemberBillingAdmin;
    case labshare::type::v1::CONSORTIUM_ADMIN: return Role::kConsortiumAdmin;
    case labshare::type::v1::AUDITOR: return Role::kAuditor;
    default: return std::nullopt;  // SERVICE is never a person's role
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<KeySet>> OidcProvider::Keys() {
  std::lock_guard<std::mutex> lock(mu_);
  if (keys_) return keys_;
  const auto now = std::chrono::steady_clock::now();
  if (!failure_.ok() && now - failed_at_ < std::chrono::seconds(1)) return failure_;
  auto keys = Discover();
  if (!keys.ok()) {
    failed_at_ = now;
    failure_ = keys.status();
    return failure_;
  }
  keys_ = *std::move(keys);
  return keys_;
}

absl::StatusOr<std::shared_ptr<KeySet>> OidcProvider::Discover() const {
  const std::string url = absl::StrCat(absl::StripSuffix(issuer_, "/"), "/.well-known/openid-configuration");
  auto response = HttpGet(url, http_);
  if (!response.ok()) return ProviderUnavailable(issuer_, absl::StrCat("no answer from ", url));
  if (response->status != 200) {
    return ProviderUnavailable(issuer_, absl::StrCat(url, " answered HTTP ", response->status));
  }
  google::protobuf::Struct doc;
  if (!google::protobuf::util::JsonStringToMessage(response->body, &doc).ok()) {
    return ProviderUnavailable(issuer_, absl::StrCat(url, " is not JSON"));
  }
  const auto& fields = doc.fields();
  auto text = [&](const char* name) -> std::string {
    auto it = fields.find(name);
    return it == fields.end() ? "" : it->second.string_value();
  };
  // OpenID Connect Discovery 1.0, section 4.3: the document's issuer must be
  // exactly the one configured.
  if (text("issuer") != issuer_) {
    return ProviderUnavailable(issuer_, absl::StrCat("its discovery document names issuer \"", text("issuer"),
                                                     "\"; set --oidc_issuer to exactly that"));
  }
  const std::string jwks_uri = text("jwks_uri");
  if (jwks_uri.empty()) return ProviderUnavailable(issuer_, "its discovery document has no jwks_uri");
  // Keys only over HTTPS: KeySet::Open would read anything else as a local
  // file, and plain HTTP lets the network choose the keys.
  if (!absl::StartsWith(jwks_uri, "https://")) {
    return ProviderUnavailable(issuer_, absl::StrCat("its discovery document names jwks_uri \"", jwks_uri,
                                                     "\"; only an https:// key set is accepted"));
  }
  auto keys = KeySet::Open(jwks_uri, http_);
  if (!keys.ok()) {
    return ProviderUnavailable(issuer_, absl::StrCat("its key set ", jwks_uri, ": ", keys.status().message()));
  }
  return *std::move(keys);
}

absl::Status IdentityManager::CheckConfigured() const {
  if (provider_ == nullptr || issuer_ == nullptr) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "SIGN_IN_NOT_CONFIGURED",
                     "sign-in is not configured on this server: start labshare-inventory with "
                     "--oidc_issuer (the OpenID Connect provider's issuer URL)");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::User> IdentityManager::MatchUser(const JwtClaims& claims) const {
  const std::string sub = claims.sub();
  LS_ASSIGN_OR_RETURN(auto by_subject, identity_->UsersWithSubject(sub));
  if (by_subject.size() == 1) return std::move(by_subject.front());
  if (by_subject.size() > 1) return NotRegistered(absl::StrCat("several users have external subject ", sub));
  const std::optional<std::string> email = claims.String("email");
  if (!email || email->empty()) {
    return NotRegistered(absl::StrCat("no user has external subject ", sub, " and the provider sent no email"));
  }
  if (claims.Bool("email_verified") != true) {
    return NotRegistered(absl::StrCat("no user has external subject ", sub, " and the provider has not verified ",
                                      *email));
  }
  LS_ASSIGN_OR_RETURN(auto by_email, identity_->UsersWithEmail(*email));
  // A user bound to a subject signs in only with that subject: a new
  // account at the provider that reuses the email does not take it over.
  std::vector<v1::User> unbound;
  for (auto& u : by_email) {
    if (u.external_subject().empty()) unbound.push_back(std::move(u));
  }
  if (unbound.size() == 1) return std::move(unbound.front());
  if (unbound.size() > 1) return NotRegistered(absl::StrCat("several users have email ", *email));
  return NotRegistered(absl::StrCat("no user has external subject ", sub, " or email ", *email));
}

absl::Status IdentityManager::CheckMaySignIn(const v1::User& user) const {
  if (user.disabled()) {
    return MakeError(absl::StatusCode::kPermissionDenied, "USER_DISABLED",
                     absl::StrCat(user.name(), " is disabled; ask your consortium administrator"),
                     {{"user", user.name()}});
  }
  if (user.organization().empty()) return absl::OkStatus();
  const std::string org_id(absl::StripPrefix(user.organization(), "organizations/"));
  LS_ASSIGN_OR_RETURN(auto org, store_->Find<v1::Organization>(keys::Org(org_id)));
  if (!org) return NotRegistered(absl::StrCat(user.organization(), " of ", user.name(), " does not exist"));
  const auto state = org->value.membership_state();
  if (state == v1::SUSPENDED || state == v1::EXITED) {
    return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SUSPENDED",
                     absl::StrCat(user.organization(), " is ", v1::MembershipState_Name(state),
                                  "; its people cannot sign in until the consortium reinstates it"),
                     {{"organization", user.organization()}});
  }
  return absl::OkStatus();
}

IdentityStore::SessionLimits IdentityManager::Limits(absl::Time now) const {
  return {options_.refresh_token_ttl, options_.max_session_age, now};
}

absl::StatusOr<idv1::TokenResponse> IdentityManager::Issue(const v1::User& user, std::string refresh_token,
                                                           absl::Time now, absl::Time session_start) const {
  Principal p;
  p.user_id = std::string(absl::StripPrefix(user.name(), "users/"));
  p.organization_id = std::string(absl::StripPrefix(user.organization(), "organizations/"));
  for (int r : user.roles()) {
    if (auto role = TokenRole(r)) p.roles.push_back(*role);
  }
  const absl::Time issued = absl::FromUnixSeconds(absl::ToUnixSeconds(now));
  const absl::Time session_end = session_start + options_.max_session_age;
  // The access token ends with the session too (identity.proto), in whole
  // seconds (a JWT's exp): the session's end rounded down, or, in a
  // session's last second, one second after it was issued (exp > iat).
  p.expires_at = std::max(issued + absl::Seconds(1),
                          std::min(issued + options_.access_token_ttl,
                                   absl::FromUnixSeconds(absl::ToUnixSeconds(session_end))));
  idv1::TokenResponse out;
  out.set_access_token(issuer_->Mint(p, issued));
  out.set_token_type("Bearer");
  *out.mutable_expire_time() = ToProto(p.expires_at);
  out.set_expires_in(absl::ToInt64Seconds(p.expires_at - issued));
  out.set_refresh_token(std::move(refresh_token));
  *out.mutable_refresh_expire_time() = ToProto(std::min(issued + options_.refresh_token_ttl, session_end));
  *out.mutable_user() = user;
  return out;
}

absl::StatusOr<idv1::TokenResponse> IdentityManager::ExchangeToken(const idv1::ExchangeTokenRequest& r) {
  LS_RETURN_IF_ERROR(CheckConfigured());
  if (r.id_token().empty()) return InvalidField("id_token", "required: the ID token from the provider");
  JwtRules rules;
  rules.audiences = options_.audiences;
  rules.algorithms = {"RS256", "ES256"};
  // OpenID Connect does not fix an ID token's typ: providers send "JWT",
  // "application/jwt", "JOSE" or none (RFC 7519 5.1, RFC 7515 4.1.9).
  // Another type is another kind of token (an "at+jwt" access token).
  rules.types = {"JWT", "JOSE"};
  rules.max_lifetime = options_.max_id_token_lifetime;
  // Not a JWT (or an algorithm never accepted): INVALID_TOKEN whether or not
  // the provider can be reached.
  LS_ASSIGN_OR_RETURN(const JwtHeader header, ReadJwtHeader(r.id_token(), rules));
  LS_ASSIGN_OR_RETURN(std::shared_ptr<KeySet> keys, provider_->Keys());
  rules.issuer = provider_->issuer();
  const absl::Time now = clock_->Now();
  absl::StatusOr<JwtClaims> verified = VerifyJwt(r.id_token(), *keys, rules, now);
  // A kid the provider's key set lacks while that set cannot be fetched: the
  // provider may have rotated to a key we cannot see yet, so the token is not
  // known to be invalid; the provider is unreachable (the sign-in may be retried).
  if (!verified.ok() && ErrorReason(verified.status()) == "JWKS_UNAVAILABLE") {
    return ProviderUnavailable(provider_->issuer(),
                               absl::StripSuffix(verified.status().message(), "; try again later"));
  }
  LS_ASSIGN_OR_RETURN(JwtClaims claims, std::move(verified));
  if (claims.sub().empty()) {
    return MakeError(absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "the ID token has no subject (sub)");
  }
  // An ID token is exchanged once (identity.proto): one that reached the
  // browser's history or a log starts no second session. Remembered by its
  // signed part until it can no longer verify (its expiry plus the leeway).
  const IdentityStore::IdTokenUse use{
      std::string(r.id_token().substr(0, header.signature_begin - 1)),
      std::max(absl::Seconds(1), claims.exp() + rules.leeway - now)};
  auto used_before = [] {
    return MakeError(absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
                     "this ID token was exchanged before; an ID token is exchanged once: sign in again");
  };
  LS_ASSIGN_OR_RETURN(const bool used, identity_->IdTokenUsed(use.signed_part));
  if (used) return used_before();
  LS_ASSIGN_OR_RETURN(v1::User user, MatchUser(claims));
  LS_RETURN_IF_ERROR(CheckMaySignIn(user));
  const std::string user_id(absl::StripPrefix(user.name(), "users/"));
  // The session starts in the step that uses the token up: of two
  // exchanges of one token at once, one signs in.
  LS_ASSIGN_OR_RETURN(std::string refresh, identity_->StartSession(user_id, Limits(now), use));
  if (refresh.empty()) return used_before();
  return Issue(user, std::move(refresh), now, now);
}

absl::StatusOr<idv1::TokenResponse> IdentityManager::RefreshToken(const idv1::RefreshTokenRequest& r) {
  LS_RETURN_IF_ERROR(CheckConfigured());
  if (r.refresh_token().empty()) return InvalidField("refresh_token", "required");
  // The person is read and checked before the token is used up, so that
  // a failure to read them (UNAVAILABLE, which the caller may retry with
  // the same token) leaves the token unused.
  auto may_sign_in = [this](const std::string& user_id) -> absl::StatusOr<v1::User> {
    LS_ASSIGN_OR_RETURN(auto user, store_->Find<v1::User>(keys::User(user_id)));
    if (!user) return NotRegistered(absl::StrCat("users/", user_id, " no longer exists"));
    LS_RETURN_IF_ERROR(CheckMaySignIn(user->value));
    return std::move(user->value);
  };
  // The session ends with a refusal of the person (PERMISSION_DENIED).
  auto refused = [this](const absl::Status& s, const std::string& token) -> absl::Status {
    if (absl::IsPermissionDenied(s)) LS_RETURN_IF_ERROR(identity_->RevokeSession(token));
    return s;
  };
  LS_ASSIGN_OR_RETURN(const std::string holder, identity_->ActiveTokenUser(r.refresh_token()));
  std::optional<v1::User> checked;
  if (!holder.empty()) {
    absl::StatusOr<v1::User> user = may_sign_in(holder);
    if (!user.ok()) return refused(user.status(), r.refresh_token());
    checked = *std::move(user);
  }
  const absl::Time now = clock_->Now();
  LS_ASSIGN_OR_RETURN(auto rotation, identity_->Rotate(r.refresh_token(), Limits(now)));
  using Kind = IdentityStore::Rotation::Kind;
  if (rotation.kind == Kind::kExpired) {
    return MakeError(absl::StatusCode::kUnauthenticated, "INVALID_REFRESH_TOKEN",
                     absl::StrCat("the session reached its maximum age (", absl::FormatDuration(options_.max_session_age),
                                  " from sign-in) and ended; sign in again (labshare login)"));
  }
  if (rotation.kind == Kind::kInvalid) {
    return MakeError(absl::StatusCode::kUnauthenticated, "INVALID_REFRESH_TOKEN",
                     "the refresh token is unknown, expired or of a session that ended; sign in again "
                     "(labshare login)");
  }
  if (rotation.kind == Kind::kReused) {
    return MakeError(absl::StatusCode::kUnauthenticated, "REFRESH_TOKEN_REUSED",
                     "this refresh token was used before, so it may have been copied: the session is "
                     "revoked; sign in again (labshare login)",
                     {{"user", absl::StrCat("users/", rotation.user_id)}});
  }
  if (checked && rotation.user_id == holder) {
    return Issue(*checked, std::move(rotation.new_token), now, rotation.session_start);
  }
  // Rotated by a token that was not active when read (only a race with
  // another use of it): the person is checked now.
  absl::StatusOr<v1::User> user = may_sign_in(rotation.user_id);
  if (!user.ok()) return refused(user.status(), rotation.new_token);
  return Issue(*user, std::move(rotation.new_token), now, rotation.session_start);
}

absl::Status IdentityManager::RevokeToken(const idv1::RevokeTokenRequest& r) {
  LS_RETURN_IF_ERROR(CheckConfigured());
  if (r.refresh_token().empty()) return InvalidField("refresh_token", "required");
  return identity_->RevokeSession(r.refresh_token());
}

}  // namespace labshare::inventory
