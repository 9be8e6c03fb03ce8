#include "common/token.h"
// Temporary: the HS256 signer, kept only until every caller uses TokenIssuer /
// TokenVerifier (issue 13). Deleted at the end of the conversion.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <variant>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/error.h"

namespace labshare {

// The key bytes, wiped when the last TokenSigner sharing them goes away.
struct TokenSigner::Key {
  explicit Key(std::string b) : bytes(std::move(b)) {}
  ~Key() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;

  std::string bytes;
};

namespace {

// Debian's Abseil is built with its own absl::string_view (not an alias of
// std::string_view), so views cross into Abseil through this.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr std::string_view kIssuer = "labshare";
constexpr size_t kMacBytes = 32;             // SHA-256 output
constexpr size_t kMaxTokenBytes = 8 * 1024;  // far above any token we mint
constexpr size_t kMaxKeyFileBytes = 64 * 1024;
constexpr std::string_view kHeaderJson = R"({"alg":"HS256","typ":"JWT"})";

// ---------------------------------------------------------------------------
// base64url without padding (RFC 4648 §5).

constexpr char kB64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string Base64UrlEncode(std::string_view in) {
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(in[k])); };
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
    out.push_back(kB64Alphabet[(v >> 6) & 63]);
    out.push_back(kB64Alphabet[v & 63]);
  }
  const size_t rest = in.size() - i;
  if (rest == 1) {
    const uint32_t v = byte(i) << 16;
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
  } else if (rest == 2) {
    const uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8);
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
    out.push_back(kB64Alphabet[(v >> 6) & 63]);
  }
  return out;
}

int Base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Strict: only the URL-safe alphabet, no padding, no whitespace, and the
// unused low bits of the last character must be zero (one encoding per value).
std::optional<std::string> Base64UrlDecode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = Base64UrlValue(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>(static_cast<unsigned char>((acc >> bits) & 0xFF)));
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

// ---------------------------------------------------------------------------
// UTF-8.

// Length of the well-formed UTF-8 sequence starting at s[i] (1..4), or 0 if
// the bytes there are not well-formed (overlong, surrogate, > U+10FFFF,
// truncated).
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = at(i);
  if (c < 0x80) return 1;
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c == 0xE0) {
    len = 3, lo = 0xA0;
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    len = 3;
  } else if (c == 0xED) {
    len = 3, hi = 0x9F;
  } else if (c == 0xF0) {
    len = 4, lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    len = 4;
  } else if (c == 0xF4) {
    len = 4, hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  if (at(i + 1) < lo || at(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
  }
  return len;
}

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// ---------------------------------------------------------------------------
// JSON writer: just what the claims need.

void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\b') {
      out += "\\b";
    } else if (c == '\f') {
      out += "\\f";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20) {
      out += "\\u00";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    } else if (c >= 0x80) {
      const size_t len = Utf8SequenceLength(s, i);
      if (len == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
        ++i;
      } else {
        out.append(s.substr(i, len));
        i += len;
      }
      continue;
    } else {
      out.push_back(static_cast<char>(c));
    }
    ++i;
  }
  out.push_back('"');
}

// ---------------------------------------------------------------------------
// JSON parser: a flat object whose values are strings, integers or arrays of
// strings. Anything else (nesting, floats, true/false/null, duplicate keys,
// trailing bytes, invalid UTF-8, raw control characters) is rejected.

using JsonValue = std::variant<std::string, int64_t, std::vector<std::string>>;
using JsonObject = std::map<std::string, JsonValue, std::less<>>;

class FlatJsonParser {
 public:
  explicit FlatJsonParser(std::string_view in) : in_(in) {}

