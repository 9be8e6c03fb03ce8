// Public keys for verifying JWTs: a JSON Web Key Set (RFC 7517) read from a
// file or fetched from an https:// URL, and the JWK helpers around it.
//
// Accepted keys: "kty":"EC" with "crv":"P-256" (ES256) and "kty":"RSA"
// (RS256, at least 2048 bits). Other keys in a set (encryption keys, other
// curves) are skipped, so a provider's full set can be used as is. A key
// without "kid" is known by its RFC 7638 thumbprint.
//
// Refresh (rotation without restart):
//   file  re-read when its modification time, size or inode changed (checked
//         on every lookup: one stat()), and on an unknown kid (at most once a
//         second);
//   URL   re-fetched on an unknown kid (at most once a second) and every
//         5 minutes.
// Refreshes are single-flight: concurrent lookups of an unknown kid cause one
// read or fetch, and the others wait for its result. A refresh that fails
// (unreachable URL, a file caught mid-write, invalid JSON) keeps the previous
// keys and is logged, and the set counts as stale until a read or fetch
// succeeds again: an unknown kid is then reported as "could not refresh"
// (the key may exist at the source), not as unknown.
//
// Errors of Open (startup, never RPC answers): INVALID_ARGUMENT INVALID_JWKS
// (not a JWKS, no usable key, an http:// URL); NOT_FOUND / INVALID_ARGUMENT
// JWKS_UNAVAILABLE (file missing or unreadable, HTTP status other than 200);
// UNAVAILABLE HTTP_UNAVAILABLE (see http_client.h).
#ifndef LABSHARE_COMMON_JWKS_H_
#define LABSHARE_COMMON_JWKS_H_

#include <openssl/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/http_client.h"

namespace labshare {

// One public key of a set.
struct Jwk {
  std::string kid;
  std::string kty;  // "EC" or "RSA"
  std::string alg;  // the key's "alg" if the set names one, else ""
  std::shared_ptr<EVP_PKEY> key;
  std::string pem;  // the key as a PEM SubjectPublicKeyInfo (tells keys apart on a refresh)

  // The JWS algorithm this key verifies: "ES256" or "RS256".
  std::string Algorithm() const { return kty == "EC" ? "ES256" : "RS256"; }
};

class KeySet {
 public:
  // `file_or_url`: a path, or an https:// URL (fetched with `http`).
  static absl::StatusOr<std::shared_ptr<KeySet>> Open(std::string file_or_url, HttpOptions http = {});
  // A fixed set from JWKS JSON text (never refreshed).
  static absl::StatusOr<std::shared_ptr<KeySet>> FromJson(std::string_view jwks_json);

  // The key with this kid, refreshing the set once when it is unknown; null
  // when it is still unknown (then *why, if given, says why: unknown, or the
  // refresh failed). An empty kid finds the only key of a one-key set.
  // *refresh_failed (if given) is set, when null is returned, to whether the
  // set is stale: the latest read or fetch failed, whether it was this
  // lookup's or an earlier one whose failure is less than the one-second
  // limit old (a refresh the limit skips is still a refresh that could not
  // be done). Then the kid is not known to be invalid, only not verifiable now.
  std::shared_ptr<const Jwk> Find(std::string_view kid, std::string* why = nullptr, bool* refresh_failed = nullptr);

  // Changes whenever the set's keys change (a file is checked first). A
  // verified token cached under an older generation must be verified again.
  uint64_t Generation();

  // The kids currently known, sorted.
  std::vector<std::string> Kids() const;
  const std::string& source() const { return source_; }

  KeySet(std::string source, HttpOptions http) : source_(std::move(source)), http_(std::move(http)) {}

 private:
  using Keys = std::map<std::string, std::shared_ptr<const Jwk>, std::less<>>;
  struct FileStamp {
    int64_t mtime_ns = -1;
    int64_t size = -1;
    uint64_t inode = 0;
    bool operator==(const FileStamp& o) const {
      return mtime_ns == o.mtime_ns && size == o.size && inode == o.inode;
    }
  };

  bool is_url() const;
  bool is_fixed() const { return source_.empty(); }
  // Reads or fetches the set; on success installs it (generation + 1 when
  // the kids or keys changed). Caller holds refresh_mu_.
  absl::Status LoadLocked();
  // LoadLocked for a refresh: records its outcome in last_error_.
  absl::Status RefreshLocked();
  // For a file: stat it and reload when it changed. For a URL: refetch when
  // the 5-minute period is over (without waiting for another refresh).
  void MaybeRefresh();
  std::shared_ptr<const Keys> Current() const;

  const std::string source_;  // "" for a fixed set
  const HttpOptions http_;

  std::mutex refresh_mu_;                                // held while reading/fetching
  std::chrono::steady_clock::time_point last_fetch_{};   // guarded by refresh_mu_
  FileStamp stamp_;                                      // guarded by refresh_mu_
  // The latest refresh's error; "" when it succeeded (the set is current).
  std::string last_error_;                               // guarded by refresh_mu_

  mutable std::mutex mu_;
  std::shared_ptr<const Keys> keys_;  // guarded by mu_
  uint64_t generation_ = 0;           // guarded by mu_
};

// Parses JWKS JSON into keys (skipping unusable ones); INVALID_ARGUMENT
// INVALID_JWKS when it is not a JWKS or has no usable key.
absl::StatusOr<std::vector<std::shared_ptr<const Jwk>>> ParseJwks(std::string_view json, const std::string& source);

// A private key (PKCS#8 or traditional PEM): INVALID_ARGUMENT
// INVALID_SIGNING_KEY unless it is an EC P-256 key.
absl::StatusOr<std::shared_ptr<EVP_PKEY>> ParseEcPrivateKeyPem(std::string_view pem, const std::string& source);
// A fresh P-256 private key as PKCS#8 PEM.
absl::StatusOr<std::string> GenerateEcPrivateKeyPem();
// The public half of an EC P-256 or RSA key as a JWK object (JSON text) with
// "kid" = its RFC 7638 thumbprint, "use":"sig" and "alg".
std::string PublicJwkJson(const EVP_PKEY* key);
// RFC 7638 thumbprint (base64url SHA-256 of the canonical JWK members).
std::string JwkThumbprint(const EVP_PKEY* key);
// {"keys":[...]} of JWK objects.
std::string JwksJson(const std::vector<std::string>& jwk_objects);

}  // namespace labshare

#endif  // LABSHARE_COMMON_JWKS_H_
