// The --webhook_* flags of labshare-notify.
#include "absl/flags/flag.h"
#include "services/notify/webhook_module.h"

ABSL_FLAG(int, webhook_max_attempts, 8, "Attempts of one webhook delivery before it goes to the dead letters.");
ABSL_FLAG(int, webhook_disable_after, 20,
          "Failed attempts in a row (any deliveries) after which a webhook is disabled and WebhookDisabled published.");
ABSL_FLAG(absl::Duration, webhook_backoff_initial, absl::Seconds(10),
          "Delay after a webhook's first failed attempt; doubles per attempt (with jitter) up to --webhook_backoff_max.");
ABSL_FLAG(absl::Duration, webhook_backoff_max, absl::Hours(1), "Longest delay between two attempts of a delivery.");
ABSL_FLAG(absl::Duration, webhook_timeout, absl::Seconds(10), "Time limit of one webhook attempt.");
ABSL_FLAG(std::string, webhook_ca_file, "",
          "PEM file of the CAs trusted for webhook endpoints; empty: the system's (tests pass a test CA).");
ABSL_FLAG(bool, webhook_allow_private_addresses, false,
          "Let webhooks connect to loopback, private and reserved addresses (tests, closed networks only).");
ABSL_FLAG(int, webhook_delivery_threads, 2, "Threads attempting webhook deliveries.");
ABSL_FLAG(absl::Duration, webhook_poll_interval, absl::Seconds(1), "How often idle delivery threads look for due deliveries.");
ABSL_FLAG(absl::Duration, webhook_retention, absl::Hours(24 * 30),
          "Delivered webhook deliveries are removed this long after they were queued (dead letters stay).");
ABSL_FLAG(int, webhook_max_per_organization, 20, "Webhooks one organisation may register.");
ABSL_FLAG(std::string, webhook_secret_key_file, "",
          "File (mode 0600) holding 64 hex digits (openssl rand -hex 32): the AES-256-GCM key that seals webhook "
          "signing secrets in Redis; empty: secrets are stored in clear.");
ABSL_FLAG(bool, webhook_seal_existing, false,
          "Also seal the secrets an older version stored in clear (at start and hourly; needs "
          "--webhook_secret_key_file). Only once no older notifier runs: it would sign with the sealed text.");

namespace labshare::notify {

absl::StatusOr<WebhookOptions> WebhookOptionsFromFlags() {
  WebhookOptions o;
  if (const std::string file = absl::GetFlag(FLAGS_webhook_secret_key_file); !file.empty()) {
    absl::StatusOr<SecretBox> box = SecretBox::FromKeyFile(file);
    if (!box.ok()) return box.status();
    o.secret_box = std::make_shared<const SecretBox>(*std::move(box));
  }
  o.seal_existing = absl::GetFlag(FLAGS_webhook_seal_existing);
  o.limits.max_attempts = std::max(1, absl::GetFlag(FLAGS_webhook_max_attempts));
  o.limits.disable_after = std::max(1, absl::GetFlag(FLAGS_webhook_disable_after));
  o.limits.backoff_initial = absl::GetFlag(FLAGS_webhook_backoff_initial);
  o.limits.backoff_max = absl::GetFlag(FLAGS_webhook_backoff_max);
  o.limits.retention = absl::GetFlag(FLAGS_webhook_retention);
  o.limits.max_webhooks_per_org = std::max(1, absl::GetFlag(FLAGS_webhook_max_per_organization));
  o.timeout = absl::GetFlag(FLAGS_webhook_timeout);
  o.limits.claim_lease = o.timeout + absl::Seconds(30);
  o.ca_file = absl::GetFlag(FLAGS_webhook_ca_file);
  o.allow_private_addresses = absl::GetFlag(FLAGS_webhook_allow_private_addresses);
  o.delivery_threads = std::max(1, absl::GetFlag(FLAGS_webhook_delivery_threads));
  o.poll_interval = absl::GetFlag(FLAGS_webhook_poll_interval);
  return o;
}

}  // namespace labshare::notify
