#include "common/jwt.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/error.h"

namespace labshare {
namespace {

constexpr size_t kMaxTokenBytes = 8 * 1024;

absl::Status InvalidToken(const std::string& detail) {
  return MakeError(absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
                   absl::StrCat("invalid bearer token: ", detail, "; sign in again with `labshare login`"));
}

json_t* J(const std::shared_ptr<const void>& p) { return const_cast<json_t*>(static_cast<const json_t*>(p.get())); }

std::shared_ptr<const void> Hold(json_t* j) {
  return std::shared_ptr<const void>(j, [](const void* p) { json_decref(const_cast<json_t*>(static_cast<const json_t*>(p))); });
}

std::optional<std::string> DecodePart(std::string_view part) {
  std::string out;
  if (part.find('=') != std::string_view::npos ||
      !absl::WebSafeBase64Unescape(absl::string_view(part.data(), part.size()), &out)) {
    return std::nullopt;
  }
  return out;
}

bool IsInteger(json_t* v) { return json_is_integer(v); }

// A "typ" value as the media type it names (RFC 7515 4.1.9: a value
// without '/' is read with "application/" before it; media types compare
// case-insensitively).
std::string MediaType(std::string_view typ) {
  std::string out = absl::AsciiStrToLower(absl::string_view(typ.data(), typ.size()));
  if (out.find('/') == std::string::npos) out.insert(0, "application/");
  return out;
}

// Whether `signature` (the JWS signature bytes: R || S for ES256, the
// PKCS #1 v1.5 signature for RS256) signs `input` with SHA-256 under key.
// OpenSSL directly rather than libjwt's jwt_decode, which refuses a header
// whose typ is not "JWT" before it looks at the signature (and reports
// every failure as one error code).
bool VerifyWithOpenSsl(const Jwk& key, std::string_view input, const std::string& signature) {
  std::string der;
  if (key.kty == "EC") {
    if (signature.size() != 64) return false;
    const auto* raw = reinterpret_cast<const unsigned char*>(signature.data());
    std::unique_ptr<ECDSA_SIG, void (*)(ECDSA_SIG*)> sig(ECDSA_SIG_new(), ECDSA_SIG_free);
    BIGNUM* r = BN_bin2bn(raw, 32, nullptr);
    BIGNUM* s = BN_bin2bn(raw + 32, 32, nullptr);
    if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
      BN_free(r);
      BN_free(s);
      return false;
    }
    unsigned char* encoded = nullptr;
    const int n = i2d_ECDSA_SIG(sig.get(), &encoded);
    if (n <= 0) return false;
    der.assign(reinterpret_cast<const char*>(encoded), static_cast<size_t>(n));
    OPENSSL_free(encoded);
  }
  const std::string& bytes = key.kty == "EC" ? der : signature;
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  return ctx != nullptr && key.key != nullptr &&
         EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.key.get()) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                          reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
}

// A refused signature (a forged token: the caller decides how many) leaves
// OpenSSL's per-thread error queue empty, for the TLS code sharing the thread.
bool SignatureVerifies(const Jwk& key, std::string_view input, const std::string& signature) {
  const bool ok = VerifyWithOpenSsl(key, input, signature);
  if (!ok) ERR_clear_error();
  return ok;
}

}  // namespace

std::optional<std::string> JwtClaims::String(std::string_view name) const {
  const char* s = json_string_value(json_object_get(J(json_), std::string(name).c_str()));
  if (s == nullptr) return std::nullopt;
  return std::string(s);
}

std::optional<bool> JwtClaims::Bool(std::string_view name) const {
  json_t* v = json_object_get(J(json_), std::string(name).c_str());
  if (!json_is_boolean(v)) return std::nullopt;
  return json_is_true(v);
}

std::vector<std::string> JwtClaims::Strings(std::string_view name) const {
  std::vector<std::string> out;
  json_t* v = json_object_get(J(json_), std::string(name).c_str());
  if (json_is_string(v)) {
    out.emplace_back(json_string_value(v));
  } else if (json_is_array(v)) {
    size_t i;
    json_t* e;
    json_array_foreach(v, i, e) {
      if (json_is_string(e)) out.emplace_back(json_string_value(e));
    }
  }
  return out;
}

absl::StatusOr<JwtHeader> ReadJwtHeader(std::string_view token, const JwtRules& rules) {
  if (token.empty()) return InvalidToken("the token is empty");
  if (token.size() > kMaxTokenBytes) return InvalidToken("the token is longer than 8 KiB");
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return InvalidToken("a token has three dot-separated parts");
  }

  // The header, read here so that the algorithm and the key are chosen by
  // the rules, never by the token.
  std::optional<std::string> header_text = DecodePart(token.substr(0, dot1));
  if (!header_text) return InvalidToken("the header is not base64url");
  json_error_t error;
  std::unique_ptr<json_t, void (*)(json_t*)> header(
      json_loadb(header_text->data(), header_text->size(), JSON_REJECT_DUPLICATES, &error),
      [](json_t* j) { json_decref(j); });
  if (!json_is_object(header.get())) return InvalidToken("the header is not a JSON object");
  const char* alg = json_string_value(json_object_get(header.get(), "alg"));
  if (alg == nullptr ||
      std::find(rules.algorithms.begin(), rules.algorithms.end(), alg) == rules.algorithms.end()) {
    return InvalidToken(absl::StrCat("the algorithm must be ", absl::StrJoin(rules.algorithms, " or ")));
  }
  if (json_object_get(header.get(), "crit") != nullptr) {
    return InvalidToken("critical header extensions are not supported");
  }
  if (json_t* typ = json_object_get(header.get(), "typ"); typ != nullptr) {
    const bool known = json_is_string(typ) && std::any_of(rules.types.begin(), rules.types.end(), [&](const std::string& t) {
                         return MediaType(json_string_value(typ)) == MediaType(t);
                       });
    if (!known) {
      return InvalidToken(absl::StrCat("the header's type (typ) must be ", absl::StrJoin(rules.types, " or "),
                                       " (or no typ)"));
    }
  }
  json_t* kid_json = json_object_get(header.get(), "kid");
  if (kid_json != nullptr && !json_is_string(kid_json)) return InvalidToken("the key id (kid) is not a string");
  JwtHeader out;
  out.alg = alg;
  out.kid = kid_json != nullptr ? json_string_value(kid_json) : "";
  out.payload_begin = dot1 + 1;
  out.signature_begin = dot2 + 1;
  return out;
}

