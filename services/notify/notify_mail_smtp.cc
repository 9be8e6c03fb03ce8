#include "services/notify/notify_mail_smtp.h"

#include <curl/curl.h>

#include <cstring>
#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace labshare::notify {
namespace {

std::string EncodedWord(const std::string& s) {
  bool ascii = true;
  for (unsigned char ch : s) {
    if (ch >= 0x80 || ch < 0x20) ascii = false;
  }
  if (ascii) return s;
  return absl::StrCat("=?UTF-8?B?", absl::Base64Escape(s), "?=");
}

std::string Base64Lines(const std::string& s) {
  const std::string b = absl::Base64Escape(s);
  std::string out;
  for (size_t i = 0; i < b.size(); i += 76) absl::StrAppend(&out, b.substr(i, 76), "\r\n");
  return out;
}

struct Reader {
  const std::string* data;
  size_t offset = 0;
};

size_t Read(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* r = static_cast<Reader*>(userdata);
  const size_t n = std::min(size * nitems, r->data->size() - r->offset);
  std::memcpy(buffer, r->data->data() + r->offset, n);
  r->offset += n;
  return n;
}

}  // namespace

std::string BuildMime(const OutgoingMail& m, const std::string& from) {
  const std::string boundary = absl::StrCat("=_labshare_", m.message_id);
  std::string out;
  absl::StrAppend(&out, "From: LabShare <", from, ">\r\n");
  absl::StrAppend(&out, "To: ", m.to_name.empty() ? "" : EncodedWord(m.to_name) + " ", "<", m.to_address, ">\r\n");
  absl::StrAppend(&out, "Subject: ", EncodedWord(m.subject), "\r\n");
  absl::StrAppend(&out, "Date: ", absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", m.date, absl::UTCTimeZone()), "\r\n");
  absl::StrAppend(&out, "Message-ID: <", m.message_id, "@labshare>\r\n");
  absl::StrAppend(&out, "MIME-Version: 1.0\r\n");
  if (!m.kind.empty()) absl::StrAppend(&out, "X-LabShare-Kind: ", m.kind, "\r\n");
  absl::StrAppend(&out, "X-LabShare-Message: ", m.message_id, "\r\n");
  if (!m.unsubscribe_url.empty()) {
    absl::StrAppend(&out, "List-Unsubscribe: <", m.unsubscribe_url, ">\r\n");
    absl::StrAppend(&out, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
  }
  absl::StrAppend(&out, "Content-Type: multipart/alternative; boundary=\"", boundary, "\"\r\n\r\n");
  absl::StrAppend(&out, "--", boundary, "\r\nContent-Type: text/plain; charset=utf-8\r\n",
                  "Content-Transfer-Encoding: base64\r\n\r\n", Base64Lines(m.text));
  absl::StrAppend(&out, "--", boundary, "\r\nContent-Type: text/html; charset=utf-8\r\n",
                  "Content-Transfer-Encoding: base64\r\n\r\n", Base64Lines(m.html));
  absl::StrAppend(&out, "--", boundary, "--\r\n");
  return out;
}

SmtpResult SendSmtp(const SmtpOptions& o, const OutgoingMail& mail) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  SmtpResult result;
  CURL* c = curl_easy_init();
  if (c == nullptr) {
    result.error = "cannot start libcurl";
    return result;
  }
  const std::string message = BuildMime(mail, o.from);
  Reader reader{&message};
  char error[CURL_ERROR_SIZE] = {0};
  const std::string url = absl::StrCat("smtp://", o.server);
  const std::string from = absl::StrCat("<", o.from, ">");
  const std::string to = absl::StrCat("<", mail.to_address, ">");
  curl_slist* rcpt = curl_slist_append(nullptr, to.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp");
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_MAIL_FROM, from.c_str());
  curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
  curl_easy_setopt(c, CURLOPT_READFUNCTION, &Read);
  curl_easy_setopt(c, CURLOPT_READDATA, &reader);
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(o.timeout)));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  if (o.starttls) {
    curl_easy_setopt(c, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_ALL));
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!o.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, o.ca_file.c_str());
  }
  if (!o.user.empty()) {
    curl_easy_setopt(c, CURLOPT_USERNAME, o.user.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, o.password.c_str());
  }
  const CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(rcpt);
  curl_easy_cleanup(c);
  if (rc == CURLE_OK) {
    result.outcome = SmtpResult::kSent;
    return result;
  }
  result.error = absl::StrCat(code > 0 ? absl::StrCat(code, " ") : "", error[0] != 0 ? error : curl_easy_strerror(rc));
  // 5xx is the relay's final word (RFC 5321); everything else may pass.
  result.outcome = code >= 500 && code < 600 ? SmtpResult::kPermanent : SmtpResult::kTemporary;
  return result;
}

}  // namespace labshare::notify
