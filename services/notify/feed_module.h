// The calendar-feed module of labshare-notify (feeds.proto): the
// CalendarFeedService, and the projection of booking events into the
// feeds' entries by consumer group "notify-feeds" on every outbox of
// NotifyContext::streams.
//
// Wiring (main.cc):
//   auto feeds = std::make_unique<FeedModule>(context, *FeedOptionsFromFlags());
// It reads instruments and facilities through context.inventory (as
// Role SERVICE: GetInstrument, GetFacility) and uses context.redis,
// context.clock (the window, event and feed times), context.wall (the
// inventory cache), context.console_url (secret URLs) and context.consumer.
#ifndef LABSHARE_SERVICES_NOTIFY_FEED_MODULE_H_
#define LABSHARE_SERVICES_NOTIFY_FEED_MODULE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "labshare/notify/v1/feeds.grpc.pb.h"
#include "services/notify/feed_manager.h"
#include "services/notify/feed_projection.h"
#include "services/notify/notify_module.h"

namespace labshare::notify {

inline constexpr char kFeedsGroup[] = "notify-feeds";

// From the --feed_* flags (feed_flags.cc); INVALID_ARGUMENT for a
// --feed_default_time_zone that is no IANA zone name.
absl::StatusOr<FeedOptions> FeedOptionsFromFlags();

class FeedService final : public fv1::CalendarFeedService::Service {
 public:
  FeedService(FeedManager* manager, const Authorizer* authorizer) : manager_(manager), auth_(authorizer) {}
  grpc::Status CreateCalendarFeed(grpc::ServerContext* ctx, const fv1::CreateCalendarFeedRequest* req,
                                  fv1::CalendarFeed* resp) override;
  grpc::Status ListCalendarFeeds(grpc::ServerContext* ctx, const fv1::ListCalendarFeedsRequest* req,
                                 fv1::ListCalendarFeedsResponse* resp) override;
  grpc::Status RotateCalendarFeed(grpc::ServerContext* ctx, const fv1::RotateCalendarFeedRequest* req,
                                  fv1::CalendarFeed* resp) override;
  grpc::Status DeleteCalendarFeed(grpc::ServerContext* ctx, const fv1::DeleteCalendarFeedRequest* req,
                                  fv1::CalendarFeed* resp) override;
  grpc::Status GetCalendarFeedContent(grpc::ServerContext* ctx, const fv1::GetCalendarFeedContentRequest* req,
                                      fv1::CalendarFeedContent* resp) override;

 private:
  FeedManager* manager_;
  const Authorizer* auth_;
};

class FeedModule final : public NotifyModule {
 public:
  FeedModule(const NotifyContext& context, FeedOptions options);
  // Tests: instruments from elsewhere than context.inventory.
  FeedModule(const NotifyContext& context, FeedOptions options, std::unique_ptr<InstrumentDirectory> instruments);

  void AddPolicy(MethodPolicy* policy) override;
  std::vector<grpc::Service*> Services(const Authorizer* authorizer) override;
  void AddConsumers(ConsumerLoop* loop) override;
  void Start() override {}
  void Stop() override {}

  FeedManager& manager() { return manager_; }
  FeedProjection& projection() { return projection_; }

 private:
  NotifyContext context_;
  std::unique_ptr<InstrumentDirectory> instruments_;
  FeedProjection projection_;
  FeedManager manager_;
  std::unique_ptr<FeedService> service_;
  std::vector<std::unique_ptr<EventConsumer>> consumers_;
};

}  // namespace labshare::notify

#endif  // LABSHARE_SERVICES_NOTIFY_FEED_MODULE_H_
