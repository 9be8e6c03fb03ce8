#include "services/notify/feed_module.h"

#include "common/error.h"
#include "common/input_limits.h"
#include "common/unary.h"

namespace labshare::notify {
namespace {

constexpr char kDomain[] = "notify.labshare";

// The role check, then types.proto's range check of every number, then `f`.
template <typename Req, typename Resp, typename F>
grpc::Status Unary(const Authorizer& auth, grpc::ServerContext* ctx, const Req& req, Resp* resp, F f) {
  return HandleUnary(auth, ctx, kDomain, resp, [&](const Principal& p) -> absl::StatusOr<Resp> {
    LS_RETURN_IF_ERROR(CheckInputRanges(req));
    return f(p);
  });
}

}  // namespace

grpc::Status FeedService::CreateCalendarFeed(grpc::ServerContext* ctx, const fv1::CreateCalendarFeedRequest* req,
                                             fv1::CalendarFeed* resp) {
  return Unary(*auth_, ctx, *req, resp, [&](const Principal& p) { return manager_->Create(p, *req); });
}

grpc::Status FeedService::ListCalendarFeeds(grpc::ServerContext* ctx, const fv1::ListCalendarFeedsRequest* req,
                                            fv1::ListCalendarFeedsResponse* resp) {
  return Unary(*auth_, ctx, *req, resp, [&](const Principal& p) { return manager_->List(p, *req); });
}

grpc::Status FeedService::RotateCalendarFeed(grpc::ServerContext* ctx, const fv1::RotateCalendarFeedRequest* req,
                                             fv1::CalendarFeed* resp) {
  return Unary(*auth_, ctx, *req, resp, [&](const Principal& p) { return manager_->Rotate(p, *req); });
}

grpc::Status FeedService::DeleteCalendarFeed(grpc::ServerContext* ctx, const fv1::DeleteCalendarFeedRequest* req,
                                             fv1::CalendarFeed* resp) {
  return Unary(*auth_, ctx, *req, resp, [&](const Principal& p) { return manager_->Delete(p, *req); });
}

grpc::Status FeedService::GetCalendarFeedContent(grpc::ServerContext* ctx,
                                                 const fv1::GetCalendarFeedContentRequest* req,
                                                 fv1::CalendarFeedContent* resp) {
  // The token is the credential; the policy admits the call unauthenticated.
  return Unary(*auth_, ctx, *req, resp, [&](const Principal&) { return manager_->Content(*req); });
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
    options.retry_initial = projection_.options().retry_initial;
    consumers_.push_back(std::make_unique<EventConsumer>(context_.redis, options));
    loop->Add(consumers_.back().get(), [this](const StreamEvent& e) { return projection_.Apply(e); });
  }
}

}  // namespace labshare::notify
