#include "services/notify/webhook_http.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace labshare::notify {
namespace {

constexpr size_t kMaxAnswerBytes = 64 * 1024;

size_t Discard(char*, size_t size, size_t count, void* user) {
  auto* total = static_cast<size_t*>(user);
  *total += size * count;
  if (*total > kMaxAnswerBytes) return 0;  // enough: the status is known
  return size * count;
}

bool PrivateV4(uint32_t a) {  // host byte order
  auto in = [a](uint32_t net, int bits) { return (a >> (32 - bits)) == (net >> (32 - bits)); };
  return in(0x00000000, 8) || in(0x0A000000, 8) || in(0x64400000, 10) || in(0x7F000000, 8) ||
         in(0xA9FE0000, 16) || in(0xAC100000, 12) || in(0xC0000000, 24) || in(0xC0A80000, 16) ||
         in(0xC6120000, 15) || a >= 0xE0000000 ||
         // Documentation (TEST-NET-1..3, RFC 5737) and the retired 6to4
         // relay anycast (RFC 7526), reserved like 2001:db8::/32 below.
         in(0xC0000200, 24) || in(0xC6336400, 24) || in(0xCB007100, 24) || in(0xC0586300, 24);
}

struct Guard {
  bool allow_private = false;
  bool refused = false;
};

curl_socket_t OpenSocket(void* user, curlsocktype, struct curl_sockaddr* address) {
  auto* guard = static_cast<Guard*>(user);
  if (!guard->allow_private && IsPrivateAddress(&address->addr)) {
    guard->refused = true;
    return CURL_SOCKET_BAD;
  }
  return socket(address->family, address->socktype, address->protocol);
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

bool IsPrivateAddress(const struct sockaddr* address) {
  if (address->sa_family == AF_INET) {
    return PrivateV4(ntohl(reinterpret_cast<const sockaddr_in*>(address)->sin_addr.s_addr));
  }
  if (address->sa_family != AF_INET6) return true;
  const unsigned char* b = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr.s6_addr;
  bool v4_mapped = true;
  for (int i = 0; i < 10; ++i) v4_mapped = v4_mapped && b[i] == 0;
  if (v4_mapped && b[10] == 0xff && b[11] == 0xff) {
    return PrivateV4((uint32_t{b[12]} << 24) | (uint32_t{b[13]} << 16) | (uint32_t{b[14]} << 8) | b[15]);
  }
  bool zero_prefix = true;  // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
  for (int i = 0; i < 12; ++i) zero_prefix = zero_prefix && b[i] == 0;
  if (zero_prefix) return true;
  auto v4_at = [b](int i) {
    return (uint32_t{b[i]} << 24) | (uint32_t{b[i + 1]} << 16) | (uint32_t{b[i + 2]} << 8) | b[i + 3];
  };
  // The IPv4-translated ::ffff:0:a.b.c.d (SIIT, RFC 2765): a translator
  // reaches the IPv4 address it carries, judged by the IPv4 rule.
  bool zero_64 = true;
  for (int i = 0; i < 8; ++i) zero_64 = zero_64 && b[i] == 0;
  if (zero_64 && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0) return PrivateV4(v4_at(12));
  // Transition prefixes that lead to an IPv4 address: the well-known NAT64
  // 64:ff9b::/96 and 6to4 2002::/16 by the IPv4 rule of the address they
  // carry; the local-use NAT64 64:ff9b:1::/48 (any IPv4 behind it) and
  // Teredo 2001::/32 (a relay's choice) are refused.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) {
    bool wkp = true;
    for (int i = 4; i < 12; ++i) wkp = wkp && b[i] == 0;
    if (wkp) return PrivateV4(v4_at(12));
    if (b[4] == 0x00 && b[5] == 0x01) return true;
  }
  if (b[0] == 0x20 && b[1] == 0x02) return PrivateV4(v4_at(2));
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00) return true;  // Teredo
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return true;                            // fec0::/10 site-local
  if ((b[0] & 0xfe) == 0xfc) return true;                 // fc00::/7 unique local
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return true;  // fe80::/10 link-local
  if (b[0] == 0xff) return true;                           // multicast
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return true;  // documentation
  // The other IANA special-purpose blocks that are not globally reachable
  // (RFC 6890's registry): discard-only 100::/64 (RFC 6666), benchmarking
  // 2001:2::/48 (RFC 5180, as 198.18.0.0/15), ORCHID 2001:10::/28 and
  // ORCHIDv2 2001:20::/28 (RFC 7343: identifiers, not routable),
  // documentation 3fff::/20 (RFC 9637, as 2001:db8::/32) and the SRv6 SIDs
  // 5f00::/16 (RFC 9602).
  bool discard = b[0] == 0x01 && b[1] == 0x00;
  for (int i = 2; i < 8; ++i) discard = discard && b[i] == 0;
  if (discard) return true;
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00) {
    if (b[3] == 0x02 && b[4] == 0x00 && b[5] == 0x00) return true;  // 2001:2::/48
    if ((b[3] & 0xf0) == 0x10 || (b[3] & 0xf0) == 0x20) return true;  // 2001:10::/28, 2001:20::/28
  }
  if (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0x00) return true;  // 3fff::/20
  if (b[0] == 0x5f && b[1] == 0x00) return true;                            // 5f00::/16
  return false;
}

AttemptResult PostWebhook(const WebhookPost& post, const WebhookHttpOptions& options) {
  // curl_global_init: once in main.cc, before any thread.
  AttemptResult result;
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) {
    result.error = "no answer: cannot initialise libcurl";
    return result;
  }
  CURL* c = curl.get();
  char error[CURL_ERROR_SIZE] = {0};
  size_t received = 0;
  curl_slist* raw = nullptr;
  for (const std::string& h :
       {std::string("Content-Type: application/json"), std::string("User-Agent: LabShare-Webhooks/1"),
        absl::StrCat("LabShare-Webhook-Id: ", post.id), absl::StrCat("LabShare-Webhook-Timestamp: ", post.timestamp),
        absl::StrCat("LabShare-Signature: ", post.signature), std::string("Expect:")}) {
    raw = curl_slist_append(raw, h.c_str());
  }
  std::unique_ptr<curl_slist, SlistDeleter> headers(raw);
  curl_easy_setopt(c, CURLOPT_URL, post.url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &Discard);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &received);
  long timeout_ms = static_cast<long>(absl::ToInt64Milliseconds(options.timeout));
  if (timeout_ms <= 0) timeout_ms = 1;
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  if (!options.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  // Straight to the endpoint (no proxy from the environment), and only to a
  // public address.
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  Guard guard;
  guard.allow_private = options.allow_private_addresses;
  curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, &OpenSocket);
  curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &guard);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, post.body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(post.body.size()));
  const CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  result.status_code = static_cast<int>(status);
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && status != 0)) {
    result.status_code = 0;
    if (guard.refused) {
      result.error = "no answer: the endpoint's address is loopback, private or reserved (refused)";
      return result;
    }
    result.error = absl::StrCat("no answer: ", error[0] != '\0' ? std::string(error) : curl_easy_strerror(rc));
    return result;
  }
  if (status >= 200 && status < 300) {
    result.ok = true;
    return result;
  }
  result.error = absl::StrCat("HTTP ", status);
  return result;
}

}  // namespace labshare::notify
