// labshare-billing: prices, the double-entry ledger, invoices and settlement.
//
// Besides serving BillingService it consumes the booking service's outboxes
// (one consumer per partition stream, group "billing") and turns billable
// facts into charges exactly once.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <string_view>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/synchronization/notification.h"
#include "common/channel.h"
#include "common/log.h"
#include "common/outbox_trim.h"
#include "common/page_token.h"
#include "common/server.h"
#include "common/token_flags.h"
#include "services/billing/billing_manager.h"
#include "services/billing/billing_rules.h"
#include "services/billing/billing_service.h"

ABSL_FLAG(std::string, inventory, "127.0.0.1:50051", "HOST:PORT of labshare-inventory (rate cards).");
ABSL_FLAG(std::string, time_zone, "Asia/Shanghai", "IANA time zone of billing periods.");
ABSL_FLAG(absl::Duration, lease_period_interval, absl::Minutes(1),
          "How often lease rent of ended billing periods is posted.");
ABSL_FLAG(int, booking_partitions, 16, "Number of booking outbox streams {bk:P}:outbox.");
ABSL_FLAG(int, payment_term_days, labshare::billing::kDefaultPaymentTermDays,
          "Payment term: an issued invoice is due this many days after its issue (1 to 365).");

int main(int argc, char** argv) {
  labshare::InitProcess(argc, argv,
                        "labshare-billing: prices, the double-entry ledger, invoices and settlement.\n"
                        "Usage: labshare-billing --listen=HOST:PORT --redis=HOST:PORT --inventory=HOST:PORT "
                        "--jwks=FILE|URL [--metrics_listen=HOST:PORT]");
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  const std::unique_ptr<labshare::TokenVerifier> verifier = labshare::TokenVerifierFromFlags();
  const std::unique_ptr<labshare::Clock> clock_owner = labshare::ClockFromFlags();
  const labshare::Clock& clock = *clock_owner;
  // Tokens expire by the wall clock, whatever the domain clock says.
  labshare::SystemClock wall;
  // Mutual TLS with --tls_*: inventory knows this service by its certificate.
  auto inventory_channel_or = labshare::MakeChannel(absl::GetFlag(FLAGS_inventory));
  if (!inventory_channel_or.ok()) {
    labshare::LogError("--inventory", {{"error", inventory_channel_or.status().ToString()}});
    return 2;
  }
  labshare::billing::GrpcInventoryReader inventory(*inventory_channel_or);
  auto zone = labshare::billing::LoadBillingTimeZone(absl::GetFlag(FLAGS_time_zone));
  if (!zone.ok()) {
    labshare::LogError("bad --time_zone", {{"error", zone.status().ToString()}});
    return 2;
  }
  const int payment_term_days = absl::GetFlag(FLAGS_payment_term_days);
  if (payment_term_days < 1 || payment_term_days > labshare::billing::kMaxPaymentTermDays) {
    labshare::LogError("bad --payment_term_days", {{"error", "must be 1 to 365 days"},
                                                   {"value", std::to_string(payment_term_days)}});
    return 2;
  }
  labshare::billing::BillingStore store(&redis);
  // Waits for Redis as long as it takes (not ready meanwhile: the health
  // server starts after this); SIGTERM ends the wait.
  auto page_tokens = labshare::PageTokenCodec::FromRedis(&redis, "{billing}", absl::InfiniteDuration(),
                                                         labshare::ShutdownSignalPending);
  if (!page_tokens.ok()) {
    if (absl::IsCancelled(page_tokens.status())) return 0;  // stopped before it started
    labshare::LogError("cannot read the page-token key from Redis", {{"error", page_tokens.status().ToString()}});
    return 2;
  }
  labshare::billing::BillingManager manager(&store, &inventory, &clock, *zone,
                                           *std::move(page_tokens), payment_term_days);
  // Index members of the millisecond form, ordered to the nanosecond by
  // create_time as the lists say (safe on every start and replica).
  if (auto moved = manager.MigrateIndexMembers(); !moved.ok()) {
    labshare::LogError("cannot migrate the billing indexes", {{"error", moved.status().ToString()}});
    return 2;
  } else if (*moved > 0) {
    labshare::LogInfo("billing indexes migrated", {{"members", std::to_string(*moved)}});
  }
  // Invoices issued before the per-period sets existed, into theirs
  // (ComputeSettlement does it too when one is missing: not fatal here).
  if (auto added = manager.IndexPeriodInvoices(); !added.ok()) {
    labshare::LogWarning("cannot index the invoices by period", {{"error", added.status().ToString()}});
  } else if (*added > 0) {
    labshare::LogInfo("invoices indexed by period", {{"invoices", std::to_string(*added)}});
  }
  labshare::Authorizer authorizer(verifier.get(), labshare::billing::BillingPolicy(), &wall);
  labshare::billing::BillingService service(&manager, &authorizer);
  absl::Notification stop;
  // Booking events: failing reads are retried with backoff and jitter; the
  // loop stops quietly when SIGTERM arrives (common/events.h ConsumerLoop).
  labshare::ConsumerLoopOptions loop_options;
  loop_options.name = "booking events";
  labshare::ConsumerLoop loop(loop_options);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::vector<std::unique_ptr<labshare::EventConsumer>> streams;
  for (int p = 0; p < absl::GetFlag(FLAGS_booking_partitions); ++p) {
    labshare::ConsumerOptions options;
    options.stream = "{bk:" + std::to_string(p) + "}:outbox";
    options.group = labshare::billing::kBookingEventsGroup;
    options.consumer = std::string("billing-") + host;  // stable across restarts: own pending re-read
    options.block = absl::ZeroDuration();
    options.reclaim_idle = absl::Seconds(10);
    options.batch = 256;
    streams.push_back(std::make_unique<labshare::EventConsumer>(&redis, options));
    // A batch per read: one XACK, steps applied several per Lua call.
    loop.Add(streams.back().get(), labshare::EventConsumer::BatchHandler(
                                       [&](const std::vector<labshare::StreamEvent>& events) {
                                         return manager.ApplyBookingEvents(events);
                                       }));
  }
  // Failed and parked entries, the oldest pending one (common/events.h).
  labshare::ConsumerMetrics consumer_metrics(&redis, loop.consumers());
  std::thread consumer([&] { loop.Run(); });
  // Lease rent of ended billing periods.
  std::thread periods([&] {
    do {
      auto posted = manager.ChargeEndedLeasePeriods();
      if (!posted.ok()) labshare::LogWarning("lease periods", {{"error", posted.status().ToString()}});
    } while (!stop.WaitForNotificationWithTimeout(absl::GetFlag(FLAGS_lease_period_interval)));
  });
  // Outbox retention and lag metrics (common/outbox_trim.h).
  // {billing}:outbox is read by usage and notify's modules.
  static_assert(std::string_view(labshare::billing::kBookingEventsGroup) == labshare::kOutboxGroupBilling);
  labshare::OutboxMaintenance outbox(&redis, {{labshare::billing::keys::Outbox(), labshare::OutboxEveryStreamGroups()}});
  // Ready only while inventory is too: without it no call can be served.
  const int rc = labshare::RunService(
      "billing", &redis, &authorizer, {&service},
      [&] {
        loop.Stop();
        stop.Notify();
      },
      {{"inventory", *inventory_channel_or}});
  loop.Stop();
  if (!stop.HasBeenNotified()) stop.Notify();  // RunService returns without a signal when it fails to start
  consumer.join();
  periods.join();
  return rc;
}
