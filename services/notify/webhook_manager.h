// The webhooks use cases on Redis: registration (the WebhookService RPCs,
// scope-checked against WebhookPolicy()), queueing one delivery per (event,
// webhook) from the outboxes, and the steps of a delivery attempt (claim,
// outcome). The HTTP exchange itself is the module's (webhook_module.h).
//
// Keys (all under "{notify}", one slot):
//   {notify}:wh:hook:{org}:{id}      webhook document (Webhook, admin fields;
//                                    a deleted one is an empty tombstone)
//   {notify}:wh:stats:{org}:{id}     its delivery figures (Webhook with only
//                                    consecutive_failures, last_error,
//                                    last_attempt_time, last_success_time), kept
//                                    apart so that deliveries never move the
//                                    webhook's etag
//   {notify}:wh:secret:{org}:{id}    the signing secret (document data),
//                                    sealed with AES-256-GCM when the
//                                    service has a key (webhook_secret_box.h)
//   {notify}:wh:org:{org}            index of the organisation's webhook ids
//   {notify}:wh:n:{org}              how many it has (decimal; written with
//                                    every creation and deletion)
//   {notify}:wh:hooks                index "<org>|<id>" of every webhook ever
//                                    made (deleted ones too): what the
//                                    retention sweep visits
//   {notify}:wh:dlv:{org}:{id}:{d}   delivery document: "<due member>\n" then
//                                    the WebhookDelivery (body included)
//   {notify}:wh:dlvs:{org}:{id}      index "<create ms, 13 digits>|<d>"
//   {notify}:wh:dead:{org}:{id}      the dead letters, same members
//   {notify}:wh:done:{org}:{id}      the DELIVERED ones, same members: what
//                                    the retention sweep removes
//   {notify}:wh:pend:{org}:{id}      the PENDING ones, same members: what a
//                                    disabling makes DEAD (deliveries queued
//                                    before the index existed are not in it;
//                                    ClaimDue makes those DEAD on sight)
//   {notify}:wh:due                  what to attempt: "<due wall-clock ms, 13
//                                    digits>|<org>|<id>|<d>|<webhook version>"
//   {notify}:wh:off:{org}:{id}       "<version>|<DisabledReason>" of the commit
//                                    that last disabled the webhook: a due
//                                    member carries the webhook's version
//                                    when it was queued or replayed, and one
//                                    older than this is made DEAD, not sent
//                                    (the disabling commit and the steps
//                                    after it do so at once; ClaimDue and
//                                    SettleDisabled catch what a crash left)
//   {notify}:wh:seen:{event id}      the consumer's once-per-event marker
//   {notify}:wh:idem:{method}:{rid}  idempotency records of the RPCs
#ifndef LABSHARE_SERVICES_NOTIFY_WEBHOOK_MANAGER_H_
#define LABSHARE_SERVICES_NOTIFY_WEBHOOK_MANAGER_H_

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/doc_store.h"
#include "common/events.h"
#include "common/page_token.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "labshare/notify/v1/webhooks.pb.h"
#include "services/notify/notify_metrics.h"
#include "services/notify/webhook_rules.h"
#include "services/notify/webhook_secret_box.h"

namespace labshare::notify {

// Consumer group of the webhooks on every outbox.
inline constexpr char kWebhooksGroup[] = "notify-webhooks";

// The contract's "Roles:" lines of WebhookService as one table.
const MethodPolicy& WebhookPolicy();

struct WebhookLimits {
  int max_attempts = 8;        // per delivery, then DEAD
  int disable_after = 20;      // consecutive failed attempts of a webhook
  int max_webhooks_per_org = 20;
  absl::Duration backoff_initial = absl::Seconds(10);
  absl::Duration backoff_max = absl::Hours(1);
  // How long a claimed attempt may take before another replica (or this
  // process after a restart) may attempt the delivery again.
  absl::Duration claim_lease = absl::Seconds(60);
  // DELIVERED deliveries queued longer ago than this (domain clock) are
  // removed by TrimDeliveries; DEAD and PENDING ones stay.
  absl::Duration retention = absl::Hours(24 * 30);
  // Queued deliveries a disabling makes DEAD per atomic step (the first
  // step is the disabling commit itself).
  int dead_on_disable_batch = 50;
};

// A delivery claimed for one attempt.
struct ClaimedDelivery {
  std::string key;      // its document
  int64_t version = 0;  // after the claim
  std::string due_member;
  std::string organization;  // "organizations/{org}"
  std::string org_id, webhook_id;
  std::string url, secret;
  v1::WebhookDelivery delivery;
};

// What one attempt got back.
struct AttemptResult {
  bool ok = false;
  int status_code = 0;  // 0: no HTTP answer
  std::string error;    // as a person reads it; empty when ok
};

class WebhookManager {
 public:
  // pool, clock (domain) and wall outlive the manager. Thread-safe.
  WebhookManager(RedisPool* pool, const Clock* clock, const Clock* wall, WebhookLimits limits);

