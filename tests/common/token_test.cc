// LabShare tokens (ES256 through libjwt), generic JWT verification, key sets
// (file and https URL) and the HTTP client.
#include "common/token.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/http_client.h"
#include "common/jwks.h"
#include "common/jwt.h"
#include "gtest/gtest.h"
#include "tests/support/https_file_server.h"
#include "tests/support/test_tokens.h"

namespace labshare {
namespace {

using ::labshare::testing::HttpsFileServer;
using ::labshare::testing::TestTempDir;
using ::labshare::testing::WriteTestFile;

const absl::Time kNow = absl::FromUnixSeconds(1798761600);  // 2027-01-01T00:00:00Z

std::string B64(std::string_view s) { return absl::WebSafeBase64Escape(absl::string_view(s.data(), s.size())); }
std::string Unb64(std::string_view s) {
  std::string out;
  EXPECT_TRUE(absl::WebSafeBase64Unescape(absl::string_view(s.data(), s.size()), &out)) << s;
  return out;
}

std::shared_ptr<EVP_PKEY> NewEcKey() {
  return std::shared_ptr<EVP_PKEY>(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free);
}
std::shared_ptr<EVP_PKEY> NewRsaKey() {
  return std::shared_ptr<EVP_PKEY>(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}), EVP_PKEY_free);
}
std::string PrivatePem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  return pem;
}

// A JWS signed independently of libjwt: OpenSSL directly. alg "ES256" (raw
// R||S as JOSE wants), "RS256", "HS256" (key = hmac_secret), "none".
std::string SignJws(std::string_view header, std::string_view payload, EVP_PKEY* key, std::string_view alg,
                    std::string_view hmac_secret = "") {
  const std::string input = absl::StrCat(B64(header), ".", B64(payload));
  if (alg == "none") return input + ".";
  if (alg == "HS256") {
    unsigned char mac[32];
    size_t len = 0;
    EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, hmac_secret.data(), hmac_secret.size(),
              reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, sizeof mac, &len);
    return absl::StrCat(input, ".", B64(std::string_view(reinterpret_cast<char*>(mac), len)));
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
  size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (alg == "ES256") {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* der = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    unsigned char raw[64];
    BN_bn2binpad(ECDSA_SIG_get0_r(der), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(der), raw + 32, 32);
    ECDSA_SIG_free(der);
    sig.assign(reinterpret_cast<char*>(raw), 64);
  }
  return absl::StrCat(input, ".", B64(sig));
}

// Verifies an ES256 JWS independently of libjwt.
bool VerifyEs256Independently(const std::string& token, EVP_PKEY* key) {
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) return false;
  const std::string raw = Unb64(parts[2]);
  if (raw.size() != 64) return false;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  ECDSA_SIG_set0(sig, BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr),
                 BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr));
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  const std::string input = parts[0] + "." + parts[1];
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key);
  const int ok = EVP_DigestVerify(ctx, der, static_cast<size_t>(der_len),
                                  reinterpret_cast<const unsigned char*>(input.data()), input.size());
  EVP_MD_CTX_free(ctx);
  OPENSSL_free(der);
  return ok == 1;
}

std::string Claims(const std::string& extra = "", int64_t iat = absl::ToUnixSeconds(kNow) - 60,
                   int64_t exp = absl::ToUnixSeconds(kNow) + 600) {
  return absl::StrCat(R"({"iss":"labshare","aud":"labshare","sub":"li-wei","org":"org-uni-a","roles":["lab_user"],)",
                      extra, R"("iat":)", iat, R"(,"exp":)", exp, "}");
}

void ExpectReason(const absl::Status& s, absl::StatusCode code, const std::string& reason,
                  const std::string& message_part = "") {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(ErrorReason(s), reason) << s;
  if (!message_part.empty()) {
    EXPECT_TRUE(absl::StrContains(s.message(), message_part)) << s;
  }
}

// An issuer key and a verifier that knows it (plus any extra keys).
struct Fixture {
  std::shared_ptr<EVP_PKEY> key = NewEcKey();
  std::unique_ptr<TokenIssuer> issuer;
  std::shared_ptr<KeySet> keys;
  std::unique_ptr<TokenVerifier> verifier;

  explicit Fixture(std::vector<std::string> extra_jwks = {}) {
    issuer = *TokenIssuer::FromPem(PrivatePem(key.get()), "labshare", "labshare");
    extra_jwks.push_back(PublicJwkJson(key.get()));
    keys = *KeySet::FromJson(JwksJson(extra_jwks));
    verifier = std::make_unique<TokenVerifier>(keys, TokenRules{});
  }
  std::string Header() const { return absl::StrCat(R"({"alg":"ES256","typ":"JWT","kid":")", issuer->kid(), "\"}"); }
  std::string Sign(const std::string& payload) const { return SignJws(Header(), payload, key.get(), "ES256"); }
};

