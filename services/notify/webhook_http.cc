#include "services/notify/webhook_http.h"

#include <curl/curl.h>

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

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

AttemptResult PostWebhook(const WebhookPost& post, const WebhookHttpOptions& options) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
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
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, post.body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(post.body.size()));
  const CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  result.status_code = static_cast<int>(status);
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && status != 0)) {
    result.status_code = 0;
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
