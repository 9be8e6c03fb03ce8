#include "common/page_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <thread>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <google/protobuf/descriptor.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/proto_util.h"

namespace labshare {

// HMAC-SHA-256 (RFC 2104) with the key's padded blocks made once and
// SHA-256 fetched once: EVP_Q_mac looks both up by name and sets the key up
// again on every call, which cost about as much as the rest of a token. The
// constructor checks the result against EVP_Q_mac.
struct PageTokenCodec::Key {
  static constexpr size_t kBlock = 64;  // SHA-256's block

  explicit Key(std::string b) : bytes(std::move(b)), sha256(EVP_MD_fetch(nullptr, "SHA256", nullptr)) {
    if (sha256 == nullptr) Fail();
    unsigned char block[kBlock] = {};
    if (bytes.size() > kBlock) {
      unsigned int n = 0;
      if (EVP_Digest(bytes.data(), bytes.size(), block, &n, sha256, nullptr) != 1) Fail();
    } else {
      std::copy(bytes.begin(), bytes.end(), block);
    }
    for (size_t i = 0; i < kBlock; ++i) {
      inner[i] = static_cast<unsigned char>(block[i] ^ 0x36);
      outer[i] = static_cast<unsigned char>(block[i] ^ 0x5c);
    }
    OPENSSL_cleanse(block, sizeof block);
    const std::string probe = "labshare page token key check";
    unsigned char want[EVP_MAX_MD_SIZE], got[32];
    size_t size = 0;
    if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, bytes.data(), bytes.size(),
                  reinterpret_cast<const unsigned char*>(probe.data()), probe.size(), want, sizeof want,
                  &size) == nullptr ||
        size != sizeof got || !Mac(probe, got) || CRYPTO_memcmp(want, got, sizeof got) != 0) {
      Fail();
    }
  }
  ~Key() {
    OPENSSL_cleanse(bytes.data(), bytes.size());
    OPENSSL_cleanse(inner, sizeof inner);
    OPENSSL_cleanse(outer, sizeof outer);
    EVP_MD_free(sha256);
  }
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;

  // HMAC-SHA-256 of `message` into out (32 bytes).
  bool Mac(absl::string_view message, unsigned char out[32]) const {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> c(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    unsigned char inner_hash[32];
    unsigned int n = 0;
    return c != nullptr && EVP_DigestInit_ex2(c.get(), sha256, nullptr) == 1 &&
           EVP_DigestUpdate(c.get(), inner, kBlock) == 1 &&
           EVP_DigestUpdate(c.get(), message.data(), message.size()) == 1 &&
           EVP_DigestFinal_ex(c.get(), inner_hash, &n) == 1 && n == sizeof inner_hash &&
           EVP_DigestInit_ex2(c.get(), sha256, nullptr) == 1 && EVP_DigestUpdate(c.get(), outer, kBlock) == 1 &&
           EVP_DigestUpdate(c.get(), inner_hash, sizeof inner_hash) == 1 &&
           EVP_DigestFinal_ex(c.get(), out, &n) == 1 && n == 32;
  }

  // Only a broken OpenSSL installation gets here; the token service fails
  // the same way when it starts (FromRedis makes the key with OpenSSL).
  [[noreturn]] static void Fail() {
    std::fprintf(stderr, "labshare: HMAC-SHA-256 failed while making a page token\n");
    std::abort();
  }

  std::string bytes;
  EVP_MD* sha256;
  unsigned char inner[kBlock], outer[kBlock];  // the key's block xor 0x36, xor 0x5c
};

namespace {

constexpr char kVersion = 1;
constexpr size_t kMacBytes = 16;  // of HMAC-SHA-256's 32
constexpr size_t kMaxTokenChars = 4096;

// "<length>:<bytes>": no part can run into the next.
void AppendPart(std::string* out, absl::string_view part) { absl::StrAppend(out, part.size(), ":", part); }

absl::Status BadToken() {
  return InvalidField("page_token",
                      "not a token from the previous page of this same list, with the same filters, for "
                      "the same caller; start again without page_token",
                      "INVALID_PAGE_TOKEN");
}

}  // namespace

PageTokenCodec::PageTokenCodec(std::string key) : key_(std::make_shared<const Key>(std::move(key))) {}

