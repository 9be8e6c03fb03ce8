// labshare-usage: utilisation and sharing figures and the audit trail.
//
// Consumes every outbox (inventory, the booking partitions and projects,
// billing, usage, notify) with consumer group "usage": each event goes into the audit hash
// chain and into the figures, each exactly once.
#include <unistd.h>

#include <string_view>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/events.h"
#include "common/log.h"
#include "common/outbox_trim.h"
#include "common/page_token.h"
#include "common/server.h"
#include "common/time_zone.h"
#include "common/token_flags.h"
#include "services/usage/audit_chain.h"
#include "services/usage/export_limiter.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"

ABSL_FLAG(std::string, time_zone, "Asia/Shanghai",
          "IANA time zone of reporting periods. Events are folded into the days of the zone in force when "
          "they are folded: changing it after data exists relabels the stored days (a day folded in one "
          "zone is reported as the same date in the new one), it does not recompute them.");
ABSL_FLAG(std::string, currency, "CNY",
          "Reporting currency. Income in it is stored without its code: changing it after data exists "
          "relabels the stored amounts as the new currency (and income in the new currency folded "
          "before stays under other_currency_income); it converts nothing.");
ABSL_FLAG(int, booking_partitions, 16, "Number of booking outbox streams {bk:P}:outbox.");
ABSL_FLAG(std::string, audit_signing_key_file, "",
          "Private key PEM (Ed25519 or ECDSA P-256, mode 0600) that signs the audit chain's head; "
          "make one with `openssl genpkey -algorithm ed25519 -out audit.pem`. Required unless "
          "--audit_unsigned.");
ABSL_FLAG(int, aggregates_check_s, 30,
          "Seconds between checks for report aggregates to rebuild after an attribute change.");
ABSL_FLAG(int, max_concurrent_exports, labshare::usage::ExportLimiter::kDefaultMaxTotal,
          "Streaming exports (ExportUsage, ExportAnnualReportCsv, ExportAuditTrail together) this process "
          "runs at once, for all callers; beyond it RESOURCE_EXHAUSTED (EXPORT_LIMIT, scope \"server\"). "
          "At least 1.");
ABSL_FLAG(bool, audit_unsigned, false,
          "Run without an audit signing key: the chain's head is not signed, so whoever can write "
          "to Redis can rewrite the trail undetected. Tests and throwaway setups only.");

