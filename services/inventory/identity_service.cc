#include "services/inventory/identity_service.h"

#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/token_flags.h"
#include "common/unary.h"

ABSL_FLAG(std::string, oidc_issuer, "",
          "Issuer URL of the consortium's OpenID Connect provider (exactly as its discovery document "
          "names it, https://...); empty: sign-in is off (IdentityService answers SIGN_IN_NOT_CONFIGURED)");
ABSL_FLAG(std::string, oidc_audiences, "labshare-cli,labshare-console",
          "Comma-separated client ids whose ID tokens sign-in accepts (the ID token's aud)");
ABSL_FLAG(std::string, oidc_ca_file, "",
          "PEM file of the CA certificates that sign the provider's HTTPS certificate; empty: the system's");
ABSL_FLAG(absl::Duration, access_token_ttl, absl::Minutes(15), "Lifetime of the LabShare access tokens sign-in issues");
ABSL_FLAG(absl::Duration, refresh_token_ttl, absl::Hours(12),
          "Lifetime of a refresh token; every refresh issues a new one with this lifetime");
ABSL_FLAG(absl::Duration, max_session_age, absl::Hours(24 * 30),
          "Longest life of a sign-in session, however often it is refreshed: a refresh after it is refused "
          "(INVALID_REFRESH_TOKEN) and the person signs in again");

namespace labshare::inventory {
namespace {

constexpr char kDomain[] = "inventory.labshare";
constexpr char kPrefix[] = "/labshare.identity.v1.IdentityService/";

}  // namespace

void AddIdentityPolicy(MethodPolicy* policy) {
  // "Roles: anyone, without a LabShare token." for every method.
  for (const char* m : {"ExchangeToken", "RefreshToken", "RevokeToken"}) {
    policy->AllowUnauthenticated(absl::StrCat(kPrefix, m));
  }
}

const MethodPolicy& IdentityPolicy() {
  static const MethodPolicy* const kPolicy = [] {
    auto* p = new MethodPolicy();
    AddIdentityPolicy(p);
    return p;
  }();
  return *kPolicy;
}

absl::StatusOr<IdentityOptions> IdentityOptionsFromFlags() {
  IdentityOptions options;
  options.audiences.clear();
  for (absl::string_view a : absl::StrSplit(absl::GetFlag(FLAGS_oidc_audiences), ',', absl::SkipWhitespace())) {
    options.audiences.emplace_back(absl::StripAsciiWhitespace(a));
  }
  options.access_token_ttl = absl::GetFlag(FLAGS_access_token_ttl);
  options.refresh_token_ttl = absl::GetFlag(FLAGS_refresh_token_ttl);
  options.max_session_age = absl::GetFlag(FLAGS_max_session_age);
  if (options.access_token_ttl < absl::Seconds(1) || options.refresh_token_ttl < absl::Seconds(1) ||
      options.max_session_age < absl::Seconds(1)) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_FLAG",
                     "--access_token_ttl, --refresh_token_ttl and --max_session_age must be at least 1s");
  }
  if (options.access_token_ttl > TokenRulesFromFlags().max_lifetime) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_FLAG",
                     "--access_token_ttl must not exceed --token_max_lifetime: every service would refuse the "
                     "tokens");
  }
  if (options.audiences.empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_FLAG",
                     "--oidc_audiences must name at least one client id");
  }
  return options;
}

std::unique_ptr<OidcProvider> OidcProviderFromFlags() {
  const std::string issuer = absl::GetFlag(FLAGS_oidc_issuer);
  if (issuer.empty()) return nullptr;
  // The issuer over HTTPS; plain HTTP only to a provider on this host.
  absl::string_view rest = issuer;
  bool plain_ok = false;
  if (absl::ConsumePrefix(&rest, "http://")) {
    absl::string_view host = rest.substr(0, rest.find('/'));
    if (absl::ConsumePrefix(&host, "[")) {
      host = host.substr(0, host.find(']'));
    } else {
      host = host.substr(0, host.find(':'));
    }
    plain_ok = IsLoopbackHost(host);
  }
  if (!absl::StartsWith(issuer, "https://") && !plain_ok) {
    LogError("--oidc_issuer must be an https:// URL (http:// only for a provider on a loopback address)",
             {{"oidc_issuer", issuer}});
    std::exit(2);
  }
  HttpOptions http;
  http.ca_file = absl::GetFlag(FLAGS_oidc_ca_file);
  return std::make_unique<OidcProvider>(issuer, std::move(http));
}

SignIn SignInFromFlags(RedisPool* redis, const InventoryStore* inventory, const TokenIssuer* issuer,
                       const Clock* clock) {
  SignIn out;
  auto options = IdentityOptionsFromFlags();
  if (!options.ok()) {
    std::fprintf(stderr, "labshare-inventory: %s\n", std::string(options.status().message()).c_str());
    std::exit(2);
  }
  out.provider = OidcProviderFromFlags();
  if (out.provider == nullptr || issuer == nullptr) {
    LogWarning("sign-in is off: give --oidc_issuer to issue LabShare tokens");
  }
  out.store = std::make_unique<IdentityStore>(redis, inventory);
  if (absl::Status s = out.store->BackfillSignInIndexes(); !s.ok()) {
    LogWarning("sign-in lookup indexes not backfilled; users created before them sign in once it succeeds",
               {{"error", std::string(s.message())}});
  }
  out.manager = std::make_unique<IdentityManager>(inventory, out.store.get(), out.provider.get(), issuer,
                                                  *std::move(options), clock);
  return out;
}

grpc::ServerUnaryReactor* IdentityService::ExchangeToken(grpc::CallbackServerContext* ctx,
                                                         const identity::v1::ExchangeTokenRequest* req,
                                                         identity::v1::TokenResponse* resp) {
  return HandleUnaryBlocking(*auth_, ctx, kDomain, resp,
                             [this, req](const Principal&) { return manager_->ExchangeToken(*req); }, workers_);
}

grpc::ServerUnaryReactor* IdentityService::RefreshToken(grpc::CallbackServerContext* ctx,
                                                        const identity::v1::RefreshTokenRequest* req,
                                                        identity::v1::TokenResponse* resp) {
  return HandleUnaryBlocking(*auth_, ctx, kDomain, resp,
                             [this, req](const Principal&) { return manager_->RefreshToken(*req); }, workers_);
}

grpc::ServerUnaryReactor* IdentityService::RevokeToken(grpc::CallbackServerContext* ctx,
                                                       const identity::v1::RevokeTokenRequest* req,
                                                       identity::v1::RevokeTokenResponse* resp) {
  return HandleUnaryBlocking(*auth_, ctx, kDomain, resp,
                             [this, req](const Principal&) -> absl::StatusOr<identity::v1::RevokeTokenResponse> {
                               LS_RETURN_IF_ERROR(manager_->RevokeToken(*req));
                               return identity::v1::RevokeTokenResponse();
                             },
                             workers_);
}

}  // namespace labshare::inventory
