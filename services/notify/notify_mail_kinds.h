// Mail notifications: which events make which mails for whom (Interpret),
// and what the mails say (Render). Pure functions: no Redis, no network.
#ifndef LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_KINDS_H_
#define LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_KINDS_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/events.h"
#include "common/token.h"
#include "labshare/notify/v1/notify.pb.h"

namespace labshare::notify {

using Kind = v1::NotificationKind;

// The enum value's name (e.g. BOOKING_CONFIRMED) and back.
std::string KindName(Kind kind);
bool ParseKind(absl::string_view name, Kind* kind);
// Invoice issued, payment received, settlement due, webhook disabled: always
// sent, immediately, never unsubscribed.
bool IsLegalNotice(Kind kind);

// A service catalogue entry as Notice::names holds it:
// "<instrument>/serviceCatalogue/<entry id>" (not a resource name of the
// API; the mail module looks its display name up in the instrument).
inline constexpr char kServiceEntryRefInfix[] = "/serviceCatalogue/";
std::string ServiceEntryRef(absl::string_view instrument, absl::string_view entry_id);

// One mail to one or more people about one event.
struct Notice {
  Kind kind = v1::NOTIFICATION_KIND_UNSPECIFIED;
  // "users/{id}" directly, and/or everyone holding a role in an organisation.
  std::vector<std::string> users;
  std::vector<std::pair<std::string, Role>> org_roles;  // ("organizations/x", role)
  // Distinguishes two notices of one kind from one event (e.g. one
  // settlement's transfers per organisation); usually empty.
  std::string discriminator;
  // The resource the mail is about ("bookings/b1", "invoices/i1"...); its
  // console page is ConsolePath().
  std::string resource;
  // "instruments/{id}" whose display name goes into the mail, if any.
  std::string instrument;
  // A maintenance window to show (its interval is looked up), if any.
  std::string maintenance_window;
  // Text values ({name} in the templates) and times (formatted in the
  // recipient's zone).
  std::map<std::string, std::string> text;
  std::map<std::string, absl::Time> times;
  // Which of the kind's texts (a reschedule's "moved", a late
  // cancellation's "late"...); usually empty.
  std::string variant;
  // Organisations, people and service catalogue entries ({name} in the
  // templates): "organizations/x", "users/x" or ServiceEntryRef(...),
  // written by their display names (RenderContext::names, looked up when
  // the mail is made), else their ids (the part after the last '/').
  std::map<std::string, std::string> names;
  // Who did what the mail tells ({by}): text["by_role"] (kBy* below) and
  // names["by_org"], as the event says. When by_actor ("users/{id}") is
  // set, the mail module asks inventory for that person and writes their
  // role and organisation instead (ByRole), keeping the event's when
  // inventory does not know them.
  std::string by_actor;
  // EventHeader.trace_id of the event that caused the notice (for a
  // scheduled one, the event that scheduled it): the mail's own events (its
  // MailDeadLettered) carry it, so one id follows the request to its mails.
  std::string trace_id;
  // A scheduled notice's (ScheduledNotice): the EventHeader.event_time of
  // the event that scheduled it (InfinitePast when unknown).
  absl::Time event_time = absl::InfinitePast();
};

// Who did it ({by} in the templates): text["by_role"] of a Notice.
inline constexpr char kByStaff[] = "staff";                // staff of {by_org}
inline constexpr char kByAdmin[] = "admin";                // a consortium administrator
inline constexpr char kByBillingAdmin[] = "billing-admin"; // a billing administrator of {by_org}
inline constexpr char kByMember[] = "member";              // a user of {by_org}
inline constexpr char kByService[] = "service";            // LabShare itself

// The by_role of a person with these roles (inventory's): a consortium
// administrator, else facility staff, else a billing administrator, else a
// user of their organisation.
std::string ByRole(const std::vector<Role>& roles);

// A mail to send later, at `fire` (domain clock): reminders, handover and
// return due. `member` identifies it ("<KIND>|<resource>"): scheduling the
// same member again moves it.
struct Schedule {
  std::string member;
  absl::Time fire;
};

struct Interpretation {
  std::string event_id;
  // EventHeader.event_time (InfinitePast when unset).
  absl::Time event_time = absl::InfinitePast();
  std::vector<Notice> notices;
  std::vector<Schedule> schedule;      // add or move
  std::vector<std::string> unschedule;  // members to drop
  // The update_time of the booking or lease the schedule changes are about
  // (InfinitePast when unknown): older changes never undo newer ones.
  absl::Time version = absl::InfinitePast();
};

struct InterpretOptions {
  absl::Duration reminder_lead = absl::Hours(24);
  absl::Duration handover_lead = absl::Hours(24);
  absl::Duration return_lead = absl::Hours(24);
  // A subsidy pool falling below this balance (minor units) is mailed to
  // the consortium admins; 0: never.
  int64_t subsidy_pool_low_minor = 0;
};

// What one outbox entry means for mail. Entries of types that concern no one
// give an empty interpretation. INVALID_ARGUMENT when the payload does not
// parse (the consumer logs and skips it).
absl::StatusOr<Interpretation> Interpret(const StreamEvent& e, const InterpretOptions& options);

// The notice of a scheduled member, from the event that scheduled it (the
// entry stored with the schedule). NOT_FOUND when it no longer applies.
absl::StatusOr<Notice> ScheduledNotice(absl::string_view member, const StreamEvent& e);

// The schedule changes of `in` worth storing at `now` (domain clock): none
// from an event older than max_event_age (0: no limit), and none more than
// `grace` late. A schedule is due at its fire time, or at the event's time
// when the event came after it (a booking made, approved or moved within
// the lead time: the reminder goes out at once).
std::vector<Schedule> SchedulesToApply(const Interpretation& in, absl::Time now, absl::Duration grace,
                                       absl::Duration max_event_age);

// Whether a scheduled member fired at `now` still makes its mail: not more
// than `grace` late (due as SchedulesToApply says, notice.event_time being
// the event's), and before what it announces (the start of the booking or
// lease for reminders and handovers, the end for returns).
bool ScheduledStillDue(absl::string_view member, absl::Time fire, const Notice& notice, absl::Time now,
                       absl::Duration grace);

// Everything a template needs besides the notice.
struct RenderContext {
  std::string language = "zh-CN";  // "zh-CN" or "en"
  absl::TimeZone zone;
  std::string zone_name = "Asia/Shanghai";
  std::string recipient_name;       // display name
  std::string console_url;          // no trailing slash
  std::string instrument_name;      // display name, or the id
  absl::Time window_start, window_end;  // of notice.maintenance_window, when known
  bool has_window = false;
  std::string unsubscribe_url;      // empty for legal notices
  // Display names of the notice's names (same keys); a key missing here is
  // written as the name's id.
  std::map<std::string, std::string> names;
};

struct RenderedMail {
  std::string subject;
  std::string text;
  std::string html;
};

// The web console's page for the notice, relative to the console URL
// (its hash routes, e.g. "#/billing/invoices/i1", "#/lab/bookings").
std::string ConsolePath(const Notice& notice);

RenderedMail Render(const Notice& notice, const RenderContext& context);

// A digest of several rendered mails (each one's subject and text/html,
// each with its own kind's unsubscribe link). It has no unsubscribe link of
// its own (context.unsubscribe_url is not used; DIGEST is not a kind one
// turns off): its footer links the notification settings
// (DigestSettingsUrl), where the delivery goes back to immediate.
RenderedMail RenderDigest(const std::vector<RenderedMail>& parts, const RenderContext& context);

// The subject of a digest of `count` mails (a number as text) in `language`
// ("en"; anything else is zh-CN), as RenderDigest gives it. The mail queue
// stores it when it makes the digest, with the count filled into the text
// DigestSubject(language, "{n}").
std::string DigestSubject(const std::string& language, absl::string_view count);

// The console's notification settings page.
std::string DigestSettingsUrl(const std::string& console_url);

// "12,345.60 CNY" for 1234560 CNY, "1,234,560 JPY" for 1234560 JPY: the
// currency's ISO 4217 minor digits (CurrencyMinorDigits).
std::string FormatMoney(int64_t minor, absl::string_view currency);

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_KINDS_H_
