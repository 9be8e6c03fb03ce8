#include "services/notify/webhook_module.h"

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/log.h"
#include "services/notify/webhook_rules.h"
#include "services/notify/webhook_service.h"

namespace labshare::notify {

WebhookModule::WebhookModule(const NotifyContext& context, WebhookOptions options)
    : context_(context),
      options_(std::move(options)),
      manager_(std::make_unique<WebhookManager>(context.redis, context.clock, context.wall, options_.limits)) {
  manager_->set_metrics(context.metrics);
  manager_->set_secret_box(options_.secret_box.get());
}

WebhookModule::~WebhookModule() { Stop(); }

void WebhookModule::AddPolicy(MethodPolicy* policy) {
  for (const auto& [method, roles] : WebhookPolicy().rules()) {
    for (const auto& [role, scope] : roles) policy->Allow(method, {role}, scope);
  }
}

std::vector<grpc::Service*> WebhookModule::Services(const Authorizer* authorizer) {
  service_ = std::make_unique<WebhookServiceImpl>(manager_.get(), authorizer);
  return {service_.get()};
}

absl::Status WebhookModule::HandleEvent(const StreamEvent& entry) {
  return manager_->QueueDeliveries(entry).status();
}

void WebhookModule::AddConsumers(ConsumerLoop* loop) {
  for (const auto& stream : context_.streams) {
    ConsumerOptions o;
    o.stream = stream;
    o.group = kWebhooksGroup;
    o.consumer = context_.consumer;
    o.block = absl::ZeroDuration();  // one loop polls many streams
    consumers_.push_back(std::make_unique<EventConsumer>(context_.redis, o));
    loop->Add(consumers_.back().get(), [this](const StreamEvent& e) { return HandleEvent(e); });
  }
}

absl::StatusOr<int> WebhookModule::DeliverDueOnce() {
  thread_local absl::BitGen gen;
  WebhookHttpOptions http;
  http.timeout = options_.timeout;
  http.ca_file = options_.ca_file;
  http.allow_private_addresses = options_.allow_private_addresses;
  int attempts = 0;
  absl::Status first_error;
  // One claim per attempt, taken right before it: a claim's lease (the
  // timeout and a margin) never has to cover the attempts of others.
  for (int i = 0; i < std::max(1, options_.claim_batch); ++i) {
    if (stop_.HasBeenNotified()) break;
    absl::StatusOr<std::vector<ClaimedDelivery>> claimed = manager_->ClaimDue(1);
    if (!claimed.ok()) {
      if (first_error.ok()) first_error = claimed.status();
      break;
    }
    if (claimed->empty()) break;
    const ClaimedDelivery& c = claimed->front();
    if (options_.before_attempt) options_.before_attempt(c);
    WebhookPost post;
    post.url = c.url;
    post.id = c.delivery.name().substr(c.delivery.name().rfind('/') + 1);
    // Receivers compare it with their own clock: the wall clock.
    post.timestamp = std::to_string(absl::ToUnixSeconds(context_.wall->Now()));
    post.body = c.delivery.body();
    post.signature = WebhookSignature(c.secret, post.id, post.timestamp, post.body);
    const AttemptResult result = PostWebhook(post, http);
    ++attempts;
    if (!result.ok) {
      LogInfo("webhook attempt failed", {{"delivery", c.delivery.name()}, {"error", result.error}});
    }
    // An outcome that cannot be recorded does not stop the round: that
    // delivery is attempted again after its lease.
    absl::Status recorded = manager_->RecordAttempt(c, result, absl::Uniform(gen, 0.0, 1.0));
    if (!recorded.ok()) {
      LogWarning("webhook attempt not recorded", {{"delivery", c.delivery.name()}, {"error", recorded.ToString()}});
      if (first_error.ok()) first_error = recorded;
    }
  }
  if (!first_error.ok()) return first_error;
  return attempts;
}

void WebhookModule::MaintainOnce() {
  // Secrets written in clear by an older version: sealed only when asked
  // (--webhook_seal_existing), once no older notifier runs.
  if (options_.seal_existing) {
    absl::StatusOr<int> sealed = manager_->SealClearSecrets();
    if (!sealed.ok()) {
      LogWarning("webhook secrets: cannot seal; later", {{"error", sealed.status().ToString()}});
    } else if (*sealed > 0) {
      LogInfo("webhook secrets stored in clear were sealed", {{"count", std::to_string(*sealed)}});
    }
  }
  // Queued deliveries of a disabled webhook that its disabling left (the
  // process died between its steps) are made DEAD here.
  absl::StatusOr<int> settled = manager_->SettleDisabled(1000);
  if (!settled.ok()) {
    LogWarning("webhook deliveries of disabled webhooks: cannot settle; later",
               {{"error", settled.status().ToString()}});
  } else if (*settled > 0) {
    LogInfo("queued deliveries of disabled webhooks made DEAD", {{"count", std::to_string(*settled)}});
  }
  absl::StatusOr<int> trimmed = manager_->TrimDeliveries(1000);
  if (!trimmed.ok()) {
    LogWarning("webhook deliveries: cannot trim; later", {{"error", trimmed.status().ToString()}});
  } else if (*trimmed > 0) {
    LogInfo("webhook deliveries past their retention removed", {{"count", std::to_string(*trimmed)}});
  }
}

void WebhookModule::DeliveryThread(bool trims) {
  absl::Time next_trim = context_.wall->Now();
  while (!stop_.HasBeenNotified()) {
    if (trims && context_.wall->Now() >= next_trim) {
      next_trim = context_.wall->Now() + options_.trim_interval;
      MaintainOnce();
    }
    absl::StatusOr<int> n = DeliverDueOnce();
    if (!n.ok()) {
      if (stop_.HasBeenNotified()) break;
      LogWarning("webhook deliveries: cannot proceed; retrying", {{"error", n.status().ToString()}});
    }
    if (n.ok() && *n > 0) continue;
    stop_.WaitForNotificationWithTimeout(options_.poll_interval);
  }
}

void WebhookModule::Start() {
  if (started_) return;
  started_ = true;
  for (int i = 0; i < std::max(1, options_.delivery_threads); ++i) {
    threads_.emplace_back([this, i] { DeliveryThread(i == 0); });
  }
}

void WebhookModule::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

}  // namespace labshare::notify