int main(int argc, char** argv) {
  labshare::InitProcess(argc, argv,
                        "labshare-usage: utilisation and sharing figures and the audit trail.\n"
                        "Usage: labshare-usage --listen=HOST:PORT --redis=HOST:PORT "
                        "--jwks=FILE|URL --audit_signing_key_file=PEM [--metrics_listen=HOST:PORT]");
  // The reporting time zone (usage.proto: an IANA name), checked before
  // anything else starts.
  absl::TimeZone zone;
  if (!labshare::LoadIanaTimeZone(absl::GetFlag(FLAGS_time_zone), &zone)) {
    labshare::LogError("bad --time_zone: not an IANA time zone name such as Asia/Shanghai or UTC",
                       {{"zone", absl::GetFlag(FLAGS_time_zone)}});
    return 2;
  }
  const int max_exports = absl::GetFlag(FLAGS_max_concurrent_exports);
  if (max_exports < 1) {
    labshare::LogError("bad --max_concurrent_exports: must be at least 1",
                       {{"max_concurrent_exports", std::to_string(max_exports)}});
    return 2;
  }
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  const std::unique_ptr<labshare::TokenVerifier> verifier = labshare::TokenVerifierFromFlags();
  const std::unique_ptr<labshare::Clock> clock_owner = labshare::ClockFromFlags();
  const labshare::Clock& clock = *clock_owner;
  // Tokens expire by the wall clock, whatever the domain clock says.
  labshare::SystemClock wall;
  // Waits for Redis as long as it takes (not ready meanwhile: the health
  // server starts after this); SIGTERM ends the wait.
  auto page_tokens_or = labshare::PageTokenCodec::FromRedis(&redis, "{usage}", absl::InfiniteDuration(),
                                                            labshare::ShutdownSignalPending);
  if (!page_tokens_or.ok()) {
    if (absl::IsCancelled(page_tokens_or.status())) return 0;  // stopped before it started
    labshare::LogError("cannot read the page-token key from Redis", {{"error", page_tokens_or.status().ToString()}});
    return 2;
  }
  const labshare::PageTokenCodec page_tokens = *std::move(page_tokens_or);
  labshare::usage::UsageFigures figures(&redis, &clock, zone, page_tokens, absl::GetFlag(FLAGS_currency));
  figures.set_max_concurrent_exports(max_exports);
  // Instruments folded before attribute versions were kept: their current
  // record as their first version, before any event is folded.
  if (auto seeded = figures.SeedInstrumentVersions(); !seeded.ok()) {
    labshare::LogError("cannot seed the instruments' attribute versions", {{"error", seeded.status().ToString()}});
    return 2;
  } else if (*seeded > 0) {
    labshare::LogInfo("instrument attribute versions seeded", {{"instruments", std::to_string(*seeded)}});
  }
  labshare::usage::AuditChainOptions audit_options;
  audit_options.clock = &clock;
  if (const std::string key_file = absl::GetFlag(FLAGS_audit_signing_key_file); !key_file.empty()) {
    auto key = labshare::usage::AuditSigningKey::FromPrivateKeyFile(key_file);
    if (!key.ok()) {
      labshare::LogError("--audit_signing_key_file", {{"error", std::string(key.status().message())}});
      return 2;
    }
    audit_options.signing_key = *std::move(key);
    labshare::LogInfo("audit head signing key", {{"key_id", audit_options.signing_key->key_id()}});
  } else if (!absl::GetFlag(FLAGS_audit_unsigned)) {
    labshare::LogError("labshare-usage needs --audit_signing_key_file=PEM (the key that signs the audit "
                       "chain's head; `openssl genpkey -algorithm ed25519 -out audit.pem && chmod 600 "
                       "audit.pem`), or --audit_unsigned for a test setup");
    return 2;
  }
  labshare::usage::AuditChain audit(&redis, page_tokens, audit_options);
  labshare::Authorizer authorizer(verifier.get(), labshare::usage::UsagePolicy(), &wall);
  labshare::usage::UsageService service(&figures, &audit, &authorizer);
  // Every outbox, polled in rounds; a stream that cannot be read is retried
  // with capped exponential backoff and jitter, and the loop stops quietly
  // as soon as SIGTERM arrives (before the server drains its calls).
  labshare::ConsumerLoopOptions loop_options;
  loop_options.name = "usage events";
  labshare::ConsumerLoop loop(loop_options);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::vector<std::string> streams = {"{inventory}:outbox", "{booking}:outbox", "{billing}:outbox",
                                      "{usage}:outbox", "{notify}:outbox"};
  for (int p = 0; p < absl::GetFlag(FLAGS_booking_partitions); ++p) {
    streams.push_back("{bk:" + std::to_string(p) + "}:outbox");
  }
  std::vector<std::unique_ptr<labshare::EventConsumer>> consumers;
  for (const auto& stream : streams) {
    labshare::ConsumerOptions options;
    options.stream = stream;
    options.group = labshare::usage::kEventsGroup;
    options.consumer = std::string("usage-") + host;
    options.block = absl::ZeroDuration();
    options.reclaim_idle = absl::Seconds(10);
    // A batch per read: the audit entries chained in one Lua step, the
    // figures folded several events per step, one XACK.
    options.batch = 256;
    consumers.push_back(std::make_unique<labshare::EventConsumer>(&redis, options));
    loop.Add(consumers.back().get(),
             labshare::EventConsumer::BatchHandler(
                 [&audit, &figures, source = labshare::usage::AuditSourceForStream(stream)](
                     const std::vector<labshare::StreamEvent>& events) {
                   return labshare::usage::ApplyEvents(&audit, &figures, source, events);
                 }));
  }
  // Failed and parked entries, the oldest pending one (common/events.h).
  labshare::ConsumerMetrics consumer_metrics(&redis, loop.consumers());
  // Outbox retention and lag metrics of usage's own outbox (common/outbox_trim.h).
  static_assert(std::string_view(labshare::usage::kEventsGroup) == labshare::kOutboxGroupUsage);
  labshare::OutboxMaintenance outbox(&redis, {{"{usage}:outbox", labshare::OutboxEveryStreamGroups()}});
  // The report aggregates: data folded before they existed is registered and
  // built at start; any period whose aggregates an attribute change made
  // inexact (reports then compute it from the counters, as before) is
  // rebuilt in the background. Idempotent; every replica may do it.
  absl::Notification stop_aggregates;
  std::thread aggregates([&] {
    bool migrated = false;
    auto step = [&] {
      if (!migrated) {
        const absl::Status s = figures.MigrateAggregates();
        if (!s.ok()) {
          labshare::LogError("usage aggregates not migrated yet (reports compute from the counters)",
                             {{"error", s.ToString()}});
        }
        migrated = s.ok();
        return;
      }
      const absl::StatusOr<int> rebuilt = figures.RebuildStaleAggregates();
      if (!rebuilt.ok()) {
        labshare::LogError("usage aggregates not rebuilt", {{"error", rebuilt.status().ToString()}});
      } else if (*rebuilt > 0) {
        labshare::LogInfo("usage aggregates rebuilt", {{"periods", std::to_string(*rebuilt)}});
      }
    };
    step();
    while (!stop_aggregates.WaitForNotificationWithTimeout(absl::Seconds(absl::GetFlag(FLAGS_aggregates_check_s)))) {
      step();
    }
  });
  std::thread consumer([&] { loop.Run(); });
  const int rc = labshare::RunService("usage", &redis, &authorizer, {&service}, [&] { loop.Stop(); });
  loop.Stop();
  consumer.join();
  stop_aggregates.Notify();
  aggregates.join();
  return rc;
}
