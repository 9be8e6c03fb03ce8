#include "services/notify/webhook_secret_box.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/secret_file.h"

namespace labshare::notify {
namespace {

constexpr int kNonce = 12;
constexpr int kTag = 16;

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

// Sealing can only fail in OpenSSL itself; opening, when the stored bytes
// are not what this key sealed under this name.
absl::Status CryptoError(const char* what) {
  return MakeError(absl::StatusCode::kInternal, "TOKEN_CRYPTO_FAILURE", what);
}
absl::Status Unreadable(const char* what) {
  return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", what);
}

const unsigned char* U(absl::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

}  // namespace

absl::StatusOr<SecretBox> SecretBox::FromKeyFile(const std::string& path) {
  LS_ASSIGN_OR_RETURN(std::string text, ReadSecretFile(path, "webhook secret key"));
  std::string hex(absl::StripAsciiWhitespace(text));
  WipeSecret(text);
  bool is_hex = hex.size() == 64;
  for (char c : hex) is_hex = is_hex && absl::ascii_isxdigit(static_cast<unsigned char>(c));
  if (!is_hex) {
    WipeSecret(hex);
    return MakeError(absl::StatusCode::kInvalidArgument, "SECRET_KEY_INVALID",
                     absl::StrCat(path, ": must hold 64 hex digits (openssl rand -hex 32)"));
  }
  std::string key = absl::HexStringToBytes(hex);
  WipeSecret(hex);
  absl::StatusOr<SecretBox> box = FromKey(key);
  WipeSecret(key);
  return box;
}

SecretBox::SecretBox(SecretBox&& other) noexcept : key_(std::move(other.key_)) { other.Wipe(); }

SecretBox& SecretBox::operator=(SecretBox&& other) noexcept {
  if (this != &other) {
    Wipe();
    key_ = std::move(other.key_);
    other.Wipe();
  }
  return *this;
}

SecretBox::~SecretBox() { Wipe(); }

void SecretBox::Wipe() {
  if (!key_.empty()) OPENSSL_cleanse(key_.data(), key_.size());
  key_.clear();
}

absl::StatusOr<SecretBox> SecretBox::FromKey(absl::string_view key) {
  if (key.size() != 32) {
    return MakeError(absl::StatusCode::kInvalidArgument, "SECRET_KEY_INVALID", "the key must be 32 bytes");
  }
  SecretBox box;
  box.key_ = std::string(key);
  return box;
}

bool SecretBox::IsSealed(absl::string_view stored) { return absl::StartsWith(stored, kSealedPrefix); }

absl::StatusOr<std::string> SecretBox::Seal(absl::string_view secret, absl::string_view aad) const {
  std::string out(static_cast<size_t>(kNonce) + secret.size() + kTag, '\0');
  unsigned char* nonce = reinterpret_cast<unsigned char*>(out.data());
  if (RAND_bytes(nonce, kNonce) != 1) return CryptoError("no random bytes");
  Ctx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonce, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, U(key_), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nonce + kNonce, &len, U(secret), static_cast<int>(secret.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), nonce + kNonce + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, nonce + kNonce + secret.size()) != 1) {
    return CryptoError("cannot seal the webhook secret");
  }
  return absl::StrCat(kSealedPrefix, absl::Base64Escape(out));
}

absl::StatusOr<std::string> SecretBox::Open(absl::string_view stored, absl::string_view aad) const {
  if (!IsSealed(stored)) return std::string(stored);
  std::string raw;
  if (!absl::Base64Unescape(stored.substr(sizeof(kSealedPrefix) - 1), &raw) ||
      raw.size() < static_cast<size_t>(kNonce + kTag)) {
    return Unreadable("a stored webhook secret is malformed");
  }
  const size_t n = raw.size() - kNonce - kTag;
  std::string plain(n, '\0');
  unsigned char* r = reinterpret_cast<unsigned char*>(raw.data());
  Ctx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonce, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, U(key_), r) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &len, r + kNonce,
                        static_cast<int>(n)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, r + kNonce + n) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()) + len, &len) != 1) {
    return Unreadable("a stored webhook secret does not open with this key (another key, or altered)");
  }
  return plain;
}

}  // namespace labshare::notify
