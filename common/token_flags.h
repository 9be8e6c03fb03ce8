// The token flags every service shares, and the issuer / verifier built from
// them:
//   --jwks                  JWKS file or https:// URL of the issuer's public keys
//   --jwks_ca_file          CA certificates (PEM) for an https:// --jwks; empty: the system's
//   --token_issuer          expected iss (default "labshare")
//   --token_audience        expected aud (default "labshare")
//   --token_max_lifetime    longest exp - iat accepted (default 1h)
//   --token_signing_key_file  the issuer's private key (labshare-inventory only)
#ifndef LABSHARE_COMMON_TOKEN_FLAGS_H_
#define LABSHARE_COMMON_TOKEN_FLAGS_H_

#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "absl/time/time.h"
#include "common/token.h"

ABSL_DECLARE_FLAG(std::string, jwks);
ABSL_DECLARE_FLAG(std::string, jwks_ca_file);
ABSL_DECLARE_FLAG(std::string, token_issuer);
ABSL_DECLARE_FLAG(std::string, token_audience);
ABSL_DECLARE_FLAG(absl::Duration, token_max_lifetime);
ABSL_DECLARE_FLAG(std::string, token_signing_key_file);

namespace labshare {

// The rules from --token_issuer, --token_audience, --token_max_lifetime.
TokenRules TokenRulesFromFlags();
// Keys from --jwks (and --jwks_ca_file); exits with status 2 and a message
// naming the flag when the set cannot be opened.
std::unique_ptr<TokenVerifier> TokenVerifierFromFlags();
// The issuer from --token_signing_key_file; exits with status 2 and a
// message when the flag is empty or the key unusable (e.g. a file others can
// read: SECRET_FILE_EXPOSED).
std::unique_ptr<TokenIssuer> TokenIssuerFromFlags();

}  // namespace labshare

#endif  // LABSHARE_COMMON_TOKEN_FLAGS_H_
