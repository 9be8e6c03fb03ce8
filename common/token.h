// LabShare access tokens: JWTs (RFC 7519) signed with ES256 (ECDSA P-256).
//
// Header {"alg":"ES256","typ":"JWT","kid":K}, K = the RFC 7638 thumbprint of
// the signing key. Claims:
//   iss    the issuer (--token_issuer, default "labshare")
//   aud    the audience (--token_audience, default "labshare")
//   sub    Principal::user_id, e.g. "li-wei"
//   org    Principal::organization_id (absent when empty)
//   roles  array of role names: lab_user, facility_staff,
//          member_billing_admin, consortium_admin, auditor
//   iat, exp, jti
// Exactly one component holds the private key (labshare-inventory's identity
// service, TokenIssuer); every service verifies with the public keys of a
// JWKS (TokenVerifier over a KeySet, common/jwks.h). The "service" role is
// never valid in a token: a service is known by its certificate
// (Authorizer's peer_service).
#ifndef LABSHARE_COMMON_TOKEN_H_
#define LABSHARE_COMMON_TOKEN_H_

#include <openssl/types.h>

#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/jwks.h"

namespace labshare {

// Roles by the lowercase names used in tokens and on the command line:
// "lab_user", "facility_staff", "member_billing_admin", "consortium_admin",
// "auditor", and "service" (only from a service certificate, never a token).
enum class Role { kLabUser, kFacilityStaff, kMemberBillingAdmin, kConsortiumAdmin, kAuditor, kService };

// Exact, case-sensitive match of the names above; anything else is
// INVALID_ARGUMENT (reason UNKNOWN_ROLE) with a message listing the valid names.
absl::StatusOr<Role> ParseRole(std::string_view name);
std::string RoleName(Role role);

// Who is calling, as carried by a verified token (or a service certificate).
struct Principal {
  std::string user_id;          // "sub" claim, e.g. "li-wei"; the service's name for a service
  std::string organization_id;  // "org" claim, may be empty for consortium-wide people
  std::vector<Role> roles;
  absl::Time expires_at;        // "exp" claim; whole seconds once through a token
  // Not a claim: the trace id of the call this principal was decided for
  // (set by Authorizer::Begin from the call's traceparent / x-trace-id, or
  // generated), copied into the header of every event the call publishes.
  std::string trace_id = {};

  bool HasRole(Role role) const;
  bool HasAnyRole(std::initializer_list<Role> roles) const;
};

// Mints LabShare tokens with the private key of one PEM file. Thread-safe.
class TokenIssuer {
 public:
  // The key file is read with ReadSecretFile (mode 0600 enforced: errors
  // SECRET_FILE_NOT_FOUND / SECRET_FILE_UNREADABLE / SECRET_FILE_EXPOSED)
  // and must hold an EC P-256 private key (INVALID_SIGNING_KEY). When the
  // file changes (rotation) the new key is used from the next Mint on; a
  // changed file that cannot be used is logged and the previous key kept.
  static absl::StatusOr<std::unique_ptr<TokenIssuer>> FromFile(std::string key_file, std::string issuer,
                                                               std::string audience);
  // From PEM text (tests, tools); never re-read.
  static absl::StatusOr<std::unique_ptr<TokenIssuer>> FromPem(std::string_view pem, std::string issuer,
                                                              std::string audience);

  // A token for p: iat = issued_at, exp = p.expires_at (whole seconds), a
  // random jti.
  std::string Mint(const Principal& p, absl::Time issued_at) const;

  // The current key's id and public JWK (JSON object text).
  std::string kid() const;
  std::string PublicJwk() const;
  const std::string& issuer() const { return issuer_; }
  const std::string& audience() const { return audience_; }

  ~TokenIssuer();
  struct Key;  // implementation detail

 private:
  TokenIssuer(std::string key_file, std::string issuer, std::string audience)
      : key_file_(std::move(key_file)), issuer_(std::move(issuer)), audience_(std::move(audience)) {}
  std::shared_ptr<const Key> CurrentKey() const;

  const std::string key_file_;  // "" for FromPem
  const std::string issuer_, audience_;
  mutable std::mutex mu_;
  mutable std::shared_ptr<const Key> key_;  // guarded by mu_
};

struct TokenRules {
  std::string issuer = "labshare";
  std::string audience = "labshare";
  absl::Duration max_lifetime = absl::Hours(1);
};

// Verifies LabShare tokens against a key set. Thread-safe.
class TokenVerifier {
 public:
  TokenVerifier(std::shared_ptr<KeySet> keys, TokenRules rules) : keys_(std::move(keys)), rules_(std::move(rules)) {}

  // The principal of a valid token. UNAUTHENTICATED INVALID_TOKEN (which
  // check failed: see common/jwt.h; also a missing sub, an unknown role or
  // the "service" role) or TOKEN_EXPIRED. Only the issuer's signed claims
  // get this far: a non-string org counts as none, a string roles claim as
  // one role.
  absl::StatusOr<Principal> Verify(std::string_view token, absl::Time now) const;

  // Changes when the key set changes (see KeySet::Generation).
  uint64_t KeyGeneration() const { return keys_->Generation(); }
  KeySet& keys() const { return *keys_; }
  const TokenRules& rules() const { return rules_; }

 private:
  std::shared_ptr<KeySet> keys_;
  TokenRules rules_;
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_TOKEN_H_