  std::optional<JsonObject> ParseObject() {
    JsonObject obj;
    SkipWhitespace();
    if (!Consume('{')) return std::nullopt;
    SkipWhitespace();
    if (!Consume('}')) {
      while (true) {
        SkipWhitespace();
        std::optional<std::string> key = ParseString();
        if (!key) return std::nullopt;
        SkipWhitespace();
        if (!Consume(':')) return std::nullopt;
        SkipWhitespace();
        std::optional<JsonValue> value = ParseValue();
        if (!value) return std::nullopt;
        if (!obj.emplace(std::move(*key), std::move(*value)).second) return std::nullopt;
        SkipWhitespace();
        if (Consume(',')) continue;
        if (Consume('}')) break;
        return std::nullopt;
      }
    }
    SkipWhitespace();
    if (pos_ != in_.size()) return std::nullopt;
    return obj;
  }

 private:
  bool AtEnd() const { return pos_ >= in_.size(); }
  char Peek() const { return in_[pos_]; }

  bool Consume(char c) {
    if (AtEnd() || Peek() != c) return false;
    ++pos_;
    return true;
  }

  void SkipWhitespace() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t' || Peek() == '\n' || Peek() == '\r')) ++pos_;
  }

  std::optional<JsonValue> ParseValue() {
    if (AtEnd()) return std::nullopt;
    const char c = Peek();
    if (c == '"') {
      std::optional<std::string> s = ParseString();
      if (!s) return std::nullopt;
      return JsonValue(std::move(*s));
    }
    if (c == '[') {
      std::optional<std::vector<std::string>> a = ParseStringArray();
      if (!a) return std::nullopt;
      return JsonValue(std::move(*a));
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      std::optional<int64_t> i = ParseInteger();
      if (!i) return std::nullopt;
      return JsonValue(*i);
    }
    return std::nullopt;
  }

  std::optional<std::vector<std::string>> ParseStringArray() {
    std::vector<std::string> out;
    if (!Consume('[')) return std::nullopt;
    SkipWhitespace();
    if (Consume(']')) return out;
    while (true) {
      SkipWhitespace();
      std::optional<std::string> s = ParseString();
      if (!s) return std::nullopt;
      out.push_back(std::move(*s));
      SkipWhitespace();
      if (Consume(',')) continue;
      if (Consume(']')) return out;
      return std::nullopt;
    }
  }

  // -?(0|[1-9][0-9]*), within int64; fractions and exponents are rejected.
  std::optional<int64_t> ParseInteger() {
    const bool negative = Consume('-');
    if (AtEnd() || Peek() < '0' || Peek() > '9') return std::nullopt;
    const uint64_t limit = negative ? uint64_t{1} << 63 : static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    uint64_t magnitude = 0;
    if (Peek() == '0') {
      ++pos_;
    } else {
      while (!AtEnd() && Peek() >= '0' && Peek() <= '9') {
        const auto digit = static_cast<uint64_t>(Peek() - '0');
        if (magnitude > (limit - digit) / 10) return std::nullopt;
        magnitude = magnitude * 10 + digit;
        ++pos_;
      }
    }
    if (!AtEnd() && (Peek() == '.' || Peek() == 'e' || Peek() == 'E' || (Peek() >= '0' && Peek() <= '9'))) {
      return std::nullopt;
    }
    if (!negative) return static_cast<int64_t>(magnitude);
    if (magnitude == uint64_t{1} << 63) return std::numeric_limits<int64_t>::min();
    return -static_cast<int64_t>(magnitude);
  }

  std::optional<uint32_t> ParseHex4() {
    if (in_.size() - pos_ < 4) return std::nullopt;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in_[pos_++];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return std::nullopt;
      }
      v = (v << 4) | d;
    }
    return v;
  }

  std::optional<std::string> ParseString() {
    if (!Consume('"')) return std::nullopt;
    std::string out;
    while (true) {
      if (AtEnd()) return std::nullopt;
      const unsigned char c = static_cast<unsigned char>(Peek());
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) return std::nullopt;
      if (c >= 0x80) {
        const size_t len = Utf8SequenceLength(in_, pos_);
        if (len == 0) return std::nullopt;
        out.append(in_.substr(pos_, len));
        pos_ += len;
        continue;
      }
      ++pos_;
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        continue;
      }
      if (AtEnd()) return std::nullopt;
      const char e = in_[pos_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          std::optional<uint32_t> cp = ParseHex4();
          if (!cp) return std::nullopt;
          if (*cp >= 0xDC00 && *cp <= 0xDFFF) return std::nullopt;  // lone low surrogate
          if (*cp >= 0xD800 && *cp <= 0xDBFF) {
            if (!Consume('\\') || !Consume('u')) return std::nullopt;
            std::optional<uint32_t> low = ParseHex4();
            if (!low || *low < 0xDC00 || *low > 0xDFFF) return std::nullopt;
            *cp = 0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00);
          }
          AppendUtf8(out, *cp);
          break;
        }
        default:
          return std::nullopt;
      }
    }
  }

  std::string_view in_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------
