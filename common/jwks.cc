#include "common/jwks.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/log.h"

namespace labshare {
namespace {

constexpr auto kMinUnknownKidRefetch = std::chrono::seconds(1);
constexpr auto kUrlRefreshPeriod = std::chrono::minutes(5);
constexpr size_t kMaxJwksFileBytes = 1024 * 1024;

struct JsonDeleter {
  void operator()(json_t* j) const { json_decref(j); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;
struct BnDeleter {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;
struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

std::shared_ptr<EVP_PKEY> Own(EVP_PKEY* k) { return std::shared_ptr<EVP_PKEY>(k, EVP_PKEY_free); }

absl::Status InvalidJwks(const std::string& source, const std::string& why) {
  return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_JWKS",
                   absl::StrCat("the key set ", source, " is not usable: ", why,
                                "; it must be a JWKS ({\"keys\":[...]}) with EC P-256 or RSA public keys"),
                   {{"jwks", source}});
}

std::string B64(const unsigned char* p, size_t n) {
  return absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<const char*>(p), n));
}

std::optional<std::string> UnB64(const char* s) {
  if (s == nullptr) return std::nullopt;
  std::string out;
  const absl::string_view in(s);
  if (absl::StrContains(in, "=") || !absl::WebSafeBase64Unescape(in, &out)) return std::nullopt;
  return out;
}

std::string Str(json_t* obj, const char* name) {
  const char* s = json_string_value(json_object_get(obj, name));
  return s != nullptr ? s : "";
}

// EVP_PKEY from the members of an EC P-256 or RSA JWK; nullptr when invalid.
EVP_PKEY* KeyFromJwk(json_t* jwk, const std::string& kty, std::string* why) {
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  BnPtr n, e;
  std::string point;
  const char* type = nullptr;
  if (kty == "EC") {
    if (Str(jwk, "crv") != "P-256") {
      *why = "curve other than P-256";
      OSSL_PARAM_BLD_free(bld);
      return nullptr;
    }
    std::optional<std::string> x = UnB64(json_string_value(json_object_get(jwk, "x")));
    std::optional<std::string> y = UnB64(json_string_value(json_object_get(jwk, "y")));
    if (!x || !y || x->size() != 32 || y->size() != 32) {
      *why = "x and y must be 32-byte base64url values";
      OSSL_PARAM_BLD_free(bld);
      return nullptr;
    }
    point = absl::StrCat(std::string(1, '\x04'), *x, *y);
    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size());
    type = "EC";
  } else {
    std::optional<std::string> nb = UnB64(json_string_value(json_object_get(jwk, "n")));
    std::optional<std::string> eb = UnB64(json_string_value(json_object_get(jwk, "e")));
    if (!nb || !eb || nb->empty() || eb->empty() || nb->size() < 256) {
      *why = "n (at least 2048 bits) and e must be base64url values";
      OSSL_PARAM_BLD_free(bld);
      return nullptr;
    }
    n.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(nb->data()), static_cast<int>(nb->size()), nullptr));
    e.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(eb->data()), static_cast<int>(eb->size()), nullptr));
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n.get());
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e.get());
    type = "RSA";
  }
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  OSSL_PARAM_BLD_free(bld);
  EVP_PKEY* pkey = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  const bool made = params != nullptr && ctx != nullptr && EVP_PKEY_fromdata_init(ctx) == 1 &&
                    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1;
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  if (!made) {
    *why = "not a valid public key";
    EVP_PKEY_free(pkey);
    return nullptr;
  }
  // The point must be on the curve (EVP_PKEY_fromdata does not check).
  EVP_PKEY_CTX* check = EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr);
  const bool ok = check != nullptr && EVP_PKEY_public_check(check) == 1;
  EVP_PKEY_CTX_free(check);
  if (!ok) {
    *why = "the public key fails validation";
    EVP_PKEY_free(pkey);
    return nullptr;
  }
  return pkey;
}

std::string PublicPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) return "";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string BnParam(const EVP_PKEY* key, const char* name, int pad) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &bn) != 1) return "";
  std::string out(static_cast<size_t>(pad > 0 ? pad : BN_num_bytes(bn)), '\0');
  if (pad > 0) {
    BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), pad);
  } else {
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  }
  BN_free(bn);
  return out;
}

