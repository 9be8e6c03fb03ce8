// labshare-booking: bookings on conflict-free instrument calendars.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/synchronization/notification.h"
#include "common/channel.h"
#include "common/log.h"
#include "common/outbox_trim.h"
#include "common/page_token.h"
#include "common/server.h"
#include "common/token_flags.h"
#include "services/booking/booking_manager.h"
#include "services/booking/booking_service.h"
#include "services/booking/inventory_events.h"
#include "services/booking/session_uses.h"
#include <unistd.h>

ABSL_FLAG(std::string, inventory, "127.0.0.1:50051", "HOST:PORT of labshare-inventory.");
ABSL_FLAG(absl::Duration, sweep_interval, absl::Seconds(10),
          "How often bookings past their check-in window are marked MISSED (and pending "
          "ones at or past their start EXPIRED).");
ABSL_FLAG(int, redis_pipelines, 2,
          "Connections (one thread each) per Redis master that pipeline the callback-API methods' Redis "
          "steps (CreateBooking, GetBooking, ListBookings, QueryAvailability). Two let Redis run "
          "one connection's batch while the other's answers are handed back (tests/bench: about 20 % "
          "more bookings/s than one).");
ABSL_FLAG(int, redis_pipeline_batch, 256, "Most calls one pipeline connection sends at once.");
ABSL_FLAG(int, redis_pipeline_max_queue, 10000,
          "Most calls waiting in one Redis node's pipeline queue; beyond it a request fails UNAVAILABLE at once.");
ABSL_FLAG(absl::Duration, inventory_cache_ttl, absl::Seconds(60),
          "Longest an inventory answer (instrument, user, rates, ...) is reused. Changes announced on "
          "inventory's outbox drop the answers they touch at once; this bounds anything else.");
ABSL_FLAG(absl::Duration, inventory_page_ttl, absl::Seconds(5),
          "Longest a page of instruments (SearchAvailableInstruments' candidates) is reused, at most "
          "--inventory_cache_ttl: how late a new instrument may show in a search.");

