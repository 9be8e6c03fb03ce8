// labshare-notify: who hears about what. One binary of modules
// (notify_module.h): mail notifications (notify_mail_*), and, wired the
// same way, webhooks and calendar feeds. main builds the context, collects
// every module's policy into one MethodPolicy and one Authorizer, registers
// every module's services and runs every module's consumers in one
// ConsumerLoop.
#include <curl/curl.h>
#include <unistd.h>

#include <cstdio>
#include <string_view>
#include <thread>

#include "absl/flags/flag.h"
#include "common/channel.h"
#include "common/events.h"
#include "common/log.h"
#include "common/outbox_trim.h"
#include "common/server.h"
#include "common/token_flags.h"
#include "services/notify/feed_module.h"
#include "services/notify/notify_mail_module.h"
#include "services/notify/notify_metrics.h"
#include "services/notify/notify_module.h"
#include "services/notify/webhook_module.h"

ABSL_FLAG(std::string, inventory, "127.0.0.1:50051", "HOST:PORT of labshare-inventory (people, instruments).");
ABSL_FLAG(std::string, console_url, "http://127.0.0.1:50056",
          "Public base URL of the web console (links in mails, unsubscribe and feed URLs).");
ABSL_FLAG(int, booking_partitions, 16, "Number of booking outbox streams {bk:P}:outbox.");
ABSL_FLAG(std::string, consumer_name, "",
          "This process's consumer name, unique per replica and stable across its restarts; default notify-HOSTNAME.");

int main(int argc, char** argv) {
  // libcurl (SMTP for mail, HTTPS for webhooks): its global set-up is not
  // thread-safe, so once here before any thread starts.
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    std::fprintf(stderr, "labshare-notify: cannot initialise libcurl\n");
    return 1;
  }
  labshare::InitProcess(argc, argv,
                        "labshare-notify: notifications by mail, webhooks and calendar feeds.\n"
                        "Usage: labshare-notify --listen=HOST:PORT --redis=HOST:PORT --jwks=FILE|URL "
                        "--inventory=HOST:PORT --smtp=HOST:PORT --console_url=URL");
  labshare::RedisPool redis(labshare::RedisOptionsFromFlags());
  const std::unique_ptr<labshare::TokenVerifier> verifier = labshare::TokenVerifierFromFlags();
  const std::unique_ptr<labshare::Clock> clock_owner = labshare::ClockFromFlags();
  labshare::SystemClock wall;
  // Mutual TLS with --tls_*: inventory knows this service by its certificate.
  auto inventory_channel = labshare::MakeChannel(absl::GetFlag(FLAGS_inventory));
  if (!inventory_channel.ok()) {
    labshare::LogError("--inventory", {{"error", inventory_channel.status().ToString()}});
    return 2;
  }
  auto mail_options = labshare::notify::MailOptionsFromFlags();
  if (!mail_options.ok()) {
    labshare::LogError("mail settings", {{"error", mail_options.status().ToString()}});
    return 2;
  }

  // Mail and webhook series on /metrics (notify_metrics.h).
  labshare::notify::NotifyMetrics metrics(&redis, &wall);
  labshare::notify::NotifyContext context;
  context.metrics = &metrics;
  context.redis = &redis;
  context.clock = clock_owner.get();
  context.wall = &wall;
  context.inventory = *inventory_channel;
  context.console_url = absl::GetFlag(FLAGS_console_url);
  while (!context.console_url.empty() && context.console_url.back() == '/') context.console_url.pop_back();
  context.consumer = absl::GetFlag(FLAGS_consumer_name);
  if (context.consumer.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    context.consumer = std::string("notify-") + host;
  }
  context.streams = {"{inventory}:outbox", "{booking}:outbox", "{billing}:outbox", "{usage}:outbox",
                     labshare::notify::kNotifyOutbox};
  for (int p = 0; p < absl::GetFlag(FLAGS_booking_partitions); ++p) {
    context.streams.push_back("{bk:" + std::to_string(p) + "}:outbox");
  }

  // Feeds speak the owner's language like mail; the same default.
  const std::string mail_language = mail_options->default_language;
  // The modules: mail, webhooks, calendar feeds.
  std::vector<std::unique_ptr<labshare::notify::NotifyModule>> modules;
  modules.push_back(std::make_unique<labshare::notify::MailModule>(context, *std::move(mail_options)));
  auto webhook_options = labshare::notify::WebhookOptionsFromFlags();
  if (!webhook_options.ok()) {
    labshare::LogError("webhook settings", {{"error", webhook_options.status().ToString()}});
    return 2;
  }
  auto webhooks = std::make_unique<labshare::notify::WebhookModule>(context, *std::move(webhook_options));
  // A wrong key file, or none once secrets are sealed: refused here rather
  // than deliveries that never go.
  if (absl::Status key = webhooks->CheckSecretKey(); !key.ok()) {
    labshare::LogError("webhook secret key", {{"error", key.ToString()}});
    return 2;
  }
  modules.push_back(std::move(webhooks));
  auto feed_options_or = labshare::notify::FeedOptionsFromFlags();
  if (!feed_options_or.ok()) {
    labshare::LogError("feed settings", {{"error", feed_options_or.status().ToString()}});
    return 2;
  }
  labshare::notify::FeedOptions feed_options = *std::move(feed_options_or);
  feed_options.default_language = mail_language;
  modules.push_back(std::make_unique<labshare::notify::FeedModule>(context, std::move(feed_options)));

  labshare::MethodPolicy policy;
  for (auto& m : modules) m->AddPolicy(&policy);
  labshare::Authorizer authorizer(verifier.get(), std::move(policy), &wall);
  std::vector<grpc::Service*> services;
  for (auto& m : modules) {
    for (grpc::Service* s : m->Services(&authorizer)) services.push_back(s);
  }
  labshare::ConsumerLoopOptions loop_options;
  loop_options.name = "notify events";
  labshare::ConsumerLoop loop(loop_options);
  for (auto& m : modules) m->AddConsumers(&loop);
  // Failed and parked entries, the oldest pending one (common/events.h).
  labshare::ConsumerMetrics consumer_metrics(&redis, loop.consumers());
  for (auto& m : modules) m->Start();
  std::thread consumer([&] { loop.Run(); });
  // Outbox retention and lag metrics (common/outbox_trim.h).
  // {notify}:outbox is read by usage and notify's own modules.
  static_assert(std::string_view(labshare::notify::kMailGroup) == labshare::kOutboxGroupNotifyMail);
  static_assert(std::string_view(labshare::notify::kWebhooksGroup) == labshare::kOutboxGroupNotifyWebhooks);
  static_assert(std::string_view(labshare::notify::kFeedsGroup) == labshare::kOutboxGroupNotifyFeeds);
  labshare::OutboxMaintenance outbox(&redis, {{labshare::notify::kNotifyOutbox, labshare::OutboxEveryStreamGroups()}});
  const int rc = labshare::RunService(
      "notify", &redis, &authorizer, services,
      [&] {
        loop.Stop();
        for (auto& m : modules) m->Stop();
      },
      {{"inventory", *inventory_channel}});
  loop.Stop();
  consumer.join();
  for (auto& m : modules) m->Stop();
  return rc;
}
