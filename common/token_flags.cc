#include "common/token_flags.h"

#include <cstdlib>
#include <iostream>

#include "absl/flags/flag.h"
#include "common/error.h"

ABSL_FLAG(std::string, jwks, "",
          "JWKS file or https:// URL with the token issuer's public keys (labshare-token --jwks writes "
          "one). Every service verifies bearer tokens with them; a file is re-read when it changes.");
ABSL_FLAG(std::string, jwks_ca_file, "", "CA certificates (PEM) to trust for an https:// --jwks; empty: the system's.");
ABSL_FLAG(std::string, token_issuer, "labshare", "The iss claim accepted (and written) in LabShare tokens.");
ABSL_FLAG(std::string, token_audience, "labshare", "The aud claim required (and written) in LabShare tokens.");
ABSL_FLAG(absl::Duration, token_max_lifetime, absl::Hours(1),
          "Longest token lifetime (exp - iat) accepted; longer tokens are refused.");
ABSL_FLAG(std::string, token_signing_key_file, "",
          "labshare-inventory only: the token issuer's EC P-256 private key (PEM, mode 0600; "
          "labshare-token --generate_key=FILE makes one). Re-read when it changes.");

namespace labshare {
namespace {

[[noreturn]] void Exit(const std::string& message) {
  std::cerr << message << std::endl;
  std::exit(2);
}

}  // namespace

TokenRules TokenRulesFromFlags() {
  TokenRules rules;
  rules.issuer = absl::GetFlag(FLAGS_token_issuer);
  rules.audience = absl::GetFlag(FLAGS_token_audience);
  rules.max_lifetime = absl::GetFlag(FLAGS_token_max_lifetime);
  if (rules.issuer.empty() || rules.audience.empty()) Exit("--token_issuer and --token_audience must not be empty");
  if (rules.max_lifetime <= absl::ZeroDuration() || rules.max_lifetime == absl::InfiniteDuration()) {
    Exit("--token_max_lifetime must be a positive, finite duration, e.g. 1h");
  }
  return rules;
}

std::unique_ptr<TokenVerifier> TokenVerifierFromFlags() {
  const std::string jwks = absl::GetFlag(FLAGS_jwks);
  if (jwks.empty()) {
    Exit("--jwks is required: the JWKS file or https:// URL of the token issuer's public keys "
         "(labshare-token --jwks KEY.pem > jwks.json makes one from the signing key)");
  }
  HttpOptions http;
  http.ca_file = absl::GetFlag(FLAGS_jwks_ca_file);
  auto keys = KeySet::Open(jwks, http);
  if (!keys.ok()) Exit("--jwks: " + std::string(keys.status().message()));
  return std::make_unique<TokenVerifier>(*std::move(keys), TokenRulesFromFlags());
}

std::unique_ptr<TokenIssuer> TokenIssuerFromFlags() {
  const std::string file = absl::GetFlag(FLAGS_token_signing_key_file);
  if (file.empty()) {
    Exit("--token_signing_key_file is required: the token issuer's private key "
         "(labshare-token --generate_key=FILE makes one)");
  }
  const TokenRules rules = TokenRulesFromFlags();
  auto issuer = TokenIssuer::FromFile(file, rules.issuer, rules.audience);
  if (!issuer.ok()) Exit("--token_signing_key_file: " + std::string(issuer.status().message()));
  return *std::move(issuer);
}

}  // namespace labshare
