#include "common/token.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/secret_file.h"

namespace labshare {

struct TokenIssuer::Key {
  ~Key() { WipeSecret(pem); }
  std::string pem;  // private key, PEM (for libjwt)
  std::string kid;
  std::string jwk;  // public JWK JSON
  int64_t mtime_ns = -1, size = -1;
  uint64_t inode = 0;
};

namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

struct RoleEntry {
  Role role;
  std::string_view name;
};
constexpr RoleEntry kRoles[] = {
    {Role::kLabUser, "lab_user"},
    {Role::kFacilityStaff, "facility_staff"},
    {Role::kMemberBillingAdmin, "member_billing_admin"},
    {Role::kConsortiumAdmin, "consortium_admin"},
    {Role::kAuditor, "auditor"},
    {Role::kService, "service"},
};

absl::Status InvalidToken(std::string_view detail) {
  return MakeError(absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
                   absl::StrCat("invalid bearer token: ", AbslView(detail), "; sign in again with `labshare login`"));
}

// JSON text must be UTF-8: invalid bytes become '?'.
json_t* JsonString(std::string_view s) {
  json_t* j = json_stringn(s.data(), s.size());
  if (j != nullptr) return j;
  std::string clean(s);
  for (char& c : clean) {
    if (static_cast<unsigned char>(c) >= 0x80) c = '?';
  }
  return json_stringn(clean.data(), clean.size());
}

absl::StatusOr<std::shared_ptr<const TokenIssuer::Key>> MakeKey(std::string pem, const std::string& source) {
  LS_ASSIGN_OR_RETURN(std::shared_ptr<EVP_PKEY> pkey, ParseEcPrivateKeyPem(pem, source));
  auto key = std::make_shared<TokenIssuer::Key>();
  key->pem = std::move(pem);
  key->kid = JwkThumbprint(pkey.get());
  key->jwk = PublicJwkJson(pkey.get());
  return std::shared_ptr<const TokenIssuer::Key>(std::move(key));
}

bool Stamp(const std::string& path, int64_t* mtime_ns, int64_t* size, uint64_t* inode) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  *mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  *size = static_cast<int64_t>(st.st_size);
  *inode = static_cast<uint64_t>(st.st_ino);
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------
// Roles and principals.

absl::StatusOr<Role> ParseRole(std::string_view name) {
  for (const RoleEntry& e : kRoles) {
    if (e.name == name) return e.role;
  }
  std::vector<absl::string_view> names;
  for (const RoleEntry& e : kRoles) names.push_back(AbslView(e.name));
  return MakeError(absl::StatusCode::kInvalidArgument, "UNKNOWN_ROLE",
                   absl::StrCat("unknown role \"", absl::CHexEscape(AbslView(name)),
                                "\"; valid roles are: ", absl::StrJoin(names, ", ")),
                   {{"role", std::string(name)}});
}

std::string RoleName(Role role) {
  for (const RoleEntry& e : kRoles) {
    if (e.role == role) return std::string(e.name);
  }
  return "unknown";
}

bool Principal::HasRole(Role role) const { return std::find(roles.begin(), roles.end(), role) != roles.end(); }

bool Principal::HasAnyRole(std::initializer_list<Role> wanted) const {
  for (Role r : wanted) {
    if (HasRole(r)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// TokenIssuer.

TokenIssuer::~TokenIssuer() = default;

absl::StatusOr<std::unique_ptr<TokenIssuer>> TokenIssuer::FromFile(std::string key_file, std::string issuer,
                                                                   std::string audience) {
  int64_t mtime = -1, size = -1;
  uint64_t inode = 0;
  Stamp(key_file, &mtime, &size, &inode);
  LS_ASSIGN_OR_RETURN(std::string pem, ReadSecretFile(key_file, "token signing key"));
  LS_ASSIGN_OR_RETURN(std::shared_ptr<const Key> key, MakeKey(std::move(pem), key_file));
  auto k = std::const_pointer_cast<Key>(key);
  k->mtime_ns = mtime;
  k->size = size;
  k->inode = inode;
  std::unique_ptr<TokenIssuer> issuer_ptr(new TokenIssuer(std::move(key_file), std::move(issuer), std::move(audience)));
  issuer_ptr->key_ = std::move(key);
  return issuer_ptr;
}

absl::StatusOr<std::unique_ptr<TokenIssuer>> TokenIssuer::FromPem(std::string_view pem, std::string issuer,
                                                                  std::string audience) {
  LS_ASSIGN_OR_RETURN(std::shared_ptr<const Key> key, MakeKey(std::string(pem), "(PEM text)"));
  std::unique_ptr<TokenIssuer> out(new TokenIssuer("", std::move(issuer), std::move(audience)));
  out->key_ = std::move(key);
  return out;
}

std::shared_ptr<const TokenIssuer::Key> TokenIssuer::CurrentKey() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (key_file_.empty()) return key_;
  int64_t mtime = -1, size = -1;
  uint64_t inode = 0;
  if (!Stamp(key_file_, &mtime, &size, &inode) ||
      (mtime == key_->mtime_ns && size == key_->size && inode == key_->inode)) {
    return key_;
  }
  absl::StatusOr<std::string> pem = ReadSecretFile(key_file_, "token signing key");
  absl::StatusOr<std::shared_ptr<const Key>> key =
      pem.ok() ? MakeKey(*std::move(pem), key_file_) : absl::StatusOr<std::shared_ptr<const Key>>(pem.status());
  if (!key.ok()) {
    // Remember the stamp so that the same bad file is not re-read on every
    // Mint; a later change is tried again.
    auto keep = std::make_shared<Key>(*key_);
    keep->mtime_ns = mtime;
    keep->size = size;
    keep->inode = inode;
    LogError("the token signing key file changed but cannot be used; still signing with the previous key",
             {{"file", key_file_}, {"kid", key_->kid}, {"error", std::string(key.status().message())}});
    key_ = std::move(keep);
    return key_;
  }
  auto k = std::const_pointer_cast<Key>(*key);
  k->mtime_ns = mtime;
  k->size = size;
  k->inode = inode;
  LogInfo("token signing key changed", {{"file", key_file_}, {"old_kid", key_->kid}, {"kid", k->kid}});
  key_ = std::move(*key);
  return key_;
}

std::string TokenIssuer::kid() const { return CurrentKey()->kid; }
std::string TokenIssuer::PublicJwk() const { return CurrentKey()->jwk; }

std::string TokenIssuer::Mint(const Principal& p, absl::Time issued_at) const {
  const std::shared_ptr<const Key> key = CurrentKey();
  unsigned char jti_bytes[16];
  if (RAND_bytes(jti_bytes, sizeof jti_bytes) != 1) {
    std::fprintf(stderr, "labshare: the random number generator failed while minting a token\n");
    std::abort();
  }
  json_t* claims = json_object();
  json_object_set_new(claims, "iss", JsonString(issuer_));
  json_object_set_new(claims, "aud", JsonString(audience_));
  json_object_set_new(claims, "sub", JsonString(p.user_id));
  if (!p.organization_id.empty()) json_object_set_new(claims, "org", JsonString(p.organization_id));
  json_t* roles = json_array();
  for (Role r : p.roles) json_array_append_new(roles, json_string(RoleName(r).c_str()));
  json_object_set_new(claims, "roles", roles);
  json_object_set_new(claims, "iat", json_integer(absl::ToUnixSeconds(issued_at)));
  json_object_set_new(claims, "exp", json_integer(absl::ToUnixSeconds(p.expires_at)));
  json_object_set_new(
      claims, "jti",
      json_string(absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<const char*>(jti_bytes), sizeof jti_bytes))
                      .c_str()));
  char* claims_text = json_dumps(claims, JSON_COMPACT);
  json_decref(claims);

  jwt_t* jwt = nullptr;
  char* token = nullptr;
  if (claims_text != nullptr && jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, claims_text) == 0 &&
      jwt_add_header(jwt, "kid", key->kid.c_str()) == 0 &&
      jwt_set_alg(jwt, JWT_ALG_ES256, reinterpret_cast<const unsigned char*>(key->pem.data()),
                  static_cast<int>(key->pem.size())) == 0) {
    token = jwt_encode_str(jwt);
  }
  std::free(claims_text);
  jwt_free(jwt);  // wipes its copy of the key
  if (token == nullptr) {
    // The key was parsed when it was loaded: only a broken OpenSSL / libjwt
    // or memory exhaustion gets here.
    std::fprintf(stderr, "labshare: libjwt failed to sign a token\n");
    std::abort();
  }
  std::string out(token);
  std::free(token);
  return out;
}

