// Sign-in rules: the provider's ID token -> an inventory user -> LabShare
// tokens; refresh with rotation; sign-out. The contract is
// proto/labshare/identity/v1/identity.proto.
//
// The provider is trusted for who the person is (its signature, issuer,
// audience, expiry, `sub`, a verified `email`) and for nothing else: the
// organisation and roles in the access token come from inventory's records,
// read again at every refresh. A disabled user or a SUSPENDED/EXITED
// organisation gets no token. Domain code: time comes from the injected
// Clock (tokens expire by it), no gRPC here.
#ifndef LABSHARE_SERVICES_INVENTORY_IDENTITY_MANAGER_H_
#define LABSHARE_SERVICES_INVENTORY_IDENTITY_MANAGER_H_

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/http_client.h"
#include "common/jwks.h"
#include "common/jwt.h"
#include "common/token.h"
#include "labshare/identity/v1/identity.pb.h"
#include "services/inventory/identity_store.h"
#include "services/inventory/redis_inventory_store.h"

namespace labshare::inventory {

// The consortium's OpenID Connect provider as a relying party sees it: its
// discovery document (read on first use, again after a failure) and the key
// set it names (common/jwks.h: refreshed on an unknown kid and every 5
// minutes, so the provider may rotate its keys). Thread-safe.
class OidcProvider {
 public:
  OidcProvider(std::string issuer, HttpOptions http) : issuer_(std::move(issuer)), http_(std::move(http)) {}

  const std::string& issuer() const { return issuer_; }
  // UNAVAILABLE PROVIDER_UNAVAILABLE when the discovery document or the key
  // set cannot be read (unreachable, not JSON, another issuer, no jwks_uri).
  absl::StatusOr<std::shared_ptr<KeySet>> Keys();

 private:
  absl::StatusOr<std::shared_ptr<KeySet>> Discover() const;

  const std::string issuer_;
  const HttpOptions http_;
  std::mutex mu_;
  std::shared_ptr<KeySet> keys_;  // guarded by mu_
  // After a failed discovery, the same answer for a second, so that calls
  // do not queue behind one fetch timeout after another.
  std::chrono::steady_clock::time_point failed_at_{};  // guarded by mu_
  absl::Status failure_;                               // guarded by mu_
};

struct IdentityOptions {
  // Client ids accepted as the ID token's audience.
  std::vector<std::string> audiences = {"labshare-cli", "labshare-console"};
  absl::Duration access_token_ttl = absl::Minutes(15);
  absl::Duration refresh_token_ttl = absl::Hours(12);
  // A session's whole life from its sign-in, however often it is refreshed:
  // then the person signs in again (and the session's used-token set goes).
  absl::Duration max_session_age = absl::Hours(24 * 30);
  // Longest ID token lifetime (exp - iat) accepted.
  absl::Duration max_id_token_lifetime = absl::Hours(24);
};

class IdentityManager {
 public:
  // Everything must outlive the manager. provider or issuer null: sign-in is
  // not configured and every method answers SIGN_IN_NOT_CONFIGURED.
  IdentityManager(const InventoryStore* store, const IdentityStore* identity, OidcProvider* provider,
                  const TokenIssuer* issuer, IdentityOptions options, const Clock* clock)
      : store_(store), identity_(identity), provider_(provider), issuer_(issuer), options_(std::move(options)),
        clock_(clock) {}

  absl::StatusOr<identity::v1::TokenResponse> ExchangeToken(const identity::v1::ExchangeTokenRequest& r);
  absl::StatusOr<identity::v1::TokenResponse> RefreshToken(const identity::v1::RefreshTokenRequest& r);
  absl::Status RevokeToken(const identity::v1::RevokeTokenRequest& r);

 private:
  absl::Status CheckConfigured() const;
  // The one user the verified claims name; PERMISSION_DENIED USER_NOT_REGISTERED otherwise.
  absl::StatusOr<v1::User> MatchUser(const JwtClaims& claims) const;
  // USER_DISABLED / ORGANIZATION_SUSPENDED, or OK.
  absl::Status CheckMaySignIn(const v1::User& user) const;
  // The session started at `session_start`; its refresh token expires
  // after refresh_token_ttl, or at the session's maximum age if sooner.
  absl::StatusOr<identity::v1::TokenResponse> Issue(const v1::User& user, std::string refresh_token,
                                                    absl::Time now, absl::Time session_start) const;
  IdentityStore::SessionLimits Limits(absl::Time now) const;

  const InventoryStore* store_;
  const IdentityStore* identity_;
  OidcProvider* provider_;
  const TokenIssuer* issuer_;
  const IdentityOptions options_;
  const Clock* clock_;
};

}  // namespace labshare::inventory

#endif  // LABSHARE_SERVICES_INVENTORY_IDENTITY_MANAGER_H_
