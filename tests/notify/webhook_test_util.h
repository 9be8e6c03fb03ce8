// Shared pieces of the webhook tests: the module in-process behind a real
// gRPC server (plaintext loopback, test tokens), callers by role, and
// events written to the outboxes the way the services write them.
#ifndef LABSHARE_TESTS_NOTIFY_WEBHOOK_TEST_UTIL_H_
#define LABSHARE_TESTS_NOTIFY_WEBHOOK_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "labshare/notify/v1/webhooks.grpc.pb.h"
#include "services/notify/notify_metrics.h"
#include "services/notify/webhook_module.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

namespace labshare::notify::testing {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;

inline constexpr char kBookingStream[] = "{bk:3}:outbox";
inline constexpr char kBillingStream[] = "{billing}:outbox";

class WebhookFixture : public ::testing::Test {
 protected:
  void SetUpModule(WebhookOptions options) {
    SetQuietLogging(true);
    redis_ = labshare::testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    labshare::testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    NotifyContext context;
    context.redis = pool_.get();
    context.clock = &clock_;
    context.wall = &wall_;
    context.consumer = "notify-test-1";
    context.streams = {"{inventory}:outbox", "{booking}:outbox", kBookingStream, kBillingStream, "{usage}:outbox",
                       kNotifyOutbox};
    metrics_ = std::make_unique<NotifyMetrics>(pool_.get(), &wall_);
    context.metrics = metrics_.get();
    module_ = std::make_unique<WebhookModule>(context, std::move(options));
    MethodPolicy policy;
    module_->AddPolicy(&policy);
    auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), std::move(policy), &clock_);
    ServerConfig config;
    config.service_name = "notify";
    config.redis = pool_.get();
    config.authorizer = auth_.get();
    auto server = Server::Start(config, module_->Services(auth_.get()));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::WebhookService::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
    ConsumerLoopOptions lo;
    lo.name = "webhooks test";
    loop_ = std::make_unique<ConsumerLoop>(lo);
    module_->AddConsumers(loop_.get());
  }

  void TearDown() override {
    if (module_) module_->Stop();
    if (server_) server_->Shutdown(absl::ZeroDuration());
  }

  Principal Admin(const std::string& org) {
    return Principal{"admin-of-" + org, org, {Role::kMemberBillingAdmin}, clock_.Now() + absl::Hours(1)};
  }
  Principal Root() { return Principal{"root", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(1)}; }
  Principal As(const std::string& user, const std::string& org, Role role) {
    return Principal{user, org, {role}, clock_.Now() + absl::Hours(1)};
  }

  template <typename Req, typename Resp>
  absl::StatusOr<Resp> Call(const Principal& p,
                            grpc::Status (v1::WebhookService::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                            const Req& req) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + labshare::testing::Mint(p, clock_.Now()));
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    Resp resp;
    grpc::Status s = ((*stub_).*method)(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s);
    return resp;
  }

  absl::StatusOr<v1::CreateWebhookResponse> Create(const Principal& p, const std::string& org, const std::string& id,
                                                   const std::string& url, std::vector<std::string> types,
                                                   const std::string& request_id = "") {
    v1::CreateWebhookRequest r;
    r.set_parent("organizations/" + org);
    r.set_webhook_id(id);
    r.mutable_webhook()->set_url(url);
    for (auto& t : types) r.mutable_webhook()->add_event_types(t);
    r.set_request_id(request_id);
    return Call(p, &v1::WebhookService::Stub::CreateWebhook, r);
  }

  // An outbox entry as the services write it: fields type and payload.
  void Publish(const std::string& stream, const google::protobuf::Message& envelope) {
    auto v = pool_->Command({"XADD", stream, "*", "type", envelope.GetDescriptor()->full_name(), "payload",
                             envelope.SerializeAsString()});
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_FALSE(v->is_error()) << v->str;
  }
  // Every stream read until nothing new is left.
  void Consume() {
    for (int i = 0; i < 3; ++i) loop_->RunOnce();
  }

  bk::BookingEvent BookingCancelled(const std::string& event_id, const std::string& payer) {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id(event_id);
    *e.mutable_header()->mutable_event_time() = ToProto(clock_.Now());
    e.mutable_header()->set_actor("users/u1");
    auto* c = e.mutable_booking_cancelled();
    auto* b = c->mutable_booking();
    b->set_name("bookings/b-" + event_id);
    b->set_instrument("instruments/nmr-600");
    b->set_instrument_owner("organizations/owner");
    b->set_user("users/u1");
    b->set_payer_organization(payer);
    b->set_state(bk::Booking::CANCELLED);
    c->set_previous_state(bk::Booking::CONFIRMED);
    c->set_late_cancellation(true);
    return e;
  }
  bl::BillingEvent InvoiceIssued(const std::string& event_id, const std::string& payer, const std::string& payee) {
    bl::BillingEvent e;
    e.mutable_header()->set_event_id(event_id);
    *e.mutable_header()->mutable_event_time() = ToProto(clock_.Now());
    e.mutable_header()->set_actor("users/root");
    auto* inv = e.mutable_invoice_issued()->mutable_invoice();
    inv->set_name("invoices/inv-" + event_id);
    inv->set_state(bl::Invoice::ISSUED);
    inv->set_payer_organization(payer);
    inv->add_payees()->set_organization(payee);
    inv->mutable_amount_due()->set_currency_code("CNY");
    inv->mutable_amount_due()->set_amount_minor(123456);
    return e;
  }

  // Whether the metrics page has this exact line.
  bool HasMetric(const std::string& line) {
    const std::string page = metrics_->Render();
    const bool found = page.find(line + "\n") != std::string::npos;
    if (!found) ADD_FAILURE() << line << " not in\n" << page;
    return found;
  }

  // The notify outbox, decoded.
  std::vector<v1::NotifyEvent> NotifyEvents() {
    std::vector<v1::NotifyEvent> out;
    auto v = pool_->Command({"XRANGE", kNotifyOutbox, "-", "+"});
    EXPECT_TRUE(v.ok());
    if (!v.ok()) return out;
    for (const auto& entry : v->elements) {
      const auto& fields = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i].str != "payload") continue;
        v1::NotifyEvent e;
        EXPECT_TRUE(e.ParseFromString(fields[i + 1].str));
        out.push_back(e);
      }
    }
    return out;
  }

  labshare::testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  FakeClock clock_;
  SystemClock wall_;
  std::unique_ptr<NotifyMetrics> metrics_;
  std::unique_ptr<WebhookModule> module_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::WebhookService::Stub> stub_;
  std::unique_ptr<ConsumerLoop> loop_;
};

#define EXPECT_ERROR(expr, want_code, reason)                                              \
  do {                                                                                \
    auto ls_result_ = (expr);                                                         \
    ASSERT_FALSE(ls_result_.ok()) << "expected " << #want_code << " " << reason;          \
    EXPECT_EQ(ls_result_.status().code(), absl::StatusCode::want_code) << ls_result_.status(); \
    EXPECT_EQ(::labshare::ErrorReason(ls_result_.status()), reason) << ls_result_.status(); \
  } while (false)

}  // namespace labshare::notify::testing

#endif  // LABSHARE_TESTS_NOTIFY_WEBHOOK_TEST_UTIL_H_