// The required members in lexicographic order (RFC 7638 §3.2), values
// base64url: no escaping needed.
std::string CanonicalJwk(const EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC")) {
    return absl::StrCat(R"({"crv":"P-256","kty":"EC","x":")",
                        absl::WebSafeBase64Escape(BnParam(key, OSSL_PKEY_PARAM_EC_PUB_X, 32)), R"(","y":")",
                        absl::WebSafeBase64Escape(BnParam(key, OSSL_PKEY_PARAM_EC_PUB_Y, 32)), "\"}");
  }
  return absl::StrCat(R"({"e":")", absl::WebSafeBase64Escape(BnParam(key, OSSL_PKEY_PARAM_RSA_E, 0)),
                      R"(","kty":"RSA","n":")", absl::WebSafeBase64Escape(BnParam(key, OSSL_PKEY_PARAM_RSA_N, 0)),
                      "\"}");
}

absl::StatusOr<std::string> ReadPlainFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    struct stat st;
    const bool exists = ::stat(path.c_str(), &st) == 0;
    return MakeError(exists ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kNotFound,
                     "JWKS_UNAVAILABLE",
                     absl::StrCat("cannot read the key set file ", path,
                                  exists ? ": permission denied" : ": it does not exist",
                                  "; --jwks names a JWKS file or an https:// URL"),
                     {{"jwks", path}});
  }
  std::ostringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  if (text.size() > kMaxJwksFileBytes) return InvalidJwks(path, "larger than 1 MiB");
  return text;
}

}  // namespace

absl::StatusOr<std::vector<std::shared_ptr<const Jwk>>> ParseJwks(std::string_view text, const std::string& source) {
  json_error_t error;
  JsonPtr root(json_loadb(text.data(), text.size(), JSON_REJECT_DUPLICATES, &error));
  if (!root) return InvalidJwks(source, absl::StrCat("invalid JSON (", error.text, ")"));
  json_t* keys = json_object_get(root.get(), "keys");
  if (!json_is_array(keys)) return InvalidJwks(source, "no \"keys\" array");
  std::vector<std::shared_ptr<const Jwk>> out;
  std::vector<std::string> skipped;
  size_t i;
  json_t* jwk;
  json_array_foreach(keys, i, jwk) {
    if (!json_is_object(jwk)) return InvalidJwks(source, "a key is not an object");
    const std::string kty = Str(jwk, "kty");
    const std::string use = Str(jwk, "use");
    const std::string alg = Str(jwk, "alg");
    std::string why;
    if ((kty != "EC" && kty != "RSA") || (!use.empty() && use != "sig") ||
        (!alg.empty() && alg != (kty == "EC" ? "ES256" : "RS256"))) {
      continue;  // another kind of key: not for us
    }
    EVP_PKEY* pkey = KeyFromJwk(jwk, kty, &why);
    if (pkey == nullptr) {
      skipped.push_back(absl::StrCat(Str(jwk, "kid"), ": ", why));
      continue;
    }
    auto k = std::make_shared<Jwk>();
    k->key = Own(pkey);
    k->kty = kty;
    k->alg = alg;
    k->kid = Str(jwk, "kid");
    if (k->kid.empty()) k->kid = JwkThumbprint(pkey);
    k->pem = PublicPem(pkey);
    if (k->pem.empty()) return InvalidJwks(source, "cannot encode a key as PEM");
    for (const auto& other : out) {
      if (other->kid == k->kid) return InvalidJwks(source, absl::StrCat("two keys have the kid ", k->kid));
    }
    out.push_back(std::move(k));
  }
  if (out.empty()) {
    return InvalidJwks(source, skipped.empty() ? "no EC P-256 or RSA signing key"
                                               : absl::StrCat("no valid key (", absl::StrJoin(skipped, "; "), ")"));
  }
  return out;
}

absl::StatusOr<std::shared_ptr<EVP_PKEY>> ParseEcPrivateKeyPem(std::string_view pem, const std::string& source) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* pkey = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  char group[64] = {0};
  size_t len = 0;
  if (pkey == nullptr || !EVP_PKEY_is_a(pkey, "EC") ||
      EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) != 1 ||
      std::string_view(group) != "prime256v1") {
    EVP_PKEY_free(pkey);
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_SIGNING_KEY",
                     absl::StrCat("the token signing key ", source,
                                  " is not an EC P-256 private key in PEM; generate one with "
                                  "`labshare-token --generate_key=FILE`"),
                     {{"file", source}});
  }
  return Own(pkey);
}

