// Flags of the mail module (labshare-notify).
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/secret_file.h"
#include "common/time_zone.h"
#include "services/notify/notify_mail_module.h"

ABSL_FLAG(std::string, smtp, "127.0.0.1:25", "HOST:PORT of the SMTP relay mail is sent through.");
ABSL_FLAG(bool, smtp_starttls, false,
          "Require STARTTLS on the SMTP connection (verifying the relay's certificate); never send in clear.");
ABSL_FLAG(std::string, smtp_ca_file, "", "CA bundle (PEM) that signs the relay's certificate; empty: the system's.");
ABSL_FLAG(std::string, smtp_user, "", "SMTP AUTH user; empty: no authentication.");
ABSL_FLAG(std::string, smtp_password_file, "", "File (mode 0600) holding the SMTP AUTH password.");
ABSL_FLAG(std::string, mail_from, "labshare@localhost", "Envelope sender and From: address of every mail.");
ABSL_FLAG(std::string, default_language, "zh-CN", "Language of users without settings: zh-CN or en.");
ABSL_FLAG(std::string, default_time_zone, "Asia/Shanghai", "IANA time zone of users without settings.");
ABSL_FLAG(int, digest_hour, 8, "Local hour (0-23, the recipient's zone) at which daily digests go out.");
ABSL_FLAG(absl::Duration, reminder_lead, absl::Hours(24), "How long before a booking's start its reminder goes out.");
ABSL_FLAG(absl::Duration, handover_lead, absl::Hours(24), "How long before a lease's term starts the handover notice goes out.");
ABSL_FLAG(absl::Duration, return_lead, absl::Hours(24), "How long before a lease's term ends the return notice goes out.");
ABSL_FLAG(int64_t, subsidy_pool_low_minor, 0,
          "Mail the consortium admins when a subsidy pool's balance falls below this (minor units); 0: never.");
ABSL_FLAG(absl::Duration, mail_retry_initial, absl::Seconds(30), "First retry delay of a failed delivery (then doubled).");
ABSL_FLAG(absl::Duration, mail_retry_max, absl::Hours(1), "Longest delay between two delivery attempts.");
ABSL_FLAG(int, mail_max_attempts, 8, "Delivery attempts before a mail goes to the dead letters.");
ABSL_FLAG(absl::Duration, mail_inflight_timeout, absl::Minutes(10),
          "A mail claimed by another replica longer ago than this is taken as lost in its crash (delivery uncertain).");
ABSL_FLAG(absl::Duration, mail_max_event_age, absl::Hours(24 * 7),
          "Events older than this make no mail (a notifier deployed on a long history does not mail it); 0: no limit.");
ABSL_FLAG(absl::Duration, schedule_grace, absl::Hours(1),
          "A reminder, handover or return notice more than this late (domain clock) is dropped without a mail.");
ABSL_FLAG(absl::Duration, mail_dead_letter_retention, absl::Hours(24 * 90),
          "Dead letters that died longer ago than this (domain clock) are removed; 0: kept forever.");
ABSL_FLAG(absl::Duration, unsubscribe_validity, absl::Hours(24 * 365),
          "How long the unsubscribe link of a mail works (domain clock); then it says so and links the settings.");
ABSL_FLAG(absl::Duration, mail_poll, absl::Milliseconds(200), "Pause of the sender when nothing is due.");

namespace labshare::notify {

absl::StatusOr<MailOptions> MailOptionsFromFlags() {
  MailOptions o;
  o.smtp.server = absl::GetFlag(FLAGS_smtp);
  o.smtp.starttls = absl::GetFlag(FLAGS_smtp_starttls);
  o.smtp.ca_file = absl::GetFlag(FLAGS_smtp_ca_file);
  o.smtp.user = absl::GetFlag(FLAGS_smtp_user);
  o.smtp.from = absl::GetFlag(FLAGS_mail_from);
  if (const std::string file = absl::GetFlag(FLAGS_smtp_password_file); !file.empty()) {
    LS_ASSIGN_OR_RETURN(o.smtp.password, ReadSecretFile(file, "SMTP password"));
    while (!o.smtp.password.empty() && (o.smtp.password.back() == '\n' || o.smtp.password.back() == '\r')) {
      o.smtp.password.pop_back();
    }
  }
  o.default_language = absl::GetFlag(FLAGS_default_language);
  if (o.default_language != "zh-CN" && o.default_language != "en") {
    return absl::InvalidArgumentError("--default_language must be zh-CN or en");
  }
  o.default_time_zone = absl::GetFlag(FLAGS_default_time_zone);
  absl::TimeZone zone;
  if (!LoadIanaTimeZone(o.default_time_zone, &zone)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--default_time_zone: not an IANA time zone name: ", o.default_time_zone));
  }
  o.digest_hour = absl::GetFlag(FLAGS_digest_hour);
  if (o.digest_hour < 0 || o.digest_hour > 23) return absl::InvalidArgumentError("--digest_hour must be 0..23");
  o.interpret.reminder_lead = absl::GetFlag(FLAGS_reminder_lead);
  o.interpret.handover_lead = absl::GetFlag(FLAGS_handover_lead);
  o.interpret.return_lead = absl::GetFlag(FLAGS_return_lead);
  o.interpret.subsidy_pool_low_minor = absl::GetFlag(FLAGS_subsidy_pool_low_minor);
  o.retry_initial = absl::GetFlag(FLAGS_mail_retry_initial);
  o.retry_max = absl::GetFlag(FLAGS_mail_retry_max);
  o.max_attempts = std::max(1, absl::GetFlag(FLAGS_mail_max_attempts));
  o.inflight_timeout = absl::GetFlag(FLAGS_mail_inflight_timeout);
  o.poll = absl::GetFlag(FLAGS_mail_poll);
  o.dead_letter_retention = absl::GetFlag(FLAGS_mail_dead_letter_retention);
  o.unsubscribe_validity = absl::GetFlag(FLAGS_unsubscribe_validity);
  if (o.unsubscribe_validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--unsubscribe_validity must be positive");
  }
  o.max_event_age = absl::GetFlag(FLAGS_mail_max_event_age);
  o.schedule_grace = absl::GetFlag(FLAGS_schedule_grace);
  if (o.schedule_grace < absl::ZeroDuration()) return absl::InvalidArgumentError("--schedule_grace must not be negative");
  return o;
}

}  // namespace labshare::notify