Principal Ana(absl::Duration ttl = absl::Minutes(15)) {
  return Principal{"li-wei", "org-uni-a", {Role::kLabUser, Role::kAuditor}, kNow + ttl};
}

// ---------------------------------------------------------------------------
// Minting.

TEST(TokenIssuer, MintsAnEs256JwtWithKidIssAudAndJti) {
  Fixture f;
  const std::string token = f.issuer->Mint(Ana(), kNow);
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  ASSERT_EQ(parts.size(), 3u);
  const std::string header = Unb64(parts[0]);
  EXPECT_TRUE(absl::StrContains(header, R"("alg":"ES256")")) << header;
  EXPECT_TRUE(absl::StrContains(header, R"("typ":"JWT")")) << header;
  EXPECT_TRUE(absl::StrContains(header, absl::StrCat(R"("kid":")", JwkThumbprint(f.key.get()), "\""))) << header;
  const std::string claims = Unb64(parts[1]);
  for (const std::string& want :
       {std::string(R"("iss":"labshare")"), std::string(R"("aud":"labshare")"), std::string(R"("sub":"li-wei")"),
        std::string(R"("org":"org-uni-a")"), std::string(R"("roles":["lab_user","auditor"])"),
        absl::StrCat(R"("iat":)", absl::ToUnixSeconds(kNow)),
        absl::StrCat(R"("exp":)", absl::ToUnixSeconds(kNow + absl::Minutes(15))), std::string(R"("jti":")")}) {
    EXPECT_TRUE(absl::StrContains(claims, want)) << want << " in " << claims;
  }
  EXPECT_EQ(Unb64(parts[2]).size(), 64u);  // JOSE R||S, not DER
  EXPECT_TRUE(VerifyEs256Independently(token, f.key.get()));
  EXPECT_NE(f.issuer->Mint(Ana(), kNow), token) << "every token has its own jti";
}

TEST(TokenIssuer, OmitsAnEmptyOrganization) {
  Fixture f;
  Principal p = Ana();
  p.organization_id.clear();
  std::vector<std::string> parts = absl::StrSplit(f.issuer->Mint(p, kNow), '.');
  EXPECT_FALSE(absl::StrContains(Unb64(parts[1]), "\"org\""));
}

TEST(TokenIssuer, KidIsTheRfc7638Thumbprint) {
  // RFC 7638 §3.1's example is RSA; this checks our canonical form by hand.
  auto key = NewEcKey();
  BIGNUM *x = nullptr, *y = nullptr;
  EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_EC_PUB_X, &x);
  EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_EC_PUB_Y, &y);
  unsigned char xb[32], yb[32];
  BN_bn2binpad(x, xb, 32);
  BN_bn2binpad(y, yb, 32);
  BN_free(x);
  BN_free(y);
  const std::string canonical =
      absl::StrCat(R"({"crv":"P-256","kty":"EC","x":")", B64(std::string_view(reinterpret_cast<char*>(xb), 32)),
                   R"(","y":")", B64(std::string_view(reinterpret_cast<char*>(yb), 32)), "\"}");
  unsigned char d[32];
  unsigned int n = 0;
  EVP_Digest(canonical.data(), canonical.size(), d, &n, EVP_sha256(), nullptr);
  EXPECT_EQ(JwkThumbprint(key.get()), B64(std::string_view(reinterpret_cast<char*>(d), n)));
}

TEST(TokenIssuer, RefusesAKeyFileOthersCanRead) {
  const std::string dir = TestTempDir();
  const std::string file = WriteTestFile(dir, "k.pem", *GenerateEcPrivateKeyPem(), 0644);
  auto issuer = TokenIssuer::FromFile(file, "labshare", "labshare");
  ExpectReason(issuer.status(), absl::StatusCode::kFailedPrecondition, "SECRET_FILE_EXPOSED", "chmod 600");
}

TEST(TokenIssuer, RefusesAKeyThatIsNotP256) {
  const std::string dir = TestTempDir();
  auto rsa = NewRsaKey();
  const std::string file = WriteTestFile(dir, "k.pem", PrivatePem(rsa.get()), 0600);
  ExpectReason(TokenIssuer::FromFile(file, "labshare", "labshare").status(), absl::StatusCode::kInvalidArgument,
               "INVALID_SIGNING_KEY");
  ExpectReason(TokenIssuer::FromFile(dir + "/missing.pem", "labshare", "labshare").status(),
               absl::StatusCode::kNotFound, "SECRET_FILE_NOT_FOUND");
}

