// LabShare access tokens for tests: one process-wide issuer with a freshly
// generated P-256 key, the verifier every in-process Authorizer uses, and the
// files child processes need (a JWKS for --jwks, the private key for a child
// inventory's --token_signing_key_file). Files live in a temporary directory
// removed at exit.
#ifndef LABSHARE_TESTS_SUPPORT_TEST_TOKENS_H_
#define LABSHARE_TESTS_SUPPORT_TEST_TOKENS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/token.h"

namespace labshare::testing {

// The issuer ("labshare", audience "labshare").
const TokenIssuer& TestIssuer();
// Verifies TestIssuer's tokens (issuer and audience "labshare", keys from
// TestJwksFile()). Its maximum lifetime is long (1000 days): in-process
// fixtures with a fake clock mint one token for a run that moves the clock
// across months. Child processes get the services' default (1 h).
const TokenVerifier* TestVerifier();
// JWKS file with TestIssuer's public key.
const std::string& TestJwksFile();
// TestIssuer's private key, mode 0600.
const std::string& TestSigningKeyFile();
// The flags a child service needs to accept TestIssuer's tokens.
std::vector<std::string> TestTokenFlags();

// A token for user/org/roles issued at `now`, valid for `ttl` (at most 1 h
// for the default verifier).
std::string Mint(const std::string& user, const std::string& org, const std::vector<Role>& roles,
                 absl::Duration ttl = absl::Minutes(30), absl::Time now = absl::Now());
// A token for p issued at `issued_at` (exp = p.expires_at).
std::string Mint(const Principal& p, absl::Time issued_at);

// Tokens the services must refuse, each correctly formed and signed where
// it has a signature, keyed by what is wrong with it: another key (its own
// kid), another key under the issuer's kid, wrong aud, wrong iss, a lifetime
// over `max_lifetime`, alg none, HS256 keyed with the issuer's public key,
// the service role. Issued at `now`, for users/ana of organizations/lab as
// consortium admin.
std::vector<std::pair<std::string, std::string>> ForgedTokens(absl::Time now,
                                                              absl::Duration max_lifetime = absl::Hours(24 * 1000));

// A directory of its own for a test (removed at exit), e.g. for extra keys.
std::string TestTempDir();
// Writes `text` to dir/name with `mode`; returns the path.
std::string WriteTestFile(const std::string& dir, const std::string& name, const std::string& text,
                          unsigned mode = 0600);

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_SUPPORT_TEST_TOKENS_H_