absl::StatusOr<JwtClaims> VerifyJwt(std::string_view token, KeySet& keys, const JwtRules& rules, absl::Time now) {
  LS_ASSIGN_OR_RETURN(const JwtHeader head, ReadJwtHeader(token, rules));
  const size_t dot1 = head.payload_begin - 1, dot2 = head.signature_begin - 1;
  const char* alg = head.alg.c_str();
  const std::string& kid = head.kid;
  json_error_t error;
  std::string why;
  bool refresh_failed = false;
  std::shared_ptr<const Jwk> key = keys.Find(kid, &why, &refresh_failed);
  if (key == nullptr && refresh_failed && rules.stale_keys_unavailable) {
    return MakeError(absl::StatusCode::kUnavailable, "JWKS_UNAVAILABLE",
                     absl::StrCat("cannot verify the token now: ", why, "; try again later"),
                     {{"jwks", keys.source()}});
  }
  if (key == nullptr) return InvalidToken(why);
  if (key->Algorithm() != alg) return InvalidToken(absl::StrCat("the key ", kid, " does not sign ", alg));

  // The signature, over the header and payload exactly as sent.
  std::optional<std::string> signature = DecodePart(token.substr(dot2 + 1));
  if (!signature || signature->empty() || (key->kty == "EC" && signature->size() != 64)) {
    return InvalidToken("the signature is not a base64url " + std::string(alg) + " signature");
  }
  if (!SignatureVerifies(*key, token.substr(0, dot2), *signature)) {
    return InvalidToken("the signature does not verify with the issuer's key");
  }

  // The claims: parsed from the verified payload.
  std::optional<std::string> payload = DecodePart(token.substr(dot1 + 1, dot2 - dot1 - 1));
  if (!payload) return InvalidToken("the payload is not base64url");
  json_t* claims = json_loadb(payload->data(), payload->size(), JSON_REJECT_DUPLICATES, &error);
  if (!json_is_object(claims)) {
    json_decref(claims);
    return InvalidToken("the payload is not a JSON object");
  }
  JwtClaims out;
  out.json_ = Hold(claims);
  out.kid_ = key->kid;

  if (!rules.issuer.empty() && out.iss() != rules.issuer) {
    return InvalidToken(absl::StrCat("the issuer (iss) is not ", rules.issuer));
  }
  if (!rules.audiences.empty()) {
    const std::vector<std::string> aud = out.Strings("aud");
    const bool match = std::any_of(aud.begin(), aud.end(), [&](const std::string& a) {
      return std::find(rules.audiences.begin(), rules.audiences.end(), a) != rules.audiences.end();
    });
    if (!match) return InvalidToken(absl::StrCat("the audience (aud) does not include ", absl::StrJoin(rules.audiences, " or ")));
  }
  json_t* iat = json_object_get(claims, "iat");
  json_t* exp = json_object_get(claims, "exp");
  json_t* nbf = json_object_get(claims, "nbf");
  if (!IsInteger(iat)) return InvalidToken("the issue time (iat) is missing or not an integer");
  if (!IsInteger(exp)) return InvalidToken("the expiry (exp) is missing or not an integer");
  if (nbf != nullptr && !IsInteger(nbf)) return InvalidToken("nbf is not an integer");
  out.iat_ = absl::FromUnixSeconds(json_integer_value(iat));
  out.exp_ = absl::FromUnixSeconds(json_integer_value(exp));
  if (out.exp_ <= out.iat_) return InvalidToken("the expiry (exp) is not after the issue time (iat)");
  if (rules.max_lifetime > absl::ZeroDuration() && out.exp_ - out.iat_ > rules.max_lifetime) {
    return InvalidToken(absl::StrCat("its lifetime (exp - iat) exceeds the maximum of ",
                                     absl::FormatDuration(rules.max_lifetime)));
  }
  if (out.iat_ > now + rules.leeway) return InvalidToken("it was issued in the future (iat)");
  if (nbf != nullptr && absl::FromUnixSeconds(json_integer_value(nbf)) > now + rules.leeway) {
    return InvalidToken("it is not valid yet (nbf)");
  }
  if (now >= out.exp_) {
    const std::string at = absl::FormatTime(absl::RFC3339_sec, out.exp_, absl::UTCTimeZone());
    return MakeError(absl::StatusCode::kUnauthenticated, "TOKEN_EXPIRED",
                     absl::StrCat("the bearer token expired at ", at, "; sign in again with `labshare login`"),
                     {{"expired_at", at}});
  }
  return out;
}

}  // namespace labshare
