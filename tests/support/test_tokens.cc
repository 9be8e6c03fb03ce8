#include "tests/support/test_tokens.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/jwks.h"

namespace labshare::testing {
namespace {

struct State {
  std::string dir;
  std::string key_file;
  std::string jwks_file;
  std::unique_ptr<TokenIssuer> issuer;
  std::unique_ptr<TokenVerifier> verifier;
};

std::mutex dirs_mu;
std::vector<std::string>* dirs = new std::vector<std::string>;

void RemoveDirs() {
  std::lock_guard<std::mutex> lock(dirs_mu);
  for (const std::string& d : *dirs) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
  }
}

[[noreturn]] void Fatal(const std::string& what) {
  std::fprintf(stderr, "test_tokens: %s\n", what.c_str());
  std::abort();
}

State& Get() {
  static State* state = [] {
    auto* s = new State;
    s->dir = TestTempDir();
    absl::StatusOr<std::string> pem = GenerateEcPrivateKeyPem();
    if (!pem.ok()) Fatal(pem.status().ToString());
    s->key_file = WriteTestFile(s->dir, "token-signing.pem", *pem, 0600);
    auto issuer = TokenIssuer::FromFile(s->key_file, "labshare", "labshare");
    if (!issuer.ok()) Fatal(issuer.status().ToString());
    s->issuer = *std::move(issuer);
    s->jwks_file = WriteTestFile(s->dir, "jwks.json", JwksJson({s->issuer->PublicJwk()}), 0644);
    auto keys = KeySet::Open(s->jwks_file);
    if (!keys.ok()) Fatal(keys.status().ToString());
    TokenRules rules;
    rules.max_lifetime = absl::Hours(24 * 1000);
    s->verifier = std::make_unique<TokenVerifier>(*std::move(keys), rules);
    return s;
  }();
  return *state;
}

}  // namespace

std::string TestTempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/labshare-tokens-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) Fatal("mkdtemp failed");
  std::lock_guard<std::mutex> lock(dirs_mu);
  if (dirs->empty()) std::atexit(RemoveDirs);
  dirs->push_back(tmpl);
  return tmpl;
}

std::string WriteTestFile(const std::string& dir, const std::string& name, const std::string& text, unsigned mode) {
  const std::string path = dir + "/" + name;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) Fatal("cannot write " + tmp);
  }
  ::chmod(tmp.c_str(), static_cast<mode_t>(mode));
  if (::rename(tmp.c_str(), path.c_str()) != 0) Fatal("cannot rename " + tmp);
  return path;
}

const TokenIssuer& TestIssuer() { return *Get().issuer; }
const TokenVerifier* TestVerifier() { return Get().verifier.get(); }
const std::string& TestJwksFile() { return Get().jwks_file; }
const std::string& TestSigningKeyFile() { return Get().key_file; }

std::vector<std::string> TestTokenFlags() { return {"--jwks=" + TestJwksFile()}; }

std::string Mint(const std::string& user, const std::string& org, const std::vector<Role>& roles,
                 absl::Duration ttl, absl::Time now) {
  Principal p{user, org, roles, now + ttl};
  return TestIssuer().Mint(p, now);
}

std::string Mint(const Principal& p, absl::Time issued_at) { return TestIssuer().Mint(p, issued_at); }

namespace {

std::string B64(const std::string& s) { return absl::WebSafeBase64Escape(s); }

// ES256 over header.payload with `pem`'s key, by OpenSSL directly.
std::string SignEs256(const std::string& header, const std::string& payload, const std::string& pem) {
  const std::string input = B64(header) + "." + B64(payload);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  size_t len = 0;
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  std::string der(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(der.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(der.data());
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(len));
  unsigned char raw[64];
  BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32);
  ECDSA_SIG_free(sig);
  return input + "." + B64(std::string(reinterpret_cast<char*>(raw), 64));
}

}  // namespace

std::vector<std::pair<std::string, std::string>> ForgedTokens(absl::Time now, absl::Duration max_lifetime) {
  std::vector<std::pair<std::string, std::string>> out;
  const Principal admin{"ana", "lab", {Role::kConsortiumAdmin}, now + absl::Minutes(10)};
  const std::string kid = TestIssuer().kid();
  const std::string other_pem = *GenerateEcPrivateKeyPem();
  out.emplace_back("another key", (*TokenIssuer::FromPem(other_pem, "labshare", "labshare"))->Mint(admin, now));
  const int64_t iat = absl::ToUnixSeconds(now);
  const std::string claims = absl::StrCat(
      R"({"iss":"labshare","aud":"labshare","sub":"ana","org":"lab","roles":["consortium_admin"],"iat":)", iat,
      R"(,"exp":)", iat + 600, "}");
  out.emplace_back("another key under the issuer's kid",
                   SignEs256(absl::StrCat(R"({"alg":"ES256","typ":"JWT","kid":")", kid, "\"}"), claims, other_pem));
  out.emplace_back("wrong audience", (*TokenIssuer::FromFile(TestSigningKeyFile(), "labshare", "billing"))->Mint(admin, now));
  out.emplace_back("wrong issuer", (*TokenIssuer::FromFile(TestSigningKeyFile(), "evil", "labshare"))->Mint(admin, now));
  Principal long_lived = admin;
  long_lived.expires_at = now + max_lifetime + absl::Seconds(1);
  out.emplace_back("lifetime over the maximum", TestIssuer().Mint(long_lived, now));
  out.emplace_back("alg none",
                   B64(absl::StrCat(R"({"alg":"none","typ":"JWT","kid":")", kid, "\"}")) + "." + B64(claims) + ".");
  {
    const std::string public_pem = TestVerifier()->keys().Find(kid)->pem;
    const std::string input = B64(absl::StrCat(R"({"alg":"HS256","typ":"JWT","kid":")", kid, "\"}")) + "." + B64(claims);
    unsigned char mac[32];
    size_t len = 0;
    EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, public_pem.data(), public_pem.size(),
              reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, sizeof mac, &len);
    out.emplace_back("HS256 keyed with the public key", input + "." + B64(std::string(reinterpret_cast<char*>(mac), len)));
  }
  Principal service = admin;
  service.roles = {Role::kService};
  out.emplace_back("the service role", TestIssuer().Mint(service, now));
  return out;
}

}  // namespace labshare::testing
