// Cost of LabShare tokens: minting one, verifying one (uncached: what a
// service pays for a token it has not seen), and an Authorizer decision for a
// token it has already verified (what every further call with it costs).
//
//   token-bench [--iterations=2000]
#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/jwks.h"
#include "common/token.h"

ABSL_FLAG(int, iterations, 2000, "Operations per measurement.");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_iterations);
  auto issuer = *labshare::TokenIssuer::FromPem(*labshare::GenerateEcPrivateKeyPem(), "labshare", "labshare");
  auto keys = *labshare::KeySet::FromJson(labshare::JwksJson({issuer->PublicJwk()}));
  labshare::TokenVerifier verifier(keys, labshare::TokenRules{});
  const absl::Time now = absl::Now();
  const labshare::Principal p{"li-wei", "org-uni-a", {labshare::Role::kLabUser}, now + absl::Minutes(15)};
  auto per_op = [&](auto&& f) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) f(i);
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / n;
  };
  std::vector<std::string> tokens(static_cast<size_t>(n));
  const double mint = per_op([&](int i) { tokens[static_cast<size_t>(i)] = issuer->Mint(p, now); });
  size_t ok = 0;
  const double verify = per_op([&](int i) { ok += verifier.Verify(tokens[static_cast<size_t>(i)], now).ok(); });
  labshare::SystemClock clock;
  labshare::Authorizer auth(&verifier, labshare::MethodPolicy().AllowAll("/m"), &clock);
  const std::string bearer = "Bearer " + tokens[0];
  (void)auth.Decide("/m", bearer);
  const double cached = per_op([&](int) { ok += auth.Decide("/m", bearer).ok(); });
  std::printf("mint %.1f us, verify (uncached) %.1f us, authorizer decision (cached token) %.2f us; %zu ok of %d\n",
              mint, verify, cached, ok, 2 * n);
  return ok == static_cast<size_t>(2 * n) ? 0 : 1;
}