  // ------------------------------------------------------------ RPCs
  absl::StatusOr<v1::CreateWebhookResponse> CreateWebhook(const Principal& p, const v1::CreateWebhookRequest& r);
  absl::StatusOr<v1::Webhook> GetWebhook(const Principal& p, const v1::GetWebhookRequest& r);
  absl::StatusOr<v1::ListWebhooksResponse> ListWebhooks(const Principal& p, const v1::ListWebhooksRequest& r);
  absl::StatusOr<v1::Webhook> UpdateWebhook(const Principal& p, const v1::UpdateWebhookRequest& r);
  absl::StatusOr<v1::DeleteWebhookResponse> DeleteWebhook(const Principal& p, const v1::DeleteWebhookRequest& r);
  absl::StatusOr<v1::RotateWebhookSecretResponse> RotateWebhookSecret(const Principal& p,
                                                                      const v1::RotateWebhookSecretRequest& r);
  absl::StatusOr<v1::ListWebhookDeliveriesResponse> ListWebhookDeliveries(
      const Principal& p, const v1::ListWebhookDeliveriesRequest& r);
  absl::StatusOr<v1::WebhookDelivery> ReplayWebhookDelivery(const Principal& p,
                                                           const v1::ReplayWebhookDeliveryRequest& r);

  // ------------------------------------------------------------ events
  // One outbox entry: a delivery for every ENABLED webhook of every party
  // organisation subscribed to its type, each exactly once (one Lua step
  // with the once-per-event marker). Returns how many were queued.
  absl::StatusOr<int> QueueDeliveries(const StreamEvent& entry);

  // ------------------------------------------------------------ attempts
  // Claims up to `limit` deliveries due by the wall clock for one attempt
  // each (compare-and-set: one replica wins each). Deliveries of a webhook
  // that is gone or DISABLED are settled on the way (dropped, or DEAD).
  absl::StatusOr<std::vector<ClaimedDelivery>> ClaimDue(int limit);
  // Records an attempt's outcome: DELIVERED, or a retry after a backoff, or
  // DEAD; counts the webhook's failures and disables it after
  // disable_after in a row (publishing WebhookDisabled). `unit` in [0, 1]
  // draws the jitter.
  absl::Status RecordAttempt(const ClaimedDelivery& claimed, const AttemptResult& result, double unit);

  // Removes DELIVERED deliveries past the retention, up to `max_per_webhook`
  // of each webhook per call (oldest first). Returns how many went.
  absl::StatusOr<int> TrimDeliveries(int max_per_webhook);

  // The backstop of a disabling: every webhook with a disabling on record
  // whose queued deliveries from before it are not all DEAD yet (the
  // process that disabled it died between its steps) gets up to
  // `max_per_webhook` of them made DEAD. Returns how many.
  absl::StatusOr<int> SettleDisabled(int max_per_webhook);

  // Counts every recorded attempt and automatic disabling; may be null.
  // Set before the module starts.
  void set_metrics(NotifyMetrics* metrics) { metrics_ = metrics; }
  // Seals the signing secrets it writes and opens them to sign; null: they
  // are written in clear (and sealed ones cannot be used). Set before the
  // module starts; outlives the manager.
  void set_secret_box(const SecretBox* box) { box_ = box; }

  // Seals the secrets still stored in clear (written before sealing, or
  // without a key), each by compare-and-set: one that changed meanwhile is
  // left for the next call. Returns how many it sealed; 0 without a box.
  absl::StatusOr<int> SealClearSecrets();

