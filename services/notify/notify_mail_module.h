// The mail module of labshare-notify: consumes every outbox (group
// "notify-mail"), queues one mail per event and recipient, sends the queue
// over SMTP, fires reminders and digests, and serves NotificationService
// (settings, one-click unsubscribe, dead letters). See notify.proto.
#ifndef LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_MODULE_H_
#define LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_MODULE_H_

#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/page_token.h"
#include "labshare/notify/v1/notify.grpc.pb.h"
#include "services/notify/notify_mail_kinds.h"
#include "services/notify/notify_mail_people.h"
#include "services/notify/notify_mail_queue.h"
#include "services/notify/notify_mail_smtp.h"
#include "services/notify/notify_module.h"

namespace labshare::notify {

// Consumer group of the mail module on every outbox.
inline constexpr char kMailGroup[] = "notify-mail";

struct MailOptions {
  SmtpOptions smtp;
  std::string default_language = "zh-CN";
  std::string default_time_zone = "Asia/Shanghai";
  int digest_hour = 8;  // local hour of the daily digest (recipient's zone)
  InterpretOptions interpret;
  absl::Duration retry_initial = absl::Seconds(30);
  absl::Duration retry_max = absl::Hours(1);
  int max_attempts = 8;
  // A message claimed longer ago than this by another process is taken as
  // that process's crash: DELIVERY_UNCERTAIN.
  absl::Duration inflight_timeout = absl::Minutes(10);
  absl::Duration retention = absl::Hours(24 * 30);  // of sent messages
  // Dead letters that died longer ago than this (domain clock) are removed
  // (PruneDeadLetters); 0: kept forever.
  absl::Duration dead_letter_retention = absl::Hours(24 * 90);
  // How long a mail's unsubscribe link works (domain clock).
  absl::Duration unsubscribe_validity = absl::Hours(24 * 365);
  absl::Duration people_cache_ttl = absl::Seconds(30);
  // Events older than this (domain clock) make no mail: a notifier
  // deployed on a platform with a long history does not mail it all. They
  // schedule nothing; what they unschedule still goes. 0: no limit.
  absl::Duration max_event_age = absl::Hours(24 * 7);
  // A reminder (handover, return notice) more than this late is dropped
  // without a mail, and never scheduled.
  absl::Duration schedule_grace = absl::Hours(1);
  absl::Duration poll = absl::Milliseconds(200);  // of the sender when idle
  int batch = 20;
};

// Reads the --smtp*, --mail_*, --default_*, --digest_hour, --reminder_lead...
// flags (notify_mail_flags.cc). Startup errors (unreadable password file,
// bad zone or language): the status.
absl::StatusOr<MailOptions> MailOptionsFromFlags();

const MethodPolicy& MailPolicy();

class MailModule final : public NotifyModule {
 public:
  // people: nullptr for inventory's (context.inventory).
  MailModule(const NotifyContext& context, MailOptions options, std::unique_ptr<People> people = nullptr);
  ~MailModule() override;

  void AddPolicy(MethodPolicy* policy) override;
  std::vector<grpc::Service*> Services(const Authorizer* authorizer) override;
  void AddConsumers(ConsumerLoop* loop) override;
  void Start() override;
  void Stop() override;
  // Records once (SET NX) when this version first started: unsubscribe
  // links made before tokens carried an expiry expire one validity after
  // it. Start calls it; on failure the first check records it instead.
  absl::Status RecordUpgradeStart();

  // One outbox entry (the consumer's handler).
  absl::Status HandleEvent(const StreamEvent& e);
  // One round of each background step; how many it did.
  absl::StatusOr<int> SendDue();
  absl::StatusOr<int> FireSchedules();
  absl::StatusOr<int> MakeDigests();
  absl::StatusOr<int> RecoverInFlight(bool own_only);
  // Removes up to 5 x batch dead letters past dead_letter_retention.
  absl::StatusOr<int> PruneDeadLetters();

  // The unsubscribe token for (user id, kind), valid for
  // options.unsubscribe_validity from now (domain clock), and back.
  absl::StatusOr<std::string> UnsubscribeToken(const std::string& user_id, Kind kind);
  // kMalformed: not of the form a link carries (a first part with anything
  // outside base64url's [A-Za-z0-9_-], or that does not decode; a signature
  // that is not 32 lower-case hex digits), judged before the key is read;
  // kInvalid: well formed but not signed by us.
  enum class TokenCheck { kValid, kMalformed, kInvalid, kExpired };
  // kExpired: signed by us, for user_id and kind, but past its expiry (a
  // token without one, from before expiries: one validity after this
  // version first read the key). The key unreadable (Redis down): that
  // error.
  absl::StatusOr<TokenCheck> CheckUnsubscribeToken(const std::string& token, std::string* user_id, Kind* kind);
  // Valid (not expired): true.
  absl::StatusOr<bool> ParseUnsubscribeToken(const std::string& token, std::string* user_id, Kind* kind);

  MailQueue& queue() { return queue_; }
  const MailOptions& options() const { return options_; }
  const NotifyContext& context() const { return context_; }
  People& people() { return *people_; }

  // Settings with the defaults filled in.
  struct EffectiveSettings {
    std::string language;
    std::string zone_name;
    absl::TimeZone zone;
    bool digest = false;
    std::vector<Kind> disabled;
    Fields raw;
  };
  // fallback_zone: used when the user has none (the facility's), before
  // the service's default.
  absl::StatusOr<EffectiveSettings> SettingsOf(const std::string& user_id, const std::string& fallback_zone = "");
  absl::StatusOr<PageTokenCodec> PageTokens();

 private:
  absl::Status Deliver(const Notice& notice, const std::string& event_id);
  absl::Status SendOne(const std::string& id);
  void Run();
  absl::StatusOr<std::string> UnsubscribeKey();
  absl::StatusOr<absl::Time> LegacyUnsubscribeExpiry();

  NotifyContext context_;
  MailOptions options_;
  std::unique_ptr<People> people_;
  MailQueue queue_;
  std::mutex mu_;
  std::string unsub_key_;  // guarded by mu_
  std::optional<absl::Time> legacy_unsub_expiry_;  // guarded by mu_
  std::optional<PageTokenCodec> page_tokens_;
  std::vector<std::unique_ptr<EventConsumer>> consumers_;
  std::unique_ptr<grpc::Service> service_;
  absl::Notification stop_;
  std::thread thread_;
  // Ids given to the mail server whose outcome is not recorded yet (the
  // Run thread's only): RecoverInFlight leaves them uncertain and queues
  // this process's other stranded claims again.
  std::set<std::string> handed_;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_NOTIFY_MAIL_MODULE_H_