absl::StatusOr<PageTokenCodec> PageTokenCodec::FromRedis(RedisPool* redis, absl::string_view hash_tag,
                                                         absl::Duration wait, const std::function<bool()>& stop) {
  const std::string key = absl::StrCat(hash_tag, ":page_token_key");
  unsigned char fresh[32];
  if (RAND_bytes(fresh, sizeof fresh) != 1) {
    return MakeError(absl::StatusCode::kInternal, "KEY_GENERATION_FAILED",
                     "the random number generator failed while making the page-token key");
  }
  std::string candidate(reinterpret_cast<const char*>(fresh), sizeof fresh);
  OPENSSL_cleanse(fresh, sizeof fresh);
  const absl::Time started = absl::Now();
  const absl::Time deadline = started + wait;  // InfiniteFuture for an infinite wait
  absl::Time logged = absl::InfinitePast();
  absl::Duration backoff = absl::Milliseconds(50);
  while (true) {
    // SET NX then GET in one round trip: the first replica's key wins.
    auto replies = redis->Pipeline({{"SET", key, candidate, "NX"}, {"GET", key}});
    absl::Status error = replies.status();
    if (replies.ok()) {
      absl::StatusOr<std::string> stored = (*replies)[1].AsString();
      if (stored.ok() && stored->size() >= 32) {
        OPENSSL_cleanse(candidate.data(), candidate.size());
        PageTokenCodec codec(*std::move(stored));
        return codec;
      }
      error = stored.ok() ? MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR",
                                      absl::StrCat("the page-token key ", key, " in Redis is shorter than 32 bytes; "
                                                   "delete it and restart the service"))
                          : stored.status();
    }
    const absl::Time now = absl::Now();
    if (now + backoff > deadline) {
      OPENSSL_cleanse(candidate.data(), candidate.size());
      return error;
    }
    if (stop && stop()) {
      OPENSSL_cleanse(candidate.data(), candidate.size());
      return absl::CancelledError(absl::StrCat("stopped while waiting for Redis to read the page-token key ", key,
                                               ": ", error.message()));
    }
    if (now - logged >= absl::Seconds(10)) {  // not every retry: a long outage logs every 10 s
      LogWarning("waiting for Redis to read the page-token key; not ready until it does",
                 {{"key", key},
                  {"waited_seconds", absl::StrCat(absl::ToInt64Seconds(now - started))},
                  {"error", std::string(error.message())}});
      logged = now;
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

std::string PageTokenCodec::Mac(const google::protobuf::Message& request, const Principal& caller,
                                absl::string_view last) const {
  std::unique_ptr<google::protobuf::Message> filters(request.New());
  filters->CopyFrom(request);
  const auto* d = filters->GetDescriptor();
  for (const char* name : {"page_size", "page_token", "resume_token"}) {
    if (const auto* f = d->FindFieldByName(name)) filters->GetReflection()->ClearField(filters.get(), f);
  }
  std::vector<int> roles;
  for (Role r : caller.roles) roles.push_back(static_cast<int>(r));
  std::sort(roles.begin(), roles.end());
  roles.erase(std::unique(roles.begin(), roles.end()), roles.end());

  std::string binding = "labshare page token\n";
  AppendPart(&binding, d->full_name());
  AppendPart(&binding, SerializeDeterministic(*filters));
  AppendPart(&binding, caller.user_id);
  AppendPart(&binding, caller.organization_id);
  std::string role_list;
  for (int r : roles) absl::StrAppend(&role_list, r, ",");
  AppendPart(&binding, role_list);
  AppendPart(&binding, last);

  unsigned char mac[32];
  if (!key_->Mac(binding, mac)) Key::Fail();
  return std::string(reinterpret_cast<const char*>(mac), kMacBytes);
}

absl::StatusOr<PageRequest> PageTokenCodec::Parse(const google::protobuf::Message& request,
                                                  const Principal& caller) const {
  const auto* d = request.GetDescriptor();
  const auto* r = request.GetReflection();
  PageRequest page;
  if (const auto* f = d->FindFieldByName("page_size")) {
    const int32_t size = r->GetInt32(request, f);
    if (size < 0) {
      return InvalidField("page_size", absl::StrCat("must not be negative: 0 for the default (", kDefaultPageSize,
                                                    "), at most ", kMaxPageSize, " per page"));
    }
    page.page_size = size == 0 ? kDefaultPageSize : std::min(size, kMaxPageSize);
  }
  const auto* tf = d->FindFieldByName("page_token");
  const std::string token = tf ? r->GetString(request, tf) : "";
  if (token.empty()) return page;
  std::optional<std::string> after = Open(request, caller, token);
  if (!after) return BadToken();
  page.after = *std::move(after);
  return page;
}

std::optional<std::string> PageTokenCodec::Open(const google::protobuf::Message& request, const Principal& caller,
                                                absl::string_view token) const {
  std::string raw;
  // Only the form Make writes: base64 ignores the spare low bits of a
  // final character, so a token altered there would decode the same.
  if (token.size() > kMaxTokenChars || !absl::WebSafeBase64Unescape(token, &raw) ||
      absl::WebSafeBase64Escape(raw) != token || raw.size() <= 1 + kMacBytes || raw[0] != kVersion) {
    return std::nullopt;
  }
  const absl::string_view last = absl::string_view(raw).substr(1 + kMacBytes);
  const std::string expected = Mac(request, caller, last);
  if (CRYPTO_memcmp(expected.data(), raw.data() + 1, kMacBytes) != 0) return std::nullopt;
  return std::string(last);
}

std::string PageTokenCodec::Make(const google::protobuf::Message& request, const Principal& caller,
                                 absl::string_view last) const {
  std::string raw(1, kVersion);
  absl::StrAppend(&raw, Mac(request, caller, last), last);
  return absl::WebSafeBase64Escape(raw);
}

}  // namespace labshare