// ---------------------------------------------------------------------------
// TokenVerifier.

absl::StatusOr<Principal> TokenVerifier::Verify(std::string_view token, absl::Time now) const {
  JwtRules rules;
  rules.issuer = rules_.issuer;
  rules.audiences = {rules_.audience};
  rules.algorithms = {"ES256"};
  rules.max_lifetime = rules_.max_lifetime;
  // Every service's authentication contract (types.proto) answers a token it
  // cannot verify with INVALID_TOKEN, also while its key set cannot be re-read.
  rules.stale_keys_unavailable = false;
  LS_ASSIGN_OR_RETURN(JwtClaims claims, VerifyJwt(token, *keys_, rules, now));
  Principal p;
  p.user_id = claims.sub();
  if (p.user_id.empty()) return InvalidToken("the subject (sub) is missing");
  std::optional<std::string> org = claims.String("org");
  p.organization_id = org.value_or("");
  for (const std::string& name : claims.Strings("roles")) {
    absl::StatusOr<Role> role = ParseRole(name);
    if (!role.ok()) return InvalidToken("the token names an unknown role");
    if (*role == Role::kService) {
      return InvalidToken("the service role is never valid in a token (services authenticate with certificates)");
    }
    if (!p.HasRole(*role)) p.roles.push_back(*role);
  }
  p.expires_at = claims.exp();
  return p;
}

}  // namespace labshare
