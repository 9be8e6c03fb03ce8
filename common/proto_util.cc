#include "common/proto_util.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"

namespace labshare {

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp out;
  const int64_t s = absl::ToUnixSeconds(t);
  out.set_seconds(s);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(s))));
  return out;
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

google::protobuf::Duration ToProto(absl::Duration d) {
  google::protobuf::Duration out;
  const int64_t s = absl::IDivDuration(d, absl::Seconds(1), &d);
  out.set_seconds(s);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return out;
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string SerializeDeterministic(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
}

namespace {

std::string Sha256Hex(absl::string_view data) {
  // OpenSSL 3's one-shot SHA256() looks the algorithm up and allocates a
  // context on every call; a digest on each request's hot path uses the
  // algorithm fetched once and a context per thread.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  struct Ctx {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Ctx() { EVP_MD_CTX_free(ctx); }
  };
  thread_local Ctx t;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  unsigned int size = 0;
  if (md == nullptr || t.ctx == nullptr || EVP_DigestInit_ex2(t.ctx, md, nullptr) != 1 ||
      EVP_DigestUpdate(t.ctx, data.data(), data.size()) != 1 || EVP_DigestFinal_ex(t.ctx, digest, &size) != 1 ||
      size != sizeof(digest)) {
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

// The request without its paging fields: what a token must stay bound to.
std::string FilterHash(const google::protobuf::Message& request) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  copy->CopyFrom(request);
  const auto* d = copy->GetDescriptor();
  for (const char* name : {"page_size", "page_token"}) {
    if (const auto* f = d->FindFieldByName(name)) copy->GetReflection()->ClearField(copy.get(), f);
  }
  return Sha256Hex(SerializeDeterministic(*copy)).substr(0, 16);
}

absl::Status BadToken() {
  return InvalidField("page_token",
                      "not a token from the previous page of this same query; start again "
                      "without page_token",
                      "INVALID_PAGE_TOKEN");
}
}  // namespace

std::string RequestFingerprint(absl::string_view method, const google::protobuf::Message& request) {
  return Sha256Hex(absl::StrCat(method, "\n", SerializeDeterministic(request)));
}

absl::StatusOr<PageRequest> ParsePageRequest(const google::protobuf::Message& request) {
  const auto* d = request.GetDescriptor();
  const auto* r = request.GetReflection();
  PageRequest page;
  if (const auto* f = d->FindFieldByName("page_size")) {
    const int32_t size = r->GetInt32(request, f);
    if (size < 0) return InvalidField("page_size", "must not be negative");
    page.page_size = size == 0 ? kDefaultPageSize : std::min(size, kMaxPageSize);
  }
  const auto* tf = d->FindFieldByName("page_token");
  const std::string token = tf ? r->GetString(request, tf) : "";
  if (token.empty()) return page;
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) return BadToken();
  const size_t sep = raw.find('\n');
  if (sep == std::string::npos || raw.substr(0, sep) != FilterHash(request)) return BadToken();
  page.after = raw.substr(sep + 1);
  if (page.after.empty()) return BadToken();
  return page;
}

std::string MakePageToken(const google::protobuf::Message& request, const std::string& last) {
  return absl::WebSafeBase64Escape(absl::StrCat(FilterHash(request), "\n", last));
}

}  // namespace labshare