TEST(TokenIssuer, ReReadsTheKeyFileWhenItChanges) {
  const std::string dir = TestTempDir();
  const std::string file = WriteTestFile(dir, "k.pem", *GenerateEcPrivateKeyPem(), 0600);
  auto issuer = *TokenIssuer::FromFile(file, "labshare", "labshare");
  const std::string old_kid = issuer->kid();
  auto next = NewEcKey();
  WriteTestFile(dir, "k.pem", PrivatePem(next.get()), 0600);
  EXPECT_EQ(issuer->kid(), JwkThumbprint(next.get()));
  EXPECT_NE(issuer->kid(), old_kid);
  EXPECT_TRUE(VerifyEs256Independently(issuer->Mint(Ana(), kNow), next.get()));
  // A broken replacement: the previous key stays in use.
  WriteTestFile(dir, "k.pem", "not a key", 0600);
  EXPECT_EQ(issuer->kid(), JwkThumbprint(next.get()));
  WriteTestFile(dir, "k.pem", PrivatePem(next.get()), 0644);  // exposed: refused, key kept
  EXPECT_TRUE(VerifyEs256Independently(issuer->Mint(Ana(), kNow), next.get()));
}

// ---------------------------------------------------------------------------
// Verification.

TEST(TokenVerifier, AcceptsItsIssuersTokens) {
  Fixture f;
  auto p = f.verifier->Verify(f.issuer->Mint(Ana(), kNow), kNow);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->user_id, "li-wei");
  EXPECT_EQ(p->organization_id, "org-uni-a");
  EXPECT_EQ(p->roles, (std::vector<Role>{Role::kLabUser, Role::kAuditor}));
  EXPECT_EQ(p->expires_at, kNow + absl::Minutes(15));
}

TEST(TokenVerifier, AcceptsAnIndependentlySignedToken) {
  Fixture f;
  auto p = f.verifier->Verify(f.Sign(Claims()), kNow);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->user_id, "li-wei");
}

TEST(TokenVerifier, RefusesATokenOfAnotherKey) {
  Fixture f;
  Fixture other;
  ExpectReason(f.verifier->Verify(other.issuer->Mint(Ana(), kNow), kNow).status(),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "key id");
}

