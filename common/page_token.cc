#include "common/page_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <google/protobuf/descriptor.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/proto_util.h"

namespace labshare {

struct PageTokenCodec::Key {
  explicit Key(std::string b) : bytes(std::move(b)) {}
  ~Key() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;

  std::string bytes;
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

PageTokenCodec PageTokenCodec::FromSigner(const TokenSigner& signer) {
  return PageTokenCodec(signer.DeriveKey("page tokens"));
}

std::string PageTokenCodec::Mac(const google::protobuf::Message& request, const Principal& caller,
                                absl::string_view last) const {
  std::unique_ptr<google::protobuf::Message> filters(request.New());
  filters->CopyFrom(request);
  const auto* d = filters->GetDescriptor();
  for (const char* name : {"page_size", "page_token"}) {
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

  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t size = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key_->bytes.data(), key_->bytes.size(),
                reinterpret_cast<const unsigned char*>(binding.data()), binding.size(), mac, sizeof mac,
                &size) == nullptr ||
      size < kMacBytes) {
    // Only a broken OpenSSL installation gets here; the token service fails
    // the same way at start-up (TokenSigner::Create).
    std::fprintf(stderr, "labshare: HMAC-SHA-256 failed while making a page token\n");
    std::abort();
  }
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
  std::string raw;
  if (token.size() > kMaxTokenChars || !absl::WebSafeBase64Unescape(token, &raw) ||
      raw.size() <= 1 + kMacBytes || raw[0] != kVersion) {
    return BadToken();
  }
  const absl::string_view last = absl::string_view(raw).substr(1 + kMacBytes);
  const std::string expected = Mac(request, caller, last);
  if (CRYPTO_memcmp(expected.data(), raw.data() + 1, kMacBytes) != 0) return BadToken();
  page.after = std::string(last);
  return page;
}

std::string PageTokenCodec::Make(const google::protobuf::Message& request, const Principal& caller,
                                 absl::string_view last) const {
  std::string raw(1, kVersion);
  absl::StrAppend(&raw, Mac(request, caller, last), last);
  return absl::WebSafeBase64Escape(raw);
}

}  // namespace labshare