// HMAC and errors.

// HMAC-SHA-256(key, data) into out; false if OpenSSL fails.
bool HmacSha256(std::string_view key, std::string_view data, unsigned char (&out)[kMacBytes]) {
  size_t out_len = 0;
  const unsigned char* r =
      EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, kMacBytes, &out_len);
  return r != nullptr && out_len == kMacBytes;
}

absl::Status InvalidToken(std::string_view detail) {
  return MakeError(absl::StatusCode::kUnauthenticated, "INVALID_TOKEN",
                   absl::StrCat("invalid bearer token: ", AbslView(detail),
                                "; send a token minted by labshare-token with the current key"));
}

absl::Status CryptoFailure() {
  return MakeError(absl::StatusCode::kInternal, "TOKEN_CRYPTO_FAILURE",
                   "HMAC-SHA-256 is unavailable in the OpenSSL library; check the OpenSSL installation");
}

void TrimTrailingNewlines(std::string& s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
}

void Wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

constexpr absl::string_view kHowToProvideKey =
    "provide a key of at least 32 bytes in a file named by --key_file or in the environment "
    "variable LABSHARE_TOKEN_KEY (generate one with `labshare-token --generate_key`)";

// Reads the whole key file; NOT_FOUND / INVALID_ARGUMENT on failure.
absl::StatusOr<std::string> ReadKeyFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return MakeError(absl::StatusCode::kNotFound, "TOKEN_KEY_FILE_NOT_FOUND",
                       absl::StrCat("token key file ", path, " does not exist; ", kHowToProvideKey),
                       {{"key_file", path}});
    }
    return MakeError(absl::StatusCode::kInvalidArgument, "TOKEN_KEY_FILE_UNREADABLE",
                     absl::StrCat("cannot open token key file ", path, ": ", std::strerror(err),
                                  "; make it readable by this process"),
                     {{"key_file", path}});
  }
  auto unreadable = [&](std::string_view why) {
    return MakeError(absl::StatusCode::kInvalidArgument, "TOKEN_KEY_FILE_UNREADABLE",
                     absl::StrCat("cannot read token key file ", path, ": ", AbslView(why)), {{"key_file", path}});
  };
  struct stat st;
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    ::close(fd);
    return unreadable("it is a directory or cannot be inspected; name a regular file");
  }
  std::string data;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      OPENSSL_cleanse(buf, sizeof(buf));
      Wipe(data);
      return unreadable(std::strerror(err));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxKeyFileBytes) {
      ::close(fd);
      OPENSSL_cleanse(buf, sizeof(buf));
      Wipe(data);
      return unreadable("it is larger than 64 KiB; a key file holds just the key");
    }
  }
  ::close(fd);
  OPENSSL_cleanse(buf, sizeof(buf));
  return data;
}