TEST(TokenVerifier, RefusesAnotherKeyClaimingTheIssuersKid) {
  Fixture f;
  auto attacker = NewEcKey();
  const std::string token = SignJws(f.Header(), Claims(), attacker.get(), "ES256");
  ExpectReason(f.verifier->Verify(token, kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "signature");
}

TEST(TokenVerifier, RefusesAlgNoneAndHs256) {
  Fixture f;
  const std::string kid = f.issuer->kid();
  ExpectReason(
      f.verifier->Verify(SignJws(absl::StrCat(R"({"alg":"none","kid":")", kid, "\"}"), Claims(), nullptr, "none"), kNow)
          .status(),
      absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "algorithm must be ES256");
  // The classic confusion: HMAC keyed with the public key's PEM.
  auto jwk = f.keys->Find(kid);
  ASSERT_NE(jwk, nullptr);
  const std::string hs = SignJws(absl::StrCat(R"({"alg":"HS256","typ":"JWT","kid":")", kid, "\"}"), Claims(), nullptr,
                                 "HS256", jwk->pem);
  ExpectReason(f.verifier->Verify(hs, kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "algorithm must be ES256");
  // ES256 in the header, but the signature part is an HMAC.
  std::vector<std::string> parts = absl::StrSplit(hs, '.');
  const std::string mixed = absl::StrCat(B64(f.Header()), ".", parts[1], ".", parts[2]);
  ExpectReason(f.verifier->Verify(mixed, kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN");
}

TEST(TokenVerifier, RefusesWrongIssuerAudienceAndOverlongLifetime) {
  Fixture f;
  auto verify = [&](const std::string& payload) { return f.verifier->Verify(f.Sign(payload), kNow).status(); };
  const int64_t now = absl::ToUnixSeconds(kNow);
  ExpectReason(verify(absl::StrReplaceAll(Claims(), {{R"("iss":"labshare")", R"("iss":"evil")"}})),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "issuer");
  ExpectReason(verify(absl::StrReplaceAll(Claims(), {{R"("iss":"labshare",)", ""}})),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "issuer");
  ExpectReason(verify(absl::StrReplaceAll(Claims(), {{R"("aud":"labshare")", R"("aud":"other")"}})),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "audience");
  ExpectReason(verify(absl::StrReplaceAll(Claims(), {{R"("aud":"labshare",)", ""}})),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "audience");
  EXPECT_TRUE(verify(absl::StrReplaceAll(Claims(), {{R"("aud":"labshare")", R"("aud":["x","labshare"])"}})).ok());
  // One hour is the maximum; one second more is refused, also a 100-year token.
  EXPECT_TRUE(verify(Claims("", now - 60, now - 60 + 3600)).ok());
  ExpectReason(verify(Claims("", now - 60, now - 60 + 3601)), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "lifetime");
  ExpectReason(verify(Claims("", now, now + 100LL * 365 * 86400)), absl::StatusCode::kUnauthenticated,
               "INVALID_TOKEN", "lifetime");
}

TEST(TokenVerifier, RefusesTheServiceRoleAndUnknownRoles) {
  Fixture f;
  Principal p = Ana();
  p.roles = {Role::kService};
  ExpectReason(f.verifier->Verify(f.issuer->Mint(p, kNow), kNow).status(), absl::StatusCode::kUnauthenticated,
               "INVALID_TOKEN", "service role");
  p.roles = {Role::kConsortiumAdmin, Role::kService};
  ExpectReason(f.verifier->Verify(f.issuer->Mint(p, kNow), kNow).status(), absl::StatusCode::kUnauthenticated,
               "INVALID_TOKEN", "service role");
  ExpectReason(f.verifier->Verify(f.Sign(absl::StrReplaceAll(Claims(), {{"lab_user", "root"}})), kNow).status(),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "unknown role");
}

TEST(TokenVerifier, ChecksTimes) {
  Fixture f;
  auto verify = [&](const std::string& payload) { return f.verifier->Verify(f.Sign(payload), kNow).status(); };
  const int64_t now = absl::ToUnixSeconds(kNow);
  ExpectReason(verify(Claims("", now - 600, now)), absl::StatusCode::kUnauthenticated, "TOKEN_EXPIRED");
  EXPECT_TRUE(verify(Claims("", now - 600, now + 1)).ok());
  EXPECT_TRUE(verify(Claims("", now + 60, now + 600)).ok()) << "60 s of clock skew";
  ExpectReason(verify(Claims("", now + 61, now + 600)), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "future");
  ExpectReason(verify(R"({"iss":"labshare","aud":"labshare","sub":"a","exp":1898761600})"),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "iat");
  ExpectReason(verify(absl::StrCat(R"({"iss":"labshare","aud":"labshare","sub":"a","iat":)", now, "}")),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "exp");
  ExpectReason(verify(absl::StrCat(R"({"iss":"labshare","aud":"labshare","sub":"a","iat":")", now,
                                   R"(","exp":)", now + 60, "}")),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "iat");
  // Expiry is reported only for a token that is otherwise valid.
  ExpectReason(verify(absl::StrReplaceAll(Claims("", now - 600, now - 1), {{"labshare\",\"sub", "x\",\"sub"}})),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN");
}

TEST(TokenVerifier, RefusesMalformedTokens) {
  Fixture f;
  const std::string good = f.issuer->Mint(Ana(), kNow);
  std::vector<std::string> parts = absl::StrSplit(good, '.');
  for (const std::string& bad :
       {std::string(""), std::string("abc"), parts[0] + "." + parts[1], good + ".x", good + "=",
        parts[0] + ".!!!." + parts[2], std::string(9000, 'a'), B64("[1]") + "." + parts[1] + "." + parts[2],
        parts[0] + "." + B64("{\"sub\":\"li-wei\"}") + "." + parts[2],
        SignJws(absl::StrCat(R"({"alg":"ES256","crit":["x"],"kid":")", f.issuer->kid(), "\"}"), Claims(), f.key.get(),
                "ES256"),
        f.Sign(absl::StrReplaceAll(Claims(), {{R"("sub":"li-wei",)", ""}})), f.Sign("not json")}) {
    SCOPED_TRACE(bad.substr(0, 200));
    ExpectReason(f.verifier->Verify(bad, kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN");
  }
  // A flipped bit anywhere in the signature.
  std::string sig = Unb64(parts[2]);
  sig[10] = static_cast<char>(sig[10] ^ 1);
  ExpectReason(f.verifier->Verify(parts[0] + "." + parts[1] + "." + B64(sig), kNow).status(),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "signature");
}

TEST(VerifyJwt, VerifiesProviderIdTokensWithRs256AndEs256) {
  auto rsa = NewRsaKey();
  auto ec = NewEcKey();
  auto keys = *KeySet::FromJson(JwksJson({PublicJwkJson(rsa.get()), PublicJwkJson(ec.get())}));
  JwtRules rules;
  rules.issuer = "https://idp.example";
  rules.audiences = {"labshare-cli", "labshare-console"};
  rules.algorithms = {"RS256", "ES256"};
  const int64_t now = absl::ToUnixSeconds(kNow);
  const std::string payload =
      absl::StrCat(R"({"iss":"https://idp.example","aud":"labshare-console","sub":"p-17","email":"a@b.c",)",
                   R"("email_verified":true,"groups":["x","y"],"iat":)", now, R"(,"exp":)", now + 300, "}");
  const std::string rs = SignJws(absl::StrCat(R"({"alg":"RS256","kid":")", JwkThumbprint(rsa.get()), "\"}"), payload,
                                 rsa.get(), "RS256");
  auto claims = VerifyJwt(rs, *keys, rules, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->sub(), "p-17");
  EXPECT_EQ(claims->iss(), "https://idp.example");
  EXPECT_EQ(claims->String("email"), "a@b.c");
  EXPECT_EQ(claims->Bool("email_verified"), true);
  EXPECT_EQ(claims->Bool("email"), std::nullopt);
  EXPECT_EQ(claims->Strings("groups"), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(claims->Strings("aud"), (std::vector<std::string>{"labshare-console"}));
  EXPECT_EQ(claims->exp(), kNow + absl::Seconds(300));
  EXPECT_EQ(claims->kid(), JwkThumbprint(rsa.get()));
  const std::string es = SignJws(absl::StrCat(R"({"alg":"ES256","kid":")", JwkThumbprint(ec.get()), "\"}"), payload,
                                 ec.get(), "ES256");
  EXPECT_TRUE(VerifyJwt(es, *keys, rules, kNow).ok());
  // An RS256 header naming the EC key, or the other way round: refused.
  const std::string swapped = SignJws(absl::StrCat(R"({"alg":"RS256","kid":")", JwkThumbprint(ec.get()), "\"}"),
                                      payload, rsa.get(), "RS256");
  ExpectReason(VerifyJwt(swapped, *keys, rules, kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "does not sign");
  rules.algorithms = {"ES256"};
  ExpectReason(VerifyJwt(rs, *keys, rules, kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "algorithm");
}

// A provider's ID token may say what it is in its header's typ: "JWT",
// "application/jwt", "JOSE" or nothing (RFC 7519 5.1, RFC 7515 4.1.9), in
// any case. libjwt's jwt_decode refused all but "JWT" and reported it as a
// bad signature. Another kind of token ("at+jwt") stays refused, by name.
TEST(VerifyJwt, AcceptsEveryTypOfAJwtAndRefusesOtherKindsOfToken) {
  auto rsa = NewRsaKey();
  auto ec = NewEcKey();
  auto keys = *KeySet::FromJson(JwksJson({PublicJwkJson(rsa.get()), PublicJwkJson(ec.get())}));
  JwtRules rules;  // as ExchangeToken's
  rules.issuer = "https://idp.example";
  rules.audiences = {"labshare-console"};
  rules.algorithms = {"RS256", "ES256"};
  rules.types = {"JWT", "JOSE"};
  const int64_t now = absl::ToUnixSeconds(kNow);
  const std::string payload = absl::StrCat(R"({"iss":"https://idp.example","aud":"labshare-console","sub":"p-17",)",
                                           R"("iat":)", now, R"(,"exp":)", now + 300, "}");
  auto sign = [&](const std::string& alg, const std::string& typ_member) {
    EVP_PKEY* key = alg == "RS256" ? rsa.get() : ec.get();
    return SignJws(absl::StrCat(R"({"alg":")", alg, "\",", typ_member, R"("kid":")", JwkThumbprint(key), "\"}"), payload,
                   key, alg);
  };
  for (const std::string alg : {"RS256", "ES256"}) {
    for (const std::string typ : {"", R"("typ":"JWT",)", R"("typ":"jwt",)", R"("typ":"application/jwt",)",
                                  R"("typ":"Application/JWT",)", R"("typ":"JOSE",)", R"("typ":"application/jose",)"}) {
      SCOPED_TRACE(alg + " " + typ);
      auto claims = VerifyJwt(sign(alg, typ), *keys, rules, kNow);
      ASSERT_TRUE(claims.ok()) << claims.status();
      EXPECT_EQ(claims->sub(), "p-17");
    }
    for (const std::string typ : {R"("typ":"at+jwt",)", R"("typ":"application/at+jwt",)", R"("typ":"logout+jwt",)",
                                  R"("typ":"JOSE+JSON",)", R"("typ":"",)", R"("typ":7,)", R"("typ":null,)"}) {
      SCOPED_TRACE(alg + " " + typ);
      ExpectReason(VerifyJwt(sign(alg, typ), *keys, rules, kNow).status(), absl::StatusCode::kUnauthenticated,
                   "INVALID_TOKEN", "the header's type (typ) must be JWT or JOSE");
    }
  }
}

// A LabShare access token is typed "JWT" (common/token.h); its check is as
// strict as before: "JWT" in any spelling of that media type, or no typ.
TEST(TokenVerifier, AcceptsOnlyTheJwtTyp) {
  Fixture f;
  auto sign = [&](const std::string& typ_member) {
    return SignJws(absl::StrCat(R"({"alg":"ES256",)", typ_member, R"("kid":")", f.issuer->kid(), "\"}"), Claims(),
                   f.key.get(), "ES256");
  };
  for (const std::string typ : {"", R"("typ":"JWT",)", R"("typ":"jwt",)", R"("typ":"application/jwt",)"}) {
    EXPECT_TRUE(f.verifier->Verify(sign(typ), kNow).ok()) << typ;
  }
  for (const std::string typ : {R"("typ":"JOSE",)", R"("typ":"at+jwt",)", R"("typ":"id_token+jwt",)"}) {
    SCOPED_TRACE(typ);
    ExpectReason(f.verifier->Verify(sign(typ), kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
                 "the header's type (typ) must be JWT (or no typ)");
  }
}

// Each refusal names the check that failed; the signature only when it is
// the signature (libjwt's jwt_decode answered a payload that is not JSON,
// a typ and a bad signature alike, all reported as the signature).
TEST(TokenVerifier, MessagesNameTheCheckThatFailed) {
  Fixture f;
  for (const std::string payload : {"not json", "[1]", "\"text\""}) {
    const absl::Status s = f.verifier->Verify(f.Sign(payload), kNow).status();
    ExpectReason(s, absl::StatusCode::kUnauthenticated, "INVALID_TOKEN", "the payload is not a JSON object");
    EXPECT_FALSE(absl::StrContains(s.message(), "signature")) << s;
  }
  const std::string good = f.Sign(Claims());
  EXPECT_TRUE(f.verifier->Verify(good, kNow).ok());
  std::vector<std::string> parts = absl::StrSplit(good, '.');
  // Another payload under the first one's signature.
  ExpectReason(f.verifier->Verify(parts[0] + "." + B64(Claims("\"jti\":\"x\",")) + "." + parts[2], kNow).status(),
               absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "the signature does not verify with the issuer's key");
}

// ---------------------------------------------------------------------------
// Key sets.

TEST(KeySet, RefusesWhatIsNotAUsableJwks) {
  const std::string dir = TestTempDir();
  ExpectReason(KeySet::Open(dir + "/none.json").status(), absl::StatusCode::kNotFound, "JWKS_UNAVAILABLE");
  ExpectReason(KeySet::Open(WriteTestFile(dir, "a.json", "{}", 0644)).status(), absl::StatusCode::kInvalidArgument,
               "INVALID_JWKS");
  ExpectReason(KeySet::Open(WriteTestFile(dir, "b.json", R"({"keys":[]})", 0644)).status(),
               absl::StatusCode::kInvalidArgument, "INVALID_JWKS");
  ExpectReason(KeySet::Open(WriteTestFile(dir, "c.json",
                                          R"({"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]})", 0644))
                   .status(),
               absl::StatusCode::kInvalidArgument, "INVALID_JWKS");
  // A point not on the curve.
  const std::string zeros = B64(std::string(32, '\x01'));
  ExpectReason(KeySet::Open(WriteTestFile(dir, "d.json",
                                          absl::StrCat(R"({"keys":[{"kty":"EC","crv":"P-256","x":")", zeros,
                                                       R"(","y":")", zeros, "\"}]}"),
                                          0644))
                   .status(),
               absl::StatusCode::kInvalidArgument, "INVALID_JWKS");
  ExpectReason(KeySet::Open("http://127.0.0.1:1/jwks.json").status(), absl::StatusCode::kInvalidArgument,
               "INVALID_JWKS", "https");
  ExpectReason(KeySet::Open("").status(), absl::StatusCode::kInvalidArgument, "INVALID_JWKS");
  // Encryption keys and other curves are skipped, not fatal.
  auto ec = NewEcKey();
  auto mixed = KeySet::Open(WriteTestFile(
      dir, "e.json",
      JwksJson({R"({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})",
                R"({"kty":"EC","crv":"P-384","x":"AA","y":"AA"})", PublicJwkJson(ec.get())}),
      0644));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ((*mixed)->Kids(), std::vector<std::string>{JwkThumbprint(ec.get())});
}

