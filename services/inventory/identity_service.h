// gRPC adapter of sign-in (labshare.identity.v1.IdentityService), served by
// labshare-inventory next to the inventory: unpack, call IdentityManager,
// convert the status. Its methods need no LabShare token
// (MethodPolicy::AllowUnauthenticated).
#ifndef LABSHARE_SERVICES_INVENTORY_IDENTITY_SERVICE_H_
#define LABSHARE_SERVICES_INVENTORY_IDENTITY_SERVICE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "common/auth.h"
#include "common/unary.h"
#include "labshare/identity/v1/identity.grpc.pb.h"
#include "services/inventory/identity_manager.h"

namespace labshare::inventory {

// The identity methods' policy (tests/authz checks it against the proto).
const MethodPolicy& IdentityPolicy();
// Adds IdentityPolicy()'s entries to `policy` (labshare-inventory serves
// both services behind one Authorizer).
void AddIdentityPolicy(MethodPolicy* policy);

// From the flags --oidc_audiences, --access_token_ttl, --refresh_token_ttl,
// --max_session_age; INVALID_ARGUMENT (INVALID_FLAG) for one under 1s.
absl::StatusOr<IdentityOptions> IdentityOptionsFromFlags();
// From --oidc_issuer and --oidc_ca_file; null when --oidc_issuer is empty.
std::unique_ptr<OidcProvider> OidcProviderFromFlags();

// Everything sign-in needs, from the flags (labshare-inventory's main),
// minting with `issuer` (from --token_signing_key_file; must outlive the
// result). Without --oidc_issuer or an issuer sign-in is off (its methods
// answer SIGN_IN_NOT_CONFIGURED). Exits with status 2 and a message on a bad
// flag. Adds users stored before the sign-in indexes existed to them (logged
// when storage is down).
struct SignIn {
  std::unique_ptr<OidcProvider> provider;
  std::unique_ptr<IdentityStore> store;
  std::unique_ptr<IdentityManager> manager;
};
SignIn SignInFromFlags(RedisPool* redis, const InventoryStore* inventory, const TokenIssuer* issuer,
                       const Clock* clock);

// On the callback API, use cases on the process's workers (as
// InventoryService).
class IdentityService final : public identity::v1::IdentityService::CallbackService {
 public:
  // manager and authorizer must outlive the service.
  IdentityService(IdentityManager* manager, const Authorizer* authorizer) : manager_(manager), auth_(authorizer) {}

  grpc::ServerUnaryReactor* ExchangeToken(grpc::CallbackServerContext* ctx,
                                          const identity::v1::ExchangeTokenRequest* req,
                                          identity::v1::TokenResponse* resp) override;
  grpc::ServerUnaryReactor* RefreshToken(grpc::CallbackServerContext* ctx,
                                         const identity::v1::RefreshTokenRequest* req,
                                         identity::v1::TokenResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeToken(grpc::CallbackServerContext* ctx, const identity::v1::RevokeTokenRequest* req,
                                        identity::v1::RevokeTokenResponse* resp) override;

 private:
  IdentityManager* manager_;
  const Authorizer* auth_;
  BlockingExecutor* const workers_ = ServiceWorkers("identity");
};

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_IDENTITY_SERVICE_H_