  // At start, before any delivery: with a box, stores a sealed check value
  // once ({notify}:wh:keycheck, SET NX) and requires it to open with this
  // key (FAILED_PRECONDITION, WEBHOOK_SECRET_KEY_MISMATCH otherwise: another
  // key file); without one, FAILED_PRECONDITION (WEBHOOK_SECRET_SEALED) when
  // the check value or any sealed secret exists.
  absl::Status CheckSecretKey();

  const WebhookLimits& limits() const { return limits_; }
  const DocStore& docs() const { return docs_; }

 private:
  // Logs and counts a due delivery whose secret this process cannot open.
  void SecretUnreadable(const std::string& delivery_key, const absl::Status& why);
  struct Hook {
    std::string org_id, id;
    std::string key;
    int64_t version = 0;  // 0: absent (or never existed)
    bool tombstone = false;
    v1::Webhook webhook;  // admin fields
  };
  absl::StatusOr<Hook> LoadHook(const std::string& org_id, const std::string& id) const;
  // The webhook as answered: admin fields, figures, etag.
  absl::StatusOr<v1::Webhook> Present(const Hook& hook) const;
  absl::StatusOr<PageTokenCodec> PageTokens();
  // Calls fn(org, id) for every webhook, in pages of 100 of the all-webhooks
  // index; stops at fn's first error.
  absl::Status ForEachWebhook(
      const std::function<absl::Status(const std::string& org, const std::string& id)>& fn) const;
  v1::NotifyEvent NewEvent(const Principal& p, const std::string& request_id) const;
  // An event about a delivery's outcome (delivered, dead, the webhook
  // disabled by it): actor notify, trace id the delivered event's, also when
  // an admin's disabling caused it (the admin's WebhookUpdated carries theirs).
  v1::NotifyEvent NewDeliveryEvent(const v1::WebhookDelivery& delivery) const;
  // One pass of QueueDeliveries; nullopt when a webhook changed between its
  // read and the commit (read them again).
  absl::StatusOr<std::optional<int>> QueueDeliveriesOnce(const WebhookEvent& event);
  // A queued delivery given up without an attempt (its webhook is gone or
  // disabled): DEAD, out of the schedule; WebhookDeliveryDead if `publish`.
  absl::Status Settle(const std::string& org, const std::string& id, const std::string& d,
                      const std::string& due_member, int64_t version, v1::WebhookDelivery delivery,
                      const std::string& why, bool publish);
  // Settle's changes, added to `m` (events after m's own).
  void AddSettled(const std::string& org, const std::string& id, const std::string& d,
                  const std::string& due_member, int64_t version, v1::WebhookDelivery delivery,
                  const std::string& why, bool publish, Mutation* m) const;
  // Reads one page (`limit` members) of webhook (org, id)'s pending index
  // after `*after` and adds to `m` those of its deliveries still queued
  // from before the disabling at webhook version `off_version` (DEAD,
  // "the webhook was disabled"; WebhookDeliveryDead each if `publish`);
  // entries of deliveries no longer pending leave the index. Leaves
  // `*after` at the page's last member, empty once the index was read to
  // its end. `skip`: a delivery key the caller writes itself. Returns how
  // many it made DEAD.
  absl::StatusOr<int> AddDeadOnDisable(const std::string& org, const std::string& id, int64_t off_version,
                                       bool publish, int limit, const std::string& skip, std::string* after,
                                       Mutation* m) const;
  // After the commit that disabled webhook (org, id): the rest of its
  // queued deliveries DEAD, dead_on_disable_batch per atomic step, until
  // none is left. Returns how many.
  absl::StatusOr<int> FinishDisabling(const std::string& org, const std::string& id, int64_t off_version,
                                      bool publish, int max_steps);
  // FinishDisabling to the end, a failure logged (the disabling stands).
  void FinishDisablingOrLog(const std::string& org, const std::string& id, int64_t off_version, bool publish);

  RedisPool* pool_;
  const Clock* clock_;
  const Clock* wall_;
  WebhookLimits limits_;
  DocStore docs_;
  std::mutex page_mu_;
  std::optional<PageTokenCodec> page_tokens_;  // guarded by page_mu_
  NotifyMetrics* metrics_ = nullptr;
  const SecretBox* box_ = nullptr;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_WEBHOOK_MANAGER_H_