TEST(KeySet, FileIsReReadWhenItChanges) {
  const std::string dir = TestTempDir();
  auto a = NewEcKey();
  auto b = NewEcKey();
  const std::string file = WriteTestFile(dir, "jwks.json", JwksJson({PublicJwkJson(a.get())}), 0644);
  auto keys = *KeySet::Open(file);
  const uint64_t g0 = keys->Generation();
  EXPECT_NE(keys->Find(JwkThumbprint(a.get())), nullptr);
  std::string why;
  EXPECT_EQ(keys->Find(JwkThumbprint(b.get()), &why), nullptr);
  EXPECT_TRUE(absl::StrContains(why, "not in the key set")) << why;
  EXPECT_EQ(keys->Generation(), g0);
  WriteTestFile(dir, "jwks.json", JwksJson({PublicJwkJson(a.get()), PublicJwkJson(b.get())}), 0644);
  EXPECT_NE(keys->Find(JwkThumbprint(b.get())), nullptr);
  const uint64_t g1 = keys->Generation();
  EXPECT_NE(g1, g0);
  WriteTestFile(dir, "jwks.json", JwksJson({PublicJwkJson(b.get())}), 0644);
  EXPECT_NE(keys->Generation(), g1);
  EXPECT_EQ(keys->Find(JwkThumbprint(a.get())), nullptr);
  // A broken file keeps the keys it had.
  WriteTestFile(dir, "jwks.json", "{\"keys\":[", 0644);
  EXPECT_NE(keys->Find(JwkThumbprint(b.get())), nullptr);
}

