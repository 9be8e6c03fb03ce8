#include "tests/support/test_tokens.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>

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
    s->verifier = std::make_unique<TokenVerifier>(*std::move(keys), TokenRules{});
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

}  // namespace labshare::testing
