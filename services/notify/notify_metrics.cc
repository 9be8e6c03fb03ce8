#include "services/notify/notify_metrics.h"

#include <algorithm>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "labshare/notify/v1/notify.pb.h"

namespace labshare::notify {
namespace {

struct Family {
  const char* name;  // without "labshare_notify_"
  const char* help;
};

constexpr Family kCounters[] = {
    {"mail_queued_total", "Mails queued (one per event and recipient), by kind."},
    {"mail_sent_total", "Mails the SMTP relay accepted, by kind."},
    {"mail_failed_total", "Mail attempts that failed (retried or dead-lettered), by kind."},
    {"mail_retries_total", "Failed mail attempts queued again after a backoff, by kind."},
    {"mail_dead_lettered_total", "Mails moved to the dead letters, by kind and reason."},
    {"mail_dead_letters_removed_total", "Dead letters removed after the retention."},
    {"webhook_deliveries_total", "Webhook delivery attempts by outcome (delivered, retry, dead)."},
    {"webhook_endpoints_disabled_total", "Webhooks disabled automatically after repeated failures."},
    {"webhook_secret_unreadable_total",
     "Due webhook deliveries left unclaimed: their secret does not open with this notifier's key (or it has none)."},
};

constexpr v1::DeadLetter::Reason kReasons[] = {v1::DeadLetter::RETRIES_EXHAUSTED, v1::DeadLetter::REJECTED,
                                               v1::DeadLetter::DELIVERY_UNCERTAIN};

// One read-only step (EVALSHA_RO, never waits for replicas): every gauge. KEYS: mail due, mail inflight, mail
// dead-letter index, webhook due, webhook index; ARGV: the mail key prefix,
// then the dead-letter reasons.
const RedisScript kGauges(R"lua(
local out = {}
out[1] = redis.call('ZCARD', KEYS[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
out[2] = first[2] or ''
out[3] = redis.call('ZCARD', KEYS[2])
out[4] = redis.call('ZCARD', KEYS[3])
out[5] = redis.call('ZCARD', KEYS[4])
out[6] = redis.call('ZRANGE', KEYS[4], 0, 0)[1] or ''
local dead = 0
-- Bounded: the first 1000 webhooks; out[last] says whether there are more.
local hooks = redis.call('ZRANGE', KEYS[5], 0, 1000)
local truncated = 0
if #hooks > 1000 then
  truncated = 1
  hooks[1001] = nil
end
for _, h in ipairs(hooks) do
  local sep = string.find(h, '|', 1, true)
  if sep then
    dead = dead + redis.call('ZCARD', '{notify}:wh:dead:' .. string.sub(h, 1, sep - 1) .. ':' .. string.sub(h, sep + 1))
  end
end
out[7] = dead
for i = 2, #ARGV do out[#out + 1] = redis.call('ZCARD', ARGV[1] .. 'dl:r:' .. ARGV[i]) end
out[#out + 1] = truncated
return out
)lua", RedisScript::Access::kReadOnly);

std::string Gauge(const char* name, const char* help) {
  return absl::StrCat("# HELP labshare_notify_", name, " ", help, "\n# TYPE labshare_notify_", name, " gauge\n");
}

// Seconds since `first_ms` (a wall-clock ms, "" when nothing is queued);
// 0 when it is not due yet.
double AgeSeconds(const std::string& first_ms, absl::Time now) {
  int64_t ms = 0;
  if (first_ms.empty() || !absl::SimpleAtoi(first_ms, &ms)) return 0;
  return std::max(0.0, absl::ToDoubleSeconds(now - absl::FromUnixMillis(ms)));
}

}  // namespace

NotifyMetrics::NotifyMetrics(RedisPool* pool, const Clock* wall) : pool_(pool), wall_(wall) {
  collector_ = RegisterMetricsCollector([this] { return Render(); });
}

NotifyMetrics::~NotifyMetrics() { UnregisterMetricsCollector(collector_); }

std::string NotifyMetrics::Label(absl::string_view name, absl::string_view value) {
  // Values are enum names; anything else is dropped rather than escaped.
  std::string v;
  for (char c : value) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') v.push_back(c);
  }
  return absl::StrCat(name, "=\"", v, "\"");
}

void NotifyMetrics::MailDeadLettered(absl::string_view kind, absl::string_view reason) {
  Add("mail_dead_lettered_total", absl::StrCat(Label("kind", kind), ",", Label("reason", reason)), 1);
}

void NotifyMetrics::Add(const std::string& family, const std::string& labels, int64_t n) {
  absl::MutexLock lock(&mu_);
  counters_[family][labels.empty() ? "" : absl::StrCat("{", labels, "}")] += n;
}

std::string NotifyMetrics::Render() const {
  std::string out;
  {
    absl::MutexLock lock(&mu_);
    for (const Family& f : kCounters) {
      absl::StrAppend(&out, "# HELP labshare_notify_", f.name, " ", f.help, "\n# TYPE labshare_notify_", f.name,
                      " counter\n");
      auto it = counters_.find(f.name);
      if (it == counters_.end()) {
        // Unlabelled families start at 0; labelled ones appear when used.
        if (absl::string_view(f.name) == "mail_dead_letters_removed_total" ||
            absl::string_view(f.name) == "webhook_endpoints_disabled_total" ||
            absl::string_view(f.name) == "webhook_secret_unreadable_total") {
          absl::StrAppend(&out, "labshare_notify_", f.name, " 0\n");
        }
        continue;
      }
      for (const auto& [labels, v] : it->second) absl::StrAppend(&out, "labshare_notify_", f.name, labels, " ", v, "\n");
    }
  }
  absl::StrAppend(&out, RenderGauges());
  return out;
}

std::string NotifyMetrics::RenderGauges() const {
  std::vector<std::string> args = {"{notify}:mail:"};
  for (const auto r : kReasons) args.push_back(v1::DeadLetter::Reason_Name(r));
  auto v = pool_->Eval(kGauges,
                       {"{notify}:mail:due", "{notify}:mail:inflight", "{notify}:mail:dl:all", "{notify}:wh:due",
                        "{notify}:wh:hooks"},
                       args);
  const std::string errors = absl::StrCat(
      Gauge("scrape_errors", "1 when the queue figures could not be read from Redis."), "labshare_notify_scrape_errors ");
  if (!v.ok() || v->is_error() || !v->is_array() || v->elements.size() != 8 + std::size(kReasons)) {
    return absl::StrCat(errors, "1\n");
  }
  const auto& e = v->elements;
  const absl::Time now = wall_->Now();
  std::string wh_first = e[5].str.substr(0, std::min<size_t>(13, e[5].str.size()));
  while (wh_first.size() > 1 && wh_first[0] == '0') wh_first.erase(0, 1);
  std::string out = absl::StrCat(
      Gauge("mail_queue_depth", "Mails waiting for an attempt (now or after a backoff)."),
      "labshare_notify_mail_queue_depth ", e[0].integer, "\n",
      Gauge("mail_oldest_due_age_seconds", "How long the longest-waiting due mail has been due (0: none due)."),
      "labshare_notify_mail_oldest_due_age_seconds ", AgeSeconds(e[1].str, now), "\n",
      Gauge("mail_in_flight", "Mails claimed by a sender, being attempted."), "labshare_notify_mail_in_flight ",
      e[2].integer, "\n", Gauge("mail_dead_letters", "Dead letters of mail kept, by reason."));
  for (size_t i = 0; i < std::size(kReasons); ++i) {
    absl::StrAppend(&out, "labshare_notify_mail_dead_letters{reason=\"", v1::DeadLetter::Reason_Name(kReasons[i]),
                    "\"} ", e[7 + i].integer, "\n");
  }
  absl::StrAppend(&out, Gauge("webhook_queue_depth", "Webhook deliveries waiting for an attempt."),
                  "labshare_notify_webhook_queue_depth ", e[4].integer, "\n",
                  Gauge("webhook_oldest_due_age_seconds",
                        "How long the longest-waiting due webhook delivery has been due (0: none due)."),
                  "labshare_notify_webhook_oldest_due_age_seconds ", AgeSeconds(wh_first, now), "\n",
                  Gauge("webhook_dead_letters", "Webhook deliveries in the dead letters (all webhooks)."),
                  "labshare_notify_webhook_dead_letters ", e[6].integer, "\n",
                  Gauge("webhook_dead_letters_truncated",
                        "1 when webhook_dead_letters counts only the first 1000 webhooks."),
                  "labshare_notify_webhook_dead_letters_truncated ", e[7 + std::size(kReasons)].integer, "\n", errors,
                  "0\n");
  return out;
}

}  // namespace labshare::notify
