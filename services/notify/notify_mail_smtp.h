// Sending one mail through an SMTP relay with libcurl (STARTTLS, AUTH), and
// building the MIME message (multipart/alternative, UTF-8, base64).
#ifndef LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_SMTP_H_
#define LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_SMTP_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/mail_address.h"

namespace labshare::notify {

struct SmtpOptions {
  std::string server;      // "host:port"
  bool starttls = false;   // require STARTTLS (refuse to send without it)
  std::string ca_file;     // the relay's CA for STARTTLS; empty: system roots
  std::string user;        // AUTH when not empty
  std::string password;
  std::string from;        // envelope and From: address
  absl::Duration timeout = absl::Seconds(60);
};

struct OutgoingMail {
  std::string message_id;  // unique, without <>
  std::string to_address;
  std::string to_name;
  std::string subject;
  std::string text;
  std::string html;
  std::string unsubscribe_url;  // List-Unsubscribe (RFC 8058) when not empty
  std::string kind;             // X-LabShare-Kind
  absl::Time date;
};

// common/mail_address.h: SendSmtp refuses any other address for good.
using ::labshare::ValidMailAddress;

// The RFC 5322 message, CRLF line ends. The display name is a quoted-string
// (printable ASCII) or RFC 2047 encoded words; a non-ASCII subject is
// encoded words of at most 75 characters on folded lines.
std::string BuildMime(const OutgoingMail& mail, const std::string& from);

struct SmtpResult {
  enum Outcome { kSent, kTemporary, kPermanent };
  Outcome outcome = kTemporary;
  std::string error;  // as a person reads it
};

SmtpResult SendSmtp(const SmtpOptions& options, const OutgoingMail& mail);

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_SMTP_H_
