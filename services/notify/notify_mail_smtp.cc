#include "services/notify/notify_mail_smtp.h"

#include <curl/curl.h>

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace labshare::notify {
namespace {

bool PlainAscii(absl::string_view s) {
  for (unsigned char ch : s) {
    if (ch >= 0x7f || ch < 0x20) return false;
  }
  return true;
}

// RFC 2047 B encoded words of at most 75 characters each (45 bytes of
// UTF-8, never splitting a character), separated by folding (CRLF SP).
std::string EncodedWords(absl::string_view s) {
  constexpr size_t kMaxBytes = 45;  // base64 60 + "=?UTF-8?B?" + "?=" = 72
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t end = std::min(s.size(), i + kMaxBytes);
    // Back off to a character boundary (not before a continuation byte).
    while (end < s.size() && end > i + 1 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
    if (!out.empty()) out += "\r\n ";
    absl::StrAppend(&out, "=?UTF-8?B?", absl::Base64Escape(s.substr(i, end - i)), "?=");
    i = end;
  }
  return out;
}

std::string EncodedWord(const std::string& s) { return PlainAscii(s) ? s : EncodedWords(s); }

// A display name as RFC 5322 allows it before "<address>": a quoted-string
// (backslash before '"' and '\\') when printable ASCII, else encoded words.
std::string DisplayName(const std::string& s) {
  if (!PlainAscii(s)) return EncodedWords(s);
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  out += '"';
  return out;
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
  absl::StrAppend(&out, "To: ", m.to_name.empty() ? "" : DisplayName(m.to_name) + " ", "<", m.to_address, ">\r\n");
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
  SmtpResult result;
  if (std::string why; !ValidMailAddress(mail.to_address, &why)) {
    // Never put it into a header or RCPT TO: refused for good.
    result.outcome = SmtpResult::kPermanent;
    result.error = absl::StrCat("invalid recipient address (", why, "); not sent");
    return result;
  }
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
