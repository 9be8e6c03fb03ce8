// The webhooks module of labshare-notify (notify_module.h): WebhookService,
// the consumer group "notify-webhooks" on every outbox (one delivery per
// event and matching webhook) and the delivery loop (HTTPS POSTs with
// retries, dead letters and automatic disabling). The contract is
// proto/labshare/notify/v1/webhooks.proto.
//
// Wiring in main.cc:
//   auto webhooks = std::make_unique<WebhookModule>(context, *WebhookOptionsFromFlags());
#ifndef LABSHARE_SERVICES_NOTIFY_WEBHOOK_MODULE_H_
#define LABSHARE_SERVICES_NOTIFY_WEBHOOK_MODULE_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "services/notify/notify_module.h"
#include "services/notify/webhook_http.h"
#include "services/notify/webhook_manager.h"

namespace labshare::notify {

struct WebhookOptions {
  WebhookLimits limits;
  // Of one attempt (connect, TLS, request, answer).
  absl::Duration timeout = absl::Seconds(10);
  // PEM file of the CAs to trust for endpoints; empty: the system's.
  std::string ca_file;
  // Connect also to loopback and private addresses (tests, closed
  // networks); off: see WebhookHttpOptions.
  bool allow_private_addresses = false;
  // How often an idle delivery thread looks for due deliveries.
  absl::Duration poll_interval = absl::Seconds(1);
  // Delivery threads (each claims and attempts on its own).
  int delivery_threads = 2;
  // Deliveries one thread attempts per round; each is claimed right before
  // its attempt (one at a time), so that one claim's lease covers one
  // attempt only.
  int claim_batch = 10;
  // Tests only: called after a delivery is claimed, right before its POST.
  std::function<void(const ClaimedDelivery&)> before_attempt;
  // How often the first delivery thread removes DELIVERED deliveries past
  // limits.retention.
  absl::Duration trim_interval = absl::Hours(1);
  // Seals the signing secrets in Redis (--webhook_secret_key_file); null:
  // they are stored in clear.
  std::shared_ptr<const SecretBox> secret_box;
  // Seal the secrets stored in clear by an older version (at start and every
  // trim_interval; needs secret_box). Off by default: an older notifier still
  // running would sign with the sealed text (see the README's upgrade note).
  bool seal_existing = false;
};

// From the --webhook_* flags (webhook_flags.cc); the secret key file is
// read here: a missing, exposed or malformed one is the error.
absl::StatusOr<WebhookOptions> WebhookOptionsFromFlags();

class WebhookModule final : public NotifyModule {
 public:
  // context.redis, clock and wall outlive the module.
  WebhookModule(const NotifyContext& context, WebhookOptions options);
  ~WebhookModule() override;
  WebhookModule(const WebhookModule&) = delete;
  WebhookModule& operator=(const WebhookModule&) = delete;

  void AddPolicy(MethodPolicy* policy) override;
  std::vector<grpc::Service*> Services(const Authorizer* authorizer) override;
  void AddConsumers(ConsumerLoop* loop) override;
  void Start() override;
  void Stop() override;

  // The consumer's handler for one outbox entry.
  absl::Status HandleEvent(const StreamEvent& entry);
  // One round of a delivery thread, on the calling thread: claims a due
  // delivery and attempts it, up to claim_batch times (a failure to record
  // one outcome does not stop the others; the first such error is returned
  // after the round). Returns how many attempts were made.
  absl::StatusOr<int> DeliverDueOnce();

  // The first delivery thread's periodic work, on the calling thread:
  // seals clear secrets (only with seal_existing) and trims deliveries past
  // their retention. Errors are logged and retried at the next pass.
  void MaintainOnce();
  // Before Start: the key check of WebhookManager::CheckSecretKey (main
  // refuses to start on an error).
  absl::Status CheckSecretKey() { return manager_->CheckSecretKey(); }

  WebhookManager& manager() { return *manager_; }

 private:
  void DeliveryThread(bool trims);

  NotifyContext context_;
  WebhookOptions options_;
  std::unique_ptr<WebhookManager> manager_;
  std::unique_ptr<grpc::Service> service_;
  std::vector<std::unique_ptr<EventConsumer>> consumers_;
  std::vector<std::thread> threads_;
  absl::Notification stop_;
  bool started_ = false;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_WEBHOOK_MODULE_H_