absl::StatusOr<std::string> GenerateEcPrivateKeyPem() {
  EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (pkey == nullptr) {
    return MakeError(absl::StatusCode::kInternal, "KEY_GENERATION_FAILED",
                     "OpenSSL could not generate a P-256 key; check the OpenSSL installation");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  const bool ok = bio && PEM_write_bio_PrivateKey(bio.get(), pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  EVP_PKEY_free(pkey);
  if (!ok) {
    return MakeError(absl::StatusCode::kInternal, "KEY_GENERATION_FAILED", "OpenSSL could not encode the new key");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  std::string pem(data, static_cast<size_t>(n));
  OPENSSL_cleanse(data, static_cast<size_t>(n));
  return pem;
}

std::string JwkThumbprint(const EVP_PKEY* key) {
  const std::string canonical = CanonicalJwk(key);
  unsigned char digest[32];
  unsigned int n = 0;
  EVP_Digest(canonical.data(), canonical.size(), digest, &n, EVP_sha256(), nullptr);
  return B64(digest, n);
}

std::string PublicJwkJson(const EVP_PKEY* key) {
  std::string canonical = CanonicalJwk(key);
  canonical.pop_back();  // '}'
  return absl::StrCat(canonical, R"(,"kid":")", JwkThumbprint(key), R"(","use":"sig","alg":")",
                      EVP_PKEY_is_a(key, "EC") ? "ES256" : "RS256", "\"}");
}

std::string JwksJson(const std::vector<std::string>& jwk_objects) {
  return absl::StrCat("{\"keys\":[", absl::StrJoin(jwk_objects, ","), "]}\n");
}

// ---------------------------------------------------------------------------
// KeySet.

absl::StatusOr<std::shared_ptr<KeySet>> KeySet::Open(std::string file_or_url, HttpOptions http) {
  if (file_or_url.empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_JWKS",
                     "no key set is configured: --jwks names a JWKS file or an https:// URL");
  }
  if (absl::StartsWith(file_or_url, "http://")) {
    return InvalidJwks(file_or_url, "keys are fetched only over https://");
  }
  auto set = std::make_shared<KeySet>(std::move(file_or_url), std::move(http));
  std::lock_guard<std::mutex> lock(set->refresh_mu_);
  LS_RETURN_IF_ERROR(set->LoadLocked());
  return set;
}

absl::StatusOr<std::shared_ptr<KeySet>> KeySet::FromJson(std::string_view jwks_json) {
  LS_ASSIGN_OR_RETURN(auto keys, ParseJwks(jwks_json, "(inline)"));
  auto set = std::make_shared<KeySet>("", HttpOptions{});
  auto map = std::make_shared<Keys>();
  for (auto& k : keys) map->emplace(k->kid, std::move(k));
  set->keys_ = std::move(map);
  set->generation_ = 1;
  return set;
}

bool KeySet::is_url() const { return absl::StartsWith(source_, "https://"); }

absl::Status KeySet::LoadLocked() {
  std::string text;
  FileStamp stamp;
  last_fetch_ = std::chrono::steady_clock::now();
  if (is_url()) {
    LS_ASSIGN_OR_RETURN(HttpResponse r, HttpGet(source_, http_));
    if (r.status != 200) {
      return MakeError(absl::StatusCode::kUnavailable, "JWKS_UNAVAILABLE",
                       absl::StrCat("the key set URL ", source_, " answered HTTP ", r.status, " instead of 200"),
                       {{"jwks", source_}});
    }
    text = std::move(r.body);
  } else {
    struct stat st;
    if (::stat(source_.c_str(), &st) == 0) {
      stamp = {static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
               static_cast<int64_t>(st.st_size), static_cast<uint64_t>(st.st_ino)};
    }
    LS_ASSIGN_OR_RETURN(text, ReadPlainFile(source_));
  }
  LS_ASSIGN_OR_RETURN(auto list, ParseJwks(text, source_));
  auto map = std::make_shared<Keys>();
  for (auto& k : list) map->emplace(k->kid, std::move(k));
  stamp_ = stamp;
  std::lock_guard<std::mutex> lock(mu_);
  bool same = keys_ != nullptr && keys_->size() == map->size();
  if (same) {
    for (const auto& [kid, k] : *map) {
      auto it = keys_->find(kid);
      if (it == keys_->end() || it->second->pem != k->pem) {
        same = false;
        break;
      }
    }
  }
  if (!same) {
    keys_ = std::move(map);
    ++generation_;
  }
  return absl::OkStatus();
}

absl::Status KeySet::RefreshLocked() {
  absl::Status s = LoadLocked();
  last_error_ = s.ok() ? "" : std::string(s.message());
  return s;
}

std::shared_ptr<const KeySet::Keys> KeySet::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return keys_;
}