template <typename T>
const T* Get(const JsonObject& obj, std::string_view key, bool& wrong_type) {
  auto it = obj.find(key);
  if (it == obj.end()) return nullptr;
  const T* v = std::get_if<T>(&it->second);
  if (v == nullptr) wrong_type = true;
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------
// TokenSigner.

absl::StatusOr<TokenSigner> TokenSigner::Create(std::string key) {
  if (key.size() < kMinKeyBytes) {
    const size_t size = key.size();
    Wipe(key);
    return MakeError(absl::StatusCode::kInvalidArgument, "WEAK_TOKEN_KEY",
                     absl::StrCat("the token signing key is ", size, " bytes; it must be at least ",
                                  kMinKeyBytes, " bytes. Generate one with `labshare-token --generate_key`"),
                     {{"key_bytes", absl::StrCat(size)}, {"min_key_bytes", absl::StrCat(kMinKeyBytes)}});
  }
  auto k = std::make_shared<const Key>(std::move(key));
  Wipe(key);  // moved-from; clears anything a short-string buffer kept
  unsigned char probe[kMacBytes];
  if (!HmacSha256(k->bytes, "", probe)) return CryptoFailure();
  return TokenSigner(std::move(k));
}

absl::StatusOr<TokenSigner> TokenSigner::FromFileOrEnv(const std::string& key_file) {
  std::string key;
  if (!key_file.empty()) {
    absl::StatusOr<std::string> read = ReadKeyFile(key_file);
    if (!read.ok()) return read.status();
    key = std::move(read).value();
  } else {
    const char* env = std::getenv(kKeyEnvVar);
    if (env == nullptr || *env == '\0') {
      return MakeError(absl::StatusCode::kFailedPrecondition, "TOKEN_KEY_MISSING",
                       absl::StrCat("no token signing key is configured: ", kHowToProvideKey));
    }
    key = env;
  }
  TrimTrailingNewlines(key);
  return Create(std::move(key));
}

std::string TokenSigner::DeriveKey(std::string_view purpose) const {
  unsigned char out[kMacBytes];
  std::string label = "labshare derived key\n";
  label.append(purpose.data(), purpose.size());
  if (!HmacSha256(key_->bytes, label, out)) {
    // Create() proved HMAC-SHA-256 works with this key.
    std::fprintf(stderr, "labshare: HMAC-SHA-256 failed while deriving a key\n");
    std::abort();
  }
  std::string key(reinterpret_cast<const char*>(out), kMacBytes);
  OPENSSL_cleanse(out, sizeof out);
  return key;
}

std::string TokenSigner::Mint(const Principal& p, absl::Time issued_at) const {
  std::string claims = "{\"iss\":";
  AppendJsonString(claims, kIssuer);
  claims += ",\"sub\":";
  AppendJsonString(claims, p.user_id);
  claims += ",\"org\":";
  AppendJsonString(claims, p.organization_id);
  claims += ",\"roles\":[";
  for (size_t i = 0; i < p.roles.size(); ++i) {
    if (i > 0) claims.push_back(',');
    AppendJsonString(claims, RoleName(p.roles[i]));
  }
  absl::StrAppend(&claims, "],\"iat\":", absl::ToUnixSeconds(issued_at),
                  ",\"exp\":", absl::ToUnixSeconds(p.expires_at), "}");

  std::string token = absl::StrCat(Base64UrlEncode(kHeaderJson), ".", Base64UrlEncode(claims));
  unsigned char mac[kMacBytes];
  if (!HmacSha256(key_->bytes, token, mac)) {
    // Create() proved HMAC-SHA-256 works with this key; failing now means the
    // process is out of memory or OpenSSL is broken.
    std::fprintf(stderr, "labshare: HMAC-SHA-256 failed while minting a token\n");
    std::abort();
  }
  absl::StrAppend(&token, ".",
                  Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(mac), kMacBytes)));
  return token;
}

