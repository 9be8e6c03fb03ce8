// Verifying signed JWTs (RFC 7519, JWS compact form) against a key set:
// LabShare's own access tokens (ES256, common/token.h) and an OpenID
// provider's ID tokens (RS256 or ES256). This file picks the key, checks
// the signature with OpenSSL (not libjwt's jwt_decode, which refuses every
// typ but "JWT") and checks the claims.
//
// VerifyJwt checks, in order:
//   - at most 8 KiB, three base64url parts, a JSON header without "crit";
//   - the header's alg is one of rules.algorithms (never "none", never a
//     MAC: an HS256 token is refused before any key is looked at);
//   - its typ, if any, is one of rules.types (as media types: "JWT",
//     "jwt" and "application/jwt" are one type), so that another kind of
//     JWT (an RFC 9068 access token "at+jwt", a logout token) is refused;
//   - its kid is in the key set (unknown: the set is refreshed once) and the
//     key's type fits the alg;
//   - the signature;
//   - iss == rules.issuer (when set); aud (a string or an array) contains one
//     of rules.audiences (when any);
//   - iat and exp are present integers; exp - iat <= rules.max_lifetime (when
//     positive); iat <= now + leeway; nbf (if any) <= now + leeway;
//   - now < exp.
// Every failure is UNAUTHENTICATED: INVALID_TOKEN with a message naming the
// check (the signature only when the signature is what fails), or TOKEN_EXPIRED (only for a token that passed every other check);
// except, when rules.stale_keys_unavailable, a kid that is not in the key
// set while the set cannot be refreshed (KeySet::Find's refresh_failed: the
// source is unreachable or unusable), which is UNAVAILABLE JWKS_UNAVAILABLE:
// the token is not known to be invalid, and the same call may succeed once
// the keys can be read again.
// Messages never echo the token.
#ifndef LABSHARE_COMMON_JWT_H_
#define LABSHARE_COMMON_JWT_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/jwks.h"

namespace labshare {

struct JwtRules {
  std::string issuer;                   // "" = any
  std::vector<std::string> audiences;   // empty = any
  std::vector<std::string> algorithms;  // "ES256", "RS256"
  // The header's typ, when present: one of these (RFC 7515 4.1.9: compared
  // case-insensitively, "application/" implied before a value without '/').
  std::vector<std::string> types = {"JWT"};
  absl::Duration max_lifetime;          // zero or negative = no limit
  absl::Duration leeway = absl::Seconds(60);
  // An unknown kid while the key set cannot be refreshed: UNAVAILABLE
  // JWKS_UNAVAILABLE when true, else INVALID_TOKEN like any unknown kid.
  bool stale_keys_unavailable = true;
};

// The claims of a verified token. Cheap to copy.
class JwtClaims {
 public:
  std::string sub() const { return String("sub").value_or(""); }
  std::string iss() const { return String("iss").value_or(""); }
  absl::Time iat() const { return iat_; }
  absl::Time exp() const { return exp_; }
  // The claim if it is a string / a boolean.
  std::optional<std::string> String(std::string_view name) const;
  std::optional<bool> Bool(std::string_view name) const;
  // A string claim as one element, an array's string elements; else empty.
  std::vector<std::string> Strings(std::string_view name) const;
  // The header's kid.
  const std::string& kid() const { return kid_; }

 private:
  friend absl::StatusOr<JwtClaims> VerifyJwt(std::string_view, KeySet&, const JwtRules&, absl::Time);
  std::shared_ptr<const void> json_;  // json_t*, owned
  std::string kid_;
  absl::Time iat_, exp_;
};

absl::StatusOr<JwtClaims> VerifyJwt(std::string_view token, KeySet& keys, const JwtRules& rules, absl::Time now);

// The checks VerifyJwt makes before it looks at a key (the first three
// bullets): whether `token` is a JWT these rules could accept at all,
// with the same INVALID_TOKEN answers. For callers that must fetch a key set
// first (ExchangeToken): a malformed token is refused without it.
struct JwtHeader {
  std::string alg, kid;
  size_t payload_begin = 0, signature_begin = 0;  // offsets in the token
};
absl::StatusOr<JwtHeader> ReadJwtHeader(std::string_view token, const JwtRules& rules);

}  // namespace labshare

#endif  // LABSHARE_COMMON_JWT_H_
