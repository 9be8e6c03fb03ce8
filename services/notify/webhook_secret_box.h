// Webhook signing secrets at rest: AES-256-GCM (OpenSSL EVP) with a key read
// from a secret file (--webhook_secret_key_file, common/secret_file.h), so
// that a copy of Redis (a backup, a replica, an AOF) does not sign
// deliveries. The secret is needed in clear to sign, so it is sealed, not
// hashed.
//
// Stored form: "aesgcm1:" + base64(12-byte random nonce | ciphertext |
// 16-byte tag), with the document's key as additional data (a sealed secret
// copied under another webhook's key does not open). Anything without the
// prefix is a secret written before encryption, used as it is and sealed by
// WebhookManager::SealClearSecrets.
#ifndef LABSHARE_SERVICES_NOTIFY_WEBHOOK_SECRET_BOX_H_
#define LABSHARE_SERVICES_NOTIFY_WEBHOOK_SECRET_BOX_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace labshare::notify {

inline constexpr char kSealedPrefix[] = "aesgcm1:";

class SecretBox {
 public:
  // The key file holds 32 random bytes as 64 hex digits (openssl rand -hex
  // 32; surrounding whitespace ignored). Startup errors: those of
  // ReadSecretFile, or INVALID_ARGUMENT (SECRET_KEY_INVALID) for anything
  // but 64 hex digits.
  static absl::StatusOr<SecretBox> FromKeyFile(const std::string& path);
  // `key`: 32 bytes.
  static absl::StatusOr<SecretBox> FromKey(absl::string_view key);

  // The stored form of `secret` under the document key `aad`.
  absl::StatusOr<std::string> Seal(absl::string_view secret, absl::string_view aad) const;
  // The secret: opened when sealed (INTERNAL, CORRUPT_DOCUMENT when the
  // tag does not verify: another key, or tampered), as it is otherwise.
  absl::StatusOr<std::string> Open(absl::string_view stored, absl::string_view aad) const;
  static bool IsSealed(absl::string_view stored);

 // Move-only; the key is wiped (OPENSSL_cleanse) when the box goes.
  SecretBox(SecretBox&& other) noexcept;
  SecretBox& operator=(SecretBox&& other) noexcept;
  SecretBox(const SecretBox&) = delete;
  SecretBox& operator=(const SecretBox&) = delete;
  ~SecretBox();

 private:
  SecretBox() = default;
  void Wipe();

  std::string key_;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_WEBHOOK_SECRET_BOX_H_