absl::StatusOr<Principal> TokenSigner::Verify(std::string_view token, absl::Time now) const {
  if (token.empty()) return InvalidToken("the token is empty");
  if (token.size() > kMaxTokenBytes) return InvalidToken("the token is too long");
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return InvalidToken("a token has three dot-separated parts");
  }
  const std::string_view header_b64 = token.substr(0, dot1);
  const std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view signature_b64 = token.substr(dot2 + 1);

  // Header: only HS256 is accepted, whatever the token says.
  std::optional<std::string> header_json = Base64UrlDecode(header_b64);
  if (!header_json) return InvalidToken("the header is not base64url");
  std::optional<JsonObject> header = FlatJsonParser(*header_json).ParseObject();
  if (!header) return InvalidToken("the header is not a valid JSON object");
  bool wrong_type = false;
  const std::string* alg = Get<std::string>(*header, "alg", wrong_type);
  if (alg == nullptr || *alg != "HS256") return InvalidToken("the algorithm must be HS256");
  const std::string* typ = Get<std::string>(*header, "typ", wrong_type);
  if (wrong_type || (typ != nullptr && !absl::EqualsIgnoreCase(*typ, "JWT"))) {
    return InvalidToken("the header type must be JWT");
  }
  if (header->count("crit") != 0) return InvalidToken("critical header extensions are not supported");

  // Signature, in constant time, before looking at the claims.
  std::optional<std::string> signature = Base64UrlDecode(signature_b64);
  if (!signature) return InvalidToken("the signature is not base64url");
  unsigned char expected[kMacBytes];
  if (!HmacSha256(key_->bytes, token.substr(0, dot2), expected)) return CryptoFailure();
  if (signature->size() != kMacBytes || CRYPTO_memcmp(signature->data(), expected, kMacBytes) != 0) {
    return InvalidToken("the signature does not match");
  }

  // Claims.
  std::optional<std::string> payload_json = Base64UrlDecode(payload_b64);
  if (!payload_json) return InvalidToken("the payload is not base64url");
  std::optional<JsonObject> claims = FlatJsonParser(*payload_json).ParseObject();
  if (!claims) return InvalidToken("the payload is not a valid JSON object");

  const std::string* iss = Get<std::string>(*claims, "iss", wrong_type);
  const std::string* sub = Get<std::string>(*claims, "sub", wrong_type);
  const std::string* org = Get<std::string>(*claims, "org", wrong_type);
  const auto* roles = Get<std::vector<std::string>>(*claims, "roles", wrong_type);
  const int64_t* exp = Get<int64_t>(*claims, "exp", wrong_type);
  const int64_t* nbf = Get<int64_t>(*claims, "nbf", wrong_type);
  Get<int64_t>(*claims, "iat", wrong_type);
  if (wrong_type) return InvalidToken("a claim has the wrong type");
  if (iss != nullptr && *iss != kIssuer) return InvalidToken("the issuer is not labshare");
  if (sub == nullptr || sub->empty()) return InvalidToken("the subject (sub) is missing");
  if (exp == nullptr) return InvalidToken("the expiry (exp) is missing");

  Principal p;
  p.user_id = *sub;
  if (org != nullptr) p.organization_id = *org;
  if (roles != nullptr) {
    for (const std::string& name : *roles) {
      absl::StatusOr<Role> role = ParseRole(name);
      if (!role.ok()) return InvalidToken("the token names an unknown role");
      p.roles.push_back(*role);
    }
  }
  p.expires_at = absl::FromUnixSeconds(*exp);
  if (nbf != nullptr && now < absl::FromUnixSeconds(*nbf)) return InvalidToken("the token is not valid yet");
  if (now >= p.expires_at) {
    return MakeError(absl::StatusCode::kUnauthenticated, "TOKEN_EXPIRED",
                     absl::StrCat("the bearer token expired at ",
                                  absl::FormatTime(absl::RFC3339_sec, p.expires_at, absl::UTCTimeZone()),
                                  "; obtain a new token"),
                     {{"expired_at", absl::FormatTime(absl::RFC3339_sec, p.expires_at, absl::UTCTimeZone())}});
  }
  return p;
}

}  // namespace labshare
