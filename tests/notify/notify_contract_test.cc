// The notify contracts (proto/labshare/notify/v1/) where the code and the RPC
// comments once disagreed: CalendarFeed.display_name is "at most 200
// characters" (not bytes: a Chinese calendar name of 200 characters is
// fine); a feed's kind is USER or INSTRUMENT, nothing else; a retry of
// UpdateNotificationSettings with its request_id answers the first answer.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/server.h"
#include "labshare/notify/v1/notify.grpc.pb.h"
#include "labshare/notify/v1/notify_events.pb.h"
#include "services/notify/feed_manager.h"
#include "services/notify/notify_mail_module.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

namespace labshare::notify {
namespace {

namespace v1 = labshare::notify::v1;

class NotifyContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    // USER feeds look nothing up: no instrument directory, no projection.
    feeds_ = std::make_unique<FeedManager>(pool_.get(), &clock_, nullptr, nullptr, "https://labshare.example.org",
                                           FeedOptions());
  }

  absl::StatusOr<fv1::CalendarFeed> CreateUserFeed(const std::string& display_name, int kind = fv1::CalendarFeed::USER) {
    fv1::CreateCalendarFeedRequest r;
    r.set_parent("users/li-wei");
    r.mutable_calendar_feed()->set_kind(static_cast<fv1::CalendarFeed::Kind>(kind));
    r.mutable_calendar_feed()->set_display_name(display_name);
    return feeds_->Create(user_, r);
  }

  static std::string Repeat(absl::string_view piece, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out.append(piece.data(), piece.size());
    return out;
  }

  testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  FakeClock clock_;
  std::unique_ptr<FeedManager> feeds_;
  Principal user_{"li-wei", "lab-a", {Role::kLabUser}, absl::InfiniteFuture()};
};

// CreateCalendarFeed: "INVALID_FIELD: ... display_name over 200 characters".
TEST_F(NotifyContractTest, FeedDisplayNameIsCountedInCharacters) {
  const std::string chinese = Repeat("日历", 100);  // 200 characters, 600 bytes
  auto ok = CreateUserFeed(chinese);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->display_name(), chinese);
  auto too_long = CreateUserFeed(chinese + "表");  // 201 characters
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(too_long.status()), "INVALID_FIELD");
  EXPECT_TRUE(CreateUserFeed(std::string(200, 'a')).ok());
  EXPECT_EQ(ErrorReason(CreateUserFeed(std::string(201, 'a')).status()), "INVALID_FIELD");
}

// CalendarFeed.kind: "Required; fixed", USER or INSTRUMENT; a number the
// contract does not define is INVALID_FIELD like an unspecified one.
TEST_F(NotifyContractTest, FeedKindMustBeUserOrInstrument) {
  auto unknown = CreateUserFeed("", 7);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(unknown.status()), "INVALID_FIELD");
  EXPECT_EQ(ErrorReason(CreateUserFeed("", fv1::CalendarFeed::KIND_UNSPECIFIED).status()), "INVALID_FIELD");
}

// types.proto: "A retry with the same request_id and the same content
// returns the first answer", also after the settings changed meanwhile.
TEST_F(NotifyContractTest, SettingsRetryAnswersTheFirstAnswer) {
  NotifyContext ctx;
  ctx.redis = pool_.get();
  ctx.clock = &clock_;
  ctx.wall = &clock_;
  ctx.inventory = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());  // never called here
  ctx.console_url = "https://labshare.example.org";
  ctx.consumer = "contract-test";
  MailModule mail(ctx, MailOptions());
  MethodPolicy policy;
  mail.AddPolicy(&policy);
  Authorizer auth(labshare::testing::TestVerifier(), policy, &clock_);
  ServerConfig config;
  config.service_name = "notify";
  config.redis = pool_.get();
  config.authorizer = &auth;
  auto server = Server::Start(config, mail.Services(&auth));
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::NotificationService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  auto call = [&](const v1::UpdateNotificationSettingsRequest& r, v1::NotificationSettings* out) {
    grpc::ClientContext c;
    c.AddMetadata("authorization", "Bearer " + labshare::testing::Mint(
                                                   Principal{"ana", "lab", {Role::kLabUser}, clock_.Now() + absl::Hours(1)},
                                                   clock_.Now()));
    return stub->UpdateNotificationSettings(&c, r, out);
  };
  v1::UpdateNotificationSettingsRequest english;
  english.set_request_id("ana-1");
  english.mutable_settings()->set_name("users/ana/notificationSettings");
  english.mutable_settings()->set_language("en");
  english.mutable_update_mask()->add_paths("language");
  v1::NotificationSettings first;
  grpc::Status s = call(english, &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(first.language(), "en");

  v1::UpdateNotificationSettingsRequest chinese = english;
  chinese.set_request_id("ana-2");
  chinese.mutable_settings()->set_language("zh-CN");
  v1::NotificationSettings second;
  ASSERT_TRUE(call(chinese, &second).ok());
  EXPECT_EQ(second.language(), "zh-CN");

  // The event names the caller and the caller's organisation (EventHeader).
  auto last = pool_->Command({"XREVRANGE", "{notify}:outbox", "+", "-", "COUNT", "1"});
  ASSERT_TRUE(last.ok());
  ASSERT_EQ(last->elements.size(), 1u);
  v1::NotifyEvent changed;
  const auto& fields = last->elements[0].elements[1].elements;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    if (fields[i].str == "payload") {
      ASSERT_TRUE(changed.ParseFromString(fields[i + 1].str));
    }
  }
  ASSERT_TRUE(changed.has_notification_settings_changed());
  EXPECT_EQ(changed.header().actor(), "users/ana");
  EXPECT_EQ(changed.header().actor_organization(), "organizations/lab");
  EXPECT_EQ(changed.header().request_id(), "ana-2");

  v1::NotificationSettings again;
  s = call(english, &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  english.mutable_settings()->set_language("zh-CN");  // other content, same id
  s = call(english, &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
  (*server)->Shutdown(absl::ZeroDuration());
}

}  // namespace
}  // namespace labshare::notify