void KeySet::MaybeRefresh() {
  if (is_fixed()) return;
  if (is_url()) {
    std::unique_lock<std::mutex> lock(refresh_mu_, std::try_to_lock);
    if (!lock.owns_lock() || std::chrono::steady_clock::now() - last_fetch_ < kUrlRefreshPeriod) return;
    absl::Status s = RefreshLocked();
    if (!s.ok()) LogWarning("key set refresh failed; keeping the previous keys", {{"jwks", source_}, {"error", std::string(s.message())}});
    return;
  }
  struct stat st;
  FileStamp now;
  if (::stat(source_.c_str(), &st) == 0) {
    now = {static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
           static_cast<int64_t>(st.st_size), static_cast<uint64_t>(st.st_ino)};
  }
  std::lock_guard<std::mutex> lock(refresh_mu_);
  if (now == stamp_) return;
  const std::string previous_error = last_error_;
  absl::Status s = RefreshLocked();
  if (!s.ok() && s.message() != previous_error) {
    LogWarning("key set file changed but cannot be used; keeping the previous keys",
               {{"jwks", source_}, {"error", std::string(s.message())}});
  }
}

uint64_t KeySet::Generation() {
  MaybeRefresh();
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

std::shared_ptr<const Jwk> KeySet::Find(std::string_view kid, std::string* why, bool* refresh_failed) {
  MaybeRefresh();
  auto lookup = [&](const Keys& keys) -> std::shared_ptr<const Jwk> {
    if (kid.empty()) return keys.size() == 1 ? keys.begin()->second : nullptr;
    auto it = keys.find(kid);
    return it == keys.end() ? nullptr : it->second;
  };
  if (refresh_failed != nullptr) *refresh_failed = false;
  uint64_t seen;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto k = lookup(*keys_)) return k;
    seen = generation_;
  }
  bool stale = false;
  if (!is_fixed()) {
    std::lock_guard<std::mutex> lock(refresh_mu_);  // single flight: others wait here
    bool refreshed_meanwhile;
    {
      std::lock_guard<std::mutex> l(mu_);
      refreshed_meanwhile = generation_ != seen;
    }
    // A file that did not change was just checked (MaybeRefresh); either
    // source is read again for an unknown kid at most once a second, so
    // made-up kids cannot keep the process reading.
    const bool may_fetch = std::chrono::steady_clock::now() - last_fetch_ >= kMinUnknownKidRefetch;
    if (!refreshed_meanwhile && may_fetch) RefreshLocked().IgnoreError();
    // Stale is the outcome of the latest refresh, whoever made it: ours, the
    // one we waited for, or one so recent that the limit skipped ours (a
    // failure then still means the set could not be refreshed).
    stale = !last_error_.empty();
    if (why != nullptr && stale) {
      *why = absl::StrCat("its key id is not in the key set, which could not be refreshed: ", last_error_);
    }
  }
  std::shared_ptr<const Keys> keys = Current();
  auto k = lookup(*keys);
  if (k == nullptr && refresh_failed != nullptr) *refresh_failed = stale;
  if (k == nullptr && why != nullptr && why->empty()) {
    *why = kid.empty() ? "it names no key id (kid) and the key set holds several keys"
                       : absl::StrCat("its key id ", std::string(kid), " is not in the key set");
  }
  return k;
}

std::vector<std::string> KeySet::Kids() const {
  std::vector<std::string> out;
  for (const auto& [kid, k] : *Current()) out.push_back(kid);
  return out;
}

}  // namespace labshare