TEST(KeySet, ConcurrentLookupsOfAnUnknownKidShareOneRefresh) {
  const std::string dir = TestTempDir();
  auto a = NewEcKey();
  const std::string file = WriteTestFile(dir, "jwks.json", JwksJson({PublicJwkJson(a.get())}), 0644);
  auto keys = *KeySet::Open(file);
  std::vector<std::thread> threads;
  std::atomic<int> found{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 50; ++k) found += keys->Find(k % 2 ? "nope" : JwkThumbprint(a.get())) != nullptr;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(found.load(), 8 * 25);
}

// An unknown kid is "cannot refresh" (not "unknown") while the set's source
// cannot be read, also when the one-second limit skips the re-read right
// after a failed one; once a read succeeds, an unknown kid is unknown again.
TEST(KeySet, UnknownKidWhileTheSetCannotBeRefreshedIsReportedAsSuch) {
  const std::string dir = TestTempDir();
  auto a = NewEcKey();
  auto b = NewEcKey();
  const std::string file = WriteTestFile(dir, "jwks.json", JwksJson({PublicJwkJson(a.get())}), 0644);
  auto keys = *KeySet::Open(file);
  std::string why;
  bool failed = true;
  EXPECT_EQ(keys->Find(JwkThumbprint(b.get()), &why, &failed), nullptr);
  EXPECT_FALSE(failed) << why;

  ASSERT_EQ(::unlink(file.c_str()), 0);
  for (int i = 0; i < 2; ++i) {  // the read, then a lookup the limit skips
    why.clear();
    failed = false;
    EXPECT_EQ(keys->Find(JwkThumbprint(b.get()), &why, &failed), nullptr);
    EXPECT_TRUE(failed) << i;
    EXPECT_TRUE(absl::StrContains(why, "could not be refreshed")) << why;
  }
  // Keys already known still verify.
  failed = true;
  EXPECT_NE(keys->Find(JwkThumbprint(a.get()), nullptr, &failed), nullptr);

  // Verifying: UNAVAILABLE for a provider's token, INVALID_TOKEN for
  // LabShare's own access tokens (their documented contract).
  auto signer = *TokenIssuer::FromPem(PrivatePem(b.get()), "labshare", "labshare");
  const Principal p{"li-wei", "", {Role::kLabUser}, kNow + absl::Minutes(5)};
  const std::string token = signer->Mint(p, kNow);
  JwtRules rules;
  rules.algorithms = {"ES256"};
  ExpectReason(VerifyJwt(token, *keys, rules, kNow).status(), absl::StatusCode::kUnavailable, "JWKS_UNAVAILABLE",
               "could not be refreshed");
  TokenVerifier verifier(keys, TokenRules{});
  ExpectReason(verifier.Verify(token, kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "could not be refreshed");

  // Readable again (without b): b is unknown, and VerifyJwt says so.
  WriteTestFile(dir, "jwks.json", JwksJson({PublicJwkJson(a.get())}), 0644);
  why.clear();
  failed = true;
  EXPECT_EQ(keys->Find(JwkThumbprint(b.get()), &why, &failed), nullptr);
  EXPECT_FALSE(failed) << why;
  EXPECT_TRUE(absl::StrContains(why, "is not in the key set")) << why;
  ExpectReason(VerifyJwt(token, *keys, rules, kNow).status(), absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
               "is not in the key set");
}

// A throwaway CA and a localhost server certificate made with the openssl tool.
struct TestCa {
  std::string dir, ca, cert, key;
  explicit TestCa(const std::string& d) : dir(d), ca(d + "/ca.pem"), cert(d + "/server.pem"), key(d + "/server.key") {
    const std::string cmd = absl::StrCat(
        "cd ", dir, " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key ",
        "-out ca.pem -subj /CN=test-ca -days 1 2>/dev/null && ",
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr ",
        "-subj /CN=localhost 2>/dev/null && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > ext && ",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 ",
        "-extfile ext 2>/dev/null");
    EXPECT_EQ(std::system(cmd.c_str()), 0);
  }
};

TEST(KeySet, UrlIsFetchedOverHttpsAndRefreshedOnAnUnknownKid) {
  const std::string dir = TestTempDir();
  TestCa ca(dir);
  const std::string www = dir + "/www";
  ASSERT_EQ(::mkdir(www.c_str(), 0755), 0);
  auto a = NewEcKey();
  auto b = NewEcKey();
  WriteTestFile(www, "jwks.json", JwksJson({PublicJwkJson(a.get())}), 0644);
  HttpsFileServer server(www, ca.cert, ca.key);
  ASSERT_GT(server.port(), 0);
  const std::string url = absl::StrCat("https://localhost:", server.port(), "/jwks.json");

  // Without the test CA the server's certificate is not trusted.
  ExpectReason(KeySet::Open(url).status(), absl::StatusCode::kUnavailable, "HTTP_UNAVAILABLE", url);

  HttpOptions http;
  http.ca_file = ca.ca;
  auto opened = KeySet::Open(url, http);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::shared_ptr<KeySet> keys = *opened;
  EXPECT_EQ(keys->Kids(), std::vector<std::string>{JwkThumbprint(a.get())});

  // The issuer rotates: b appears at the URL; a token with b's kid makes the
  // verifier fetch again (at most once a second: poll until it does).
  WriteTestFile(www, "jwks.json", JwksJson({PublicJwkJson(a.get()), PublicJwkJson(b.get())}), 0644);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  std::shared_ptr<const Jwk> found;
  while (found == nullptr && absl::Now() < deadline) {
    found = keys->Find(JwkThumbprint(b.get()));
    if (found == nullptr) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_NE(found, nullptr);

  auto issuer = *TokenIssuer::FromPem(PrivatePem(b.get()), "labshare", "labshare");
  TokenVerifier verifier(keys, TokenRules{});
  const absl::Time now = absl::Now();
  EXPECT_TRUE(verifier.Verify(issuer->Mint(Principal{"li-wei", "", {Role::kLabUser}, now + absl::Minutes(5)}, now), now)
                  .ok());

  // s_server answers a missing file with an error text (status 200).
  ExpectReason(KeySet::Open(absl::StrCat("https://localhost:", server.port(), "/missing.json"), http).status(),
               absl::StatusCode::kInvalidArgument, "INVALID_JWKS");
}

TEST(HttpClient, PostsAFormAndReportsAnUnreachableUrl) {
  const std::string dir = TestTempDir();
  TestCa ca(dir);
  // Node's https server echoes the form body it received.
  const std::string script = WriteTestFile(dir, "echo.js", R"(
const https = require('https'); const fs = require('fs');
const s = https.createServer({cert: fs.readFileSync(process.argv[2]), key: fs.readFileSync(process.argv[3])},
  (req, res) => { let b = ''; req.on('data', d => b += d); req.on('end', () => {
    res.writeHead(201, {'Content-Type': 'text/plain'}); res.end(req.method + ' ' + req.headers['content-type'] + ' ' + b); }); });
s.listen(0, '127.0.0.1', () => { console.log('port ' + s.address().port); });
)", 0644);
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    ::dup2(out[1], 1);
    ::execlp("node", "node", script.c_str(), ca.cert.c_str(), ca.key.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(out[1]);
  char buf[64] = {0};
  const ssize_t n = ::read(out[0], buf, sizeof buf - 1);
  ::close(out[0]);
  ASSERT_GT(n, 5) << "node did not start";
  const int port = std::atoi(buf + 5);
  HttpOptions http;
  http.ca_file = ca.ca;
  auto r = HttpPostForm(absl::StrCat("https://localhost:", port, "/token"),
                        {{"grant_type", "urn:ietf:params:oauth:grant-type:device_code"}, {"a b", "x&y=z"}}, http);
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->content_type, "text/plain");
  EXPECT_EQ(r->body,
            "POST application/x-www-form-urlencoded "
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&a%20b=x%26y%3Dz");
  // The server is gone now.
  http.timeout = absl::Seconds(2);
  ExpectReason(HttpGet(absl::StrCat("https://localhost:", port, "/"), http).status(),
               absl::StatusCode::kUnavailable, "HTTP_UNAVAILABLE");
}

}  // namespace
}  // namespace labshare
