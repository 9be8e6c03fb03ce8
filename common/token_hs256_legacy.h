// Temporary (issue 13 conversion): the old HS256 signer, until every caller
// uses TokenIssuer / TokenVerifier. Included by common/token.h only.
#ifndef LABSHARE_COMMON_TOKEN_HS256_LEGACY_H_
#define LABSHARE_COMMON_TOKEN_HS256_LEGACY_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace labshare {

struct Principal;

// Mints and verifies tokens with one HS256 key. Thread-safe and immutable after
// construction; cheap to copy (copies share the key, which is wiped from
// memory when the last copy goes away).
class TokenSigner {
 public:
  // Minimum key length in bytes (the HMAC-SHA-256 output size).
  static constexpr size_t kMinKeyBytes = 32;
  // Name of the environment variable FromFileOrEnv falls back to.
  static constexpr char kKeyEnvVar[] = "LABSHARE_TOKEN_KEY";

  // The key is used as raw bytes (a 64-hex-character key from
  // `labshare-token --generate_key` is used as its 64 ASCII characters).
  // It must be at least 32 bytes; INVALID_ARGUMENT (reason WEAK_TOKEN_KEY)
  // otherwise.
  static absl::StatusOr<TokenSigner> Create(std::string key);

  // Key from the file named by key_file if non-empty, else from the
  // environment variable LABSHARE_TOKEN_KEY (an empty value counts as unset).
  // Trailing '\n' / '\r' characters are trimmed from either source.
  // Errors: FAILED_PRECONDITION (reason TOKEN_KEY_MISSING) when neither is set;
  // NOT_FOUND (reason TOKEN_KEY_FILE_NOT_FOUND) when the file does not exist;
  // INVALID_ARGUMENT (reason TOKEN_KEY_FILE_UNREADABLE) when it cannot be read
  // (permissions, a directory, larger than 64 KiB); WEAK_TOKEN_KEY as Create.
  static absl::StatusOr<TokenSigner> FromFileOrEnv(const std::string& key_file);

  // A token for p: iat = issued_at, exp = p.expires_at, both truncated to
  // whole seconds (floor). Bytes of user_id / organization_id that are not
  // valid UTF-8 are written as U+FFFD (JSON text must be UTF-8).
  std::string Mint(const Principal& p, absl::Time issued_at) const;

  // Checks the token and returns its principal. Errors, all UNAUTHENTICATED:
  //   INVALID_TOKEN  not three base64url parts, header alg other than HS256 (or
  //                  "crit" present, or typ other than JWT), bad signature
  //                  (compared in constant time), malformed JSON (only a flat
  //                  object of strings, integers and arrays of strings is
  //                  accepted; duplicate keys are rejected), missing or empty
  //                  sub, missing exp, a known claim of the wrong type, iss
  //                  present but not "labshare", unknown role name, nbf in the
  //                  future, token longer than 8 KiB;
  //   TOKEN_EXPIRED  now >= exp (checked last: only a token that is otherwise
  //                  valid reports expiry).
  // A missing "org" yields ""; a missing "roles" yields no roles; unknown
  // claims are ignored. Messages never echo the token.
  absl::StatusOr<Principal> Verify(std::string_view token, absl::Time now) const;

  // A 32-byte key for another purpose, HMAC-SHA-256(key, "labshare derived
  // key\n" + purpose): the same on every process holding this key, useless
  // for minting tokens, and different for each purpose.
  std::string DeriveKey(std::string_view purpose) const;

 private:
  struct Key;
  explicit TokenSigner(std::shared_ptr<const Key> key) : key_(std::move(key)) {}

  std::shared_ptr<const Key> key_;
};

}  // namespace labshare

#endif  // LABSHARE_COMMON_TOKEN_HS256_LEGACY_H_
