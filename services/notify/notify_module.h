// labshare-notify is one binary made of modules: mail notifications
// (notify_mail_*), webhooks (webhook_*) and calendar feeds (feed_*). Each
// module owns its keys under the "{notify}" hash tag, its consumer group on
// every outbox, its gRPC service and its background loops; main.cc builds
// the context, asks every module for its policy, builds one Authorizer,
// registers every module's services and runs every module's consumers in
// one ConsumerLoop.
#ifndef LABSHARE_SERVICES_NOTIFY_NOTIFY_MODULE_H_
#define LABSHARE_SERVICES_NOTIFY_NOTIFY_MODULE_H_

#include <memory>
#include <string>
#include <vector>

#include "common/auth.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/redis.h"

namespace grpc {
class Channel;
class Service;
}  // namespace grpc

namespace labshare::notify {

class NotifyMetrics;

// The outbox every module's events go to.
inline constexpr char kNotifyOutbox[] = "{notify}:outbox";

struct NotifyContext {
  RedisPool* redis = nullptr;
  // The domain clock (ClockFromFlags): event times, reminders, schedules.
  const Clock* clock = nullptr;
  // The wall clock: network timeouts and backoff, never domain decisions.
  const Clock* wall = nullptr;
  // Mutual-TLS channel to labshare-inventory (this service calls as Role
  // SERVICE, "services/notify").
  std::shared_ptr<grpc::Channel> inventory;
  // Public base URL of the web console, e.g. "https://labshare.example.org"
  // (links in mails, feed and unsubscribe URLs); no trailing slash.
  std::string console_url;
  // Consumer name, unique per process and stable across its restarts.
  std::string consumer;
  // The notifier's Prometheus series (notify_metrics.h); may be null.
  NotifyMetrics* metrics = nullptr;
  // Every outbox to consume: inventory, booking, the booking partitions,
  // billing, usage and notify's own.
  std::vector<std::string> streams;
};

class NotifyModule {
 public:
  virtual ~NotifyModule() = default;
  // Adds the roles of this module's methods to the service's policy.
  virtual void AddPolicy(MethodPolicy* policy) = 0;
  // This module's gRPC services; they authorize every call through
  // `authorizer`, which outlives them.
  virtual std::vector<grpc::Service*> Services(const Authorizer* authorizer) = 0;
  // This module's consumer groups on context.streams.
  virtual void AddConsumers(ConsumerLoop* loop) = 0;
  // Starts the module's background loops (deliveries, schedules).
  virtual void Start() = 0;
  // Stops and joins them; called once, before the process exits.
  virtual void Stop() = 0;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_NOTIFY_MODULE_H_
