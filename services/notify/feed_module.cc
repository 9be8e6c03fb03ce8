#include "services/notify/feed_module.h"

#include "common/unary.h"

namespace labshare::notify {
namespace {

constexpr char kDomain[] = "notify.labshare";

}  // namespace

grpc::Status FeedService::CreateCalendarFeed(grpc::ServerContext* ctx, const fv1::CreateCalendarFeedRequest* req,
                                             fv1::CalendarFeed* resp) {
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal& p) { return manager_->Create(p, *req); });
}

grpc::Status FeedService::ListCalendarFeeds(grpc::ServerContext* ctx, const fv1::ListCalendarFeedsRequest* req,
                                            fv1::ListCalendarFeedsResponse* resp) {
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal& p) { return manager_->List(p, *req); });
}

grpc::Status FeedService::RotateCalendarFeed(grpc::ServerContext* ctx, const fv1::RotateCalendarFeedRequest* req,
                                             fv1::CalendarFeed* resp) {
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal& p) { return manager_->Rotate(p, *req); });
}

grpc::Status FeedService::DeleteCalendarFeed(grpc::ServerContext* ctx, const fv1::DeleteCalendarFeedRequest* req,
                                             fv1::CalendarFeed* resp) {
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal& p) { return manager_->Delete(p, *req); });
}

grpc::Status FeedService::GetCalendarFeedContent(grpc::ServerContext* ctx,
                                                 const fv1::GetCalendarFeedContentRequest* req,
                                                 fv1::CalendarFeedContent* resp) {
  // The token is the credential; the policy admits the call unauthenticated.
  return HandleUnary(*auth_, ctx, kDomain, resp, [&](const Principal&) { return manager_->Content(*req); });
}

FeedModule::FeedModule(const NotifyContext& context, FeedOptions options)
    : FeedModule(context, options, NewInventoryDirectory(context.inventory, context.wall, options)) {}

FeedModule::FeedModule(const NotifyContext& context, FeedOptions options,
                       std::unique_ptr<InstrumentDirectory> instruments)
    : context_(context),
      instruments_(std::move(instruments)),
      projection_(context.redis, context.clock, instruments_.get(), options),
      manager_(context.redis, context.clock, instruments_.get(), &projection_, context.console_url, options) {}

void FeedModule::AddPolicy(MethodPolicy* policy) {
  const MethodPolicy& own = FeedPolicy();
  for (const auto& [method, roles] : own.rules()) {
    for (const auto& [role, scope] : roles) policy->Allow(method, {role}, scope);
  }
  policy->AllowUnauthenticated("/labshare.notify.v1.CalendarFeedService/GetCalendarFeedContent");
}

std::vector<grpc::Service*> FeedModule::Services(const Authorizer* authorizer) {
  service_ = std::make_unique<FeedService>(&manager_, authorizer);
  return {service_.get()};
}

void FeedModule::AddConsumers(ConsumerLoop* loop) {
  for (const std::string& stream : context_.streams) {
    ConsumerOptions options;
    options.stream = stream;
    options.group = kFeedsGroup;
    options.consumer = context_.consumer;
    options.block = absl::ZeroDuration();
    options.reclaim_idle = projection_.options().reclaim_idle;
    consumers_.push_back(std::make_unique<EventConsumer>(context_.redis, options));
    loop->Add(consumers_.back().get(), [this](const StreamEvent& e) { return projection_.Apply(e); });
  }
}

}  // namespace labshare::notify