int main(int argc, char** argv) {
  labshare::InitProcess(argc, argv,
                        "labshare-booking: bookings in the four sharing modes on conflict-free "
                        "calendars.\nUsage: labshare-booking --listen=HOST:PORT --redis=HOST:PORT "
                        "--inventory=HOST:PORT --jwks=FILE|URL [--metrics_listen=HOST:PORT]");
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
  labshare::booking::InventoryClient inventory(*inventory_channel_or, &clock,
                                               absl::GetFlag(FLAGS_inventory_cache_ttl),
                                               absl::GetFlag(FLAGS_inventory_page_ttl));
  // The callback-API methods pipeline their Redis steps (one queue per master).
  labshare::RedisPipeline pipeline(labshare::RedisOptionsFromFlags(), absl::GetFlag(FLAGS_redis_pipelines),
                                  static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_redis_pipeline_batch))),
                                  static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_redis_pipeline_max_queue))));
  labshare::booking::BookingStore store(&redis, &pipeline);
  // Waits for Redis as long as it takes (not ready meanwhile: the health
  // server starts after this); SIGTERM ends the wait.
  auto page_tokens = labshare::PageTokenCodec::FromRedis(&redis, "{booking}", absl::InfiniteDuration(),
                                                         labshare::ShutdownSignalPending);
  if (!page_tokens.ok()) {
    if (absl::IsCancelled(page_tokens.status())) return 0;  // stopped before it started
    labshare::LogError("cannot read the page-token key from Redis", {{"error", page_tokens.status().ToString()}});
    return 2;
  }
  labshare::booking::BookingManager manager(&store, &inventory, &clock, *std::move(page_tokens));
  labshare::Authorizer authorizer(verifier.get(), labshare::booking::BookingPolicy(), &wall);
  labshare::booking::BookingService service(&manager, &authorizer);
  absl::Notification stop;
  std::thread sweeper([&] {
    bool migrated = false;
    do {
      if (!migrated) {  // listing indexes of older versions (see redis_booking_store.h)
        auto moved = store.MigrateIndexes();
        // Calendars of older versions (two keys each) into one sorted set.
        auto folded = store.MigrateCalendars();
        if (!folded.ok()) labshare::LogWarning("calendar migration failed", {{"error", folded.status().ToString()}});
        if (folded.ok() && *folded > 0) labshare::LogInfo("calendars migrated", {{"entries", std::to_string(*folded)}});
        // Then the spans that bound a calendar's look back (after the fold).
        auto spans = folded.ok() ? store.MigrateCalendarSpans() : folded.status();
        if (folded.ok() && !spans.ok()) {
          labshare::LogWarning("calendar span migration failed", {{"error", spans.status().ToString()}});
        }
        if (spans.ok() && *spans > 0) labshare::LogInfo("calendar spans filled in", {{"calendars", std::to_string(*spans)}});
        auto listed = manager.MigrateListings();  // cross-instrument listing indexes
        if (!listed.ok()) labshare::LogWarning("listing migration failed", {{"error", listed.status().ToString()}});
        // Entries an older version left under a former operator (booking_lists.h).
        absl::StatusOr<int64_t> refiled = listed.ok() ? manager.RefileStaleOperators() : listed.status();
        if (listed.ok() && !refiled.ok()) {
          labshare::LogWarning("operator re-filing at start failed", {{"error", refiled.status().ToString()}});
        }
        if (refiled.ok() && *refiled > 0) {
          labshare::LogInfo("listings re-filed to current operators", {{"instruments", std::to_string(*refiled)}});
        }
        // Lease requests an older version stored without their due entry.
        auto due = manager.MigrateLeaseRequestsDue();
        if (!due.ok()) labshare::LogWarning("lease request migration failed", {{"error", due.status().ToString()}});
        if (due.ok() && *due > 0) labshare::LogInfo("lease requests put on the due set", {{"leases", std::to_string(*due)}});
        migrated = moved.ok() && folded.ok() && spans.ok() && listed.ok() && refiled.ok() && due.ok();
        if (!moved.ok()) labshare::LogWarning("index migration failed", {{"error", moved.status().ToString()}});
        if (moved.ok() && *moved > 0) labshare::LogInfo("listing indexes migrated", {{"bookings", std::to_string(*moved)}});
      }
      auto swept = manager.Sweep();
      if (!swept.ok()) labshare::LogWarning("sweep failed", {{"error", swept.status().ToString()}});
    } while (!stop.WaitForNotificationWithTimeout(absl::GetFlag(FLAGS_sweep_interval)));
  });
  // Maintenance windows declared in inventory cancel the bookings they hit.
  // Failing reads are retried with backoff and jitter; the loop stops
  // quietly when SIGTERM arrives (common/events.h ConsumerLoop).
  labshare::ConsumerLoopOptions loop_options;
  loop_options.name = "inventory events";
  loop_options.idle = absl::Milliseconds(100);
  labshare::ConsumerLoop loop(loop_options);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  labshare::ConsumerOptions options;
  options.stream = "{inventory}:outbox";
  options.group = labshare::booking::kInventoryEventsGroup;
  static_assert(std::string_view(labshare::booking::kInventoryEventsGroup) == labshare::kOutboxGroupBooking);
  // Stable across restarts (common/events.h): a restarted process re-reads
  // its own pending entries at once instead of waiting for their reclaim.
  options.consumer = std::string("booking-") + host;
  labshare::EventConsumer events(&redis, options);
  loop.Add(&events, labshare::booking::InventoryEventHandler(&manager));
  std::thread consumer([&] { loop.Run(); });
  // Session uses (qualification renewals) from the check-outs' events on
  // the partitions' outboxes, delivered to inventory until it takes them
  // (session_uses.h); a loop of its own, so that inventory being down
  // holds up no inventory event.
  labshare::ConsumerLoopOptions uses_options;
  uses_options.name = "session uses";
  uses_options.idle = absl::Seconds(1);  // not urgent: the use counts from the check-out's time
  labshare::ConsumerLoop uses_loop(uses_options);
  static_assert(std::string_view(labshare::booking::kSessionUsesGroup) == labshare::kOutboxGroupBookingUses);
  std::vector<std::unique_ptr<labshare::EventConsumer>> use_consumers;
  for (int p = 0; p < labshare::booking::kPartitions; ++p) {
    labshare::ConsumerOptions o;
    o.stream = labshare::booking::keys::Outbox(p);
    o.group = labshare::booking::kSessionUsesGroup;
    o.consumer = options.consumer;
    o.block = absl::ZeroDuration();  // 16 streams on one thread: none waits
    use_consumers.push_back(std::make_unique<labshare::EventConsumer>(&redis, o));
    uses_loop.Add(o.stream, labshare::booking::SessionUsePoll(use_consumers.back().get(), &manager));
  }
  // Failed and parked entries, the oldest pending one (common/events.h),
  // of both loops.
  std::vector<const labshare::EventConsumer*> metered = loop.consumers();
  for (const auto& c : use_consumers) metered.push_back(c.get());
  labshare::ConsumerMetrics consumer_metrics(&redis, metered);
  std::thread uses([&] { uses_loop.Run(); });
  // This replica's inventory cache follows inventory's changes.
  std::thread watcher([&] {
    labshare::booking::InventoryCacheWatcher watch(&redis, &inventory);
    while (!stop.HasBeenNotified()) {
      auto read = watch.Poll(absl::Seconds(1));
      if (!read.ok()) {
        labshare::LogWarning("inventory cache watch", {{"error", read.status().ToString()}});
        stop.WaitForNotificationWithTimeout(absl::Seconds(1));
      }
    }
  });
  // Outbox retention and lag metrics (common/outbox_trim.h).
  // Every outbox is read by usage and notify's modules; the partitions'
  // (booking events) by billing too: nothing of them goes unbilled.
  std::vector<labshare::OutboxStream> outboxes = {{"{booking}:outbox", labshare::OutboxEveryStreamGroups()}};
  for (int p = 0; p < labshare::booking::kPartitions; ++p) {
    outboxes.push_back({labshare::booking::keys::Outbox(p), labshare::OutboxEveryStreamGroups()});
    outboxes.back().required_groups.push_back(labshare::kOutboxGroupBilling);
    outboxes.back().required_groups.push_back(labshare::kOutboxGroupBookingUses);  // no use trimmed undelivered
  }
  labshare::OutboxMaintenance outbox(&redis, outboxes);
  // Ready only while inventory is too: without it no call can be served.
  const int rc = labshare::RunService(
      "booking", &redis, &authorizer, {&service},
      [&] {
        loop.Stop();
        uses_loop.Stop();
        stop.Notify();
      },
      {{"inventory", *inventory_channel_or}});
  loop.Stop();
  uses_loop.Stop();
  if (!stop.HasBeenNotified()) stop.Notify();  // RunService returns without a signal when it fails to start
  sweeper.join();
  consumer.join();
  uses.join();
  watcher.join();
  return rc;
}
