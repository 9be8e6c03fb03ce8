// Prometheus series of labshare-notify, on the process's /metrics page
// (common/metrics.h RegisterMetricsCollector):
//   counters of this process (what it did since it started):
//     labshare_notify_mail_queued_total{kind}
//     labshare_notify_mail_sent_total{kind}
//     labshare_notify_mail_failed_total{kind}   attempts that failed
//     labshare_notify_mail_retries_total{kind}  of those, retried later
//     labshare_notify_mail_dead_lettered_total{kind,reason}
//     labshare_notify_mail_dead_letters_removed_total   past the retention
//     labshare_notify_webhook_deliveries_total{outcome}  delivered|retry|dead
//     labshare_notify_webhook_endpoints_disabled_total
//   gauges read from Redis at scrape time (the same for every replica):
//     labshare_notify_mail_queue_depth, labshare_notify_mail_in_flight,
//     labshare_notify_mail_oldest_due_age_seconds,
//     labshare_notify_mail_dead_letters{reason},
//     labshare_notify_webhook_queue_depth,
//     labshare_notify_webhook_oldest_due_age_seconds,
//     labshare_notify_webhook_dead_letters,
//     labshare_notify_scrape_errors (1 when Redis could not be read).
// Label values are enum names (kinds, reasons, outcomes): a bounded set.
#ifndef LABSHARE_SERVICES_NOTIFY_NOTIFY_METRICS_H_
#define LABSHARE_SERVICES_NOTIFY_NOTIFY_METRICS_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/redis.h"

namespace labshare::notify {

class NotifyMetrics {
 public:
  // pool and wall (ages of due entries, which are wall-clock ms) outlive
  // this object. Registers its collector; the destructor unregisters it.
  NotifyMetrics(RedisPool* pool, const Clock* wall);
  ~NotifyMetrics();
  NotifyMetrics(const NotifyMetrics&) = delete;
  NotifyMetrics& operator=(const NotifyMetrics&) = delete;

  // Thread-safe.
  void MailQueued(absl::string_view kind) { Add("mail_queued_total", Label("kind", kind), 1); }
  void MailSent(absl::string_view kind) { Add("mail_sent_total", Label("kind", kind), 1); }
  void MailFailed(absl::string_view kind) { Add("mail_failed_total", Label("kind", kind), 1); }
  void MailRetried(absl::string_view kind) { Add("mail_retries_total", Label("kind", kind), 1); }
  void MailDeadLettered(absl::string_view kind, absl::string_view reason);
  void MailDeadLettersRemoved(int64_t n) { Add("mail_dead_letters_removed_total", "", n); }
  void WebhookDelivery(absl::string_view outcome) {
    Add("webhook_deliveries_total", Label("outcome", outcome), 1);
  }
  void WebhookDisabled() { Add("webhook_endpoints_disabled_total", "", 1); }
  void WebhookSecretUnreadable() { Add("webhook_secret_unreadable_total", "", 1); }

  // Every series, text exposition (what /metrics appends).
  std::string Render() const;

 private:
  static std::string Label(absl::string_view name, absl::string_view value);
  void Add(const std::string& family, const std::string& labels, int64_t n);
  std::string RenderGauges() const;

  RedisPool* pool_;
  const Clock* wall_;
  mutable absl::Mutex mu_;
  // family (without the prefix) -> labels ("{...}" or "") -> value.
  std::map<std::string, std::map<std::string, int64_t>> counters_ ABSL_GUARDED_BY(mu_);
  int collector_ = 0;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_NOTIFY_METRICS_H_
