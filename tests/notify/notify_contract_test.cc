// The notify contracts (proto/labshare/notify/v1/) where the code and the RPC
// comments once disagreed: CalendarFeed.display_name is "at most 200
// characters" (not bytes: a Chinese calendar name of 200 characters is
// fine); a feed's kind is USER or INSTRUMENT, nothing else; a retry of
// UpdateNotificationSettings, Unsubscribe or ReplayDeadLetter with its
// request_id answers the first answer, and other content under the id is
// REQUEST_ID_REUSED; an unsubscribe link past its expiry is
// UNSUBSCRIBE_TOKEN_EXPIRED and changes nothing.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
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

  // The mail module behind a real gRPC server (plaintext loopback).
  void StartMail() {
    NotifyContext ctx;
    ctx.redis = pool_.get();
    ctx.clock = &clock_;
    ctx.wall = &clock_;
    ctx.inventory = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());  // never called here
    ctx.console_url = "https://labshare.example.org";
    ctx.consumer = "contract-test";
    mail_ = std::make_unique<MailModule>(ctx, MailOptions());
    MethodPolicy policy;
    mail_->AddPolicy(&policy);
    auth_ = std::make_unique<Authorizer>(labshare::testing::TestVerifier(), policy, &clock_);
    ServerConfig config;
    config.service_name = "notify";
    config.redis = pool_.get();
    config.authorizer = auth_.get();
    auto server = Server::Start(config, mail_->Services(auth_.get()));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::NotificationService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::ZeroDuration());
  }
  // A client context with `p`'s bearer token (none for an empty user).
  std::unique_ptr<grpc::ClientContext> As(const Principal& p) {
    auto c = std::make_unique<grpc::ClientContext>();
    if (!p.user_id.empty()) {
      c->AddMetadata("authorization", "Bearer " + labshare::testing::Mint(p, clock_.Now()));
    }
    return c;
  }
  // The events on {notify}:outbox, oldest first.
  std::vector<v1::NotifyEvent> OutboxEvents() {
    std::vector<v1::NotifyEvent> out;
    auto entries = pool_->Command({"XRANGE", "{notify}:outbox", "-", "+"});
    EXPECT_TRUE(entries.ok());
    if (!entries.ok()) return out;
    for (const auto& entry : entries->elements) {
      const auto& fields = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i].str != "payload") continue;
        out.emplace_back();
        EXPECT_TRUE(out.back().ParseFromString(fields[i + 1].str));
      }
    }
    return out;
  }
  // A mail to `user` that died after one attempt.
  void MakeDeadLetter(const std::string& id, const std::string& user, const std::string& error) {
    const Fields mail = {{"kind", "BOOKING_CONFIRMED"}, {"user", "users/" + user}, {"org", "organizations/lab"},
                         {"email", user + "@lab.test"}, {"name", user}, {"subject", "s"}, {"text", "t"},
                         {"html", "h"}, {"unsub", ""}, {"event", "e-" + id}, {"lang", "en"}, {"tz", "UTC"}};
    MailQueue& q = mail_->queue();
    ASSERT_TRUE(q.Enqueue(id, mail, false, clock_.Now(), clock_.Now(), clock_.Now()).ok());
    auto claimed = q.Claim("sender", clock_.Now(), 10);
    ASSERT_TRUE(claimed.ok());
    ASSERT_TRUE(q.Finish(id, "sender", MailQueue::Outcome::kDead, clock_.Now(), clock_.Now(), error,
                         v1::DeadLetter::REJECTED, "payload", absl::Hours(1), clock_.Now())
                    .ok());
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
  std::unique_ptr<MailModule> mail_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::NotificationService::Stub> stub_;
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
  StartMail();
  auto call = [&](const v1::UpdateNotificationSettingsRequest& r, v1::NotificationSettings* out) {
    return stub_->UpdateNotificationSettings(
        As(Principal{"ana", "lab", {Role::kLabUser}, clock_.Now() + absl::Hours(1)}).get(), r, out);
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
  const std::vector<v1::NotifyEvent> events = OutboxEvents();
  ASSERT_FALSE(events.empty());
  const v1::NotifyEvent& changed = events.back();
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
}

// Unsubscribe keeps its request_id like every mutation: the retry of a
// click that turned the kind off answers changed=true (not "already off"),
// and the same id with another link is REQUEST_ID_REUSED.
TEST_F(NotifyContractTest, UnsubscribeRetryAnswersTheFirstAnswer) {
  StartMail();
  auto reminder = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  auto missed = mail_->UnsubscribeToken("ana", v1::BOOKING_MISSED);
  ASSERT_TRUE(reminder.ok() && missed.ok());
  auto call = [&](const std::string& token, const std::string& request_id, v1::UnsubscribeResponse* out) {
    v1::UnsubscribeRequest r;
    r.set_token(token);
    r.set_request_id(request_id);
    return stub_->Unsubscribe(As(Principal{}).get(), r, out);  // no LabShare token
  };
  v1::UnsubscribeResponse first;
  grpc::Status s = call(*reminder, "click-1", &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(first.user(), "users/ana");
  EXPECT_EQ(first.kind(), v1::BOOKING_REMINDER);
  EXPECT_TRUE(first.changed());
  v1::UnsubscribeResponse again;
  s = call(*reminder, "click-1", &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  s = call(*missed, "click-1", &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
  // A new click on the same link: nothing left to change.
  v1::UnsubscribeResponse later;
  ASSERT_TRUE(call(*reminder, "click-2", &later).ok());
  EXPECT_FALSE(later.changed());
  // Its record too: that id with the other link is another request.
  s = call(*missed, "click-2", &again);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
  // One settings change only, under the first click's request id.
  const std::vector<v1::NotifyEvent> events = OutboxEvents();
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_notification_settings_changed());
  EXPECT_EQ(events[0].header().request_id(), "click-1");
  EXPECT_EQ(events[0].header().actor(), "users/ana");
}

// Unsubscribe: "UNSUBSCRIBE_TOKEN_EXPIRED: a genuine token past its expiry"
// (--unsubscribe_validity, default 365 days on the domain clock, after the
// mail was made), with validate_only too; it changes nothing and keeps no
// request record. A token whose expiry was altered is not genuine
// (UNSUBSCRIBE_TOKEN_NOT_FOUND).
TEST_F(NotifyContractTest, UnsubscribeExpiredTokenIsTokenExpired) {
  StartMail();
  auto token = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok());
  auto call = [&](const std::string& t, bool validate_only, v1::UnsubscribeResponse* out) {
    v1::UnsubscribeRequest r;
    r.set_token(t);
    r.set_validate_only(validate_only);
    if (!validate_only) r.set_request_id("click-1");
    return stub_->Unsubscribe(As(Principal{}).get(), r, out);  // no LabShare token
  };
  v1::UnsubscribeResponse out;
  clock_.Advance(absl::Hours(24 * 365) - absl::Seconds(1));
  grpc::Status s = call(*token, true, &out);
  ASSERT_TRUE(s.ok()) << "still valid one second before its expiry: " << s.error_message();
  EXPECT_EQ(out.kind(), v1::BOOKING_REMINDER);
  clock_.Advance(absl::Seconds(1));
  for (bool validate_only : {true, false}) {
    s = call(*token, validate_only, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << validate_only << ": " << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "UNSUBSCRIBE_TOKEN_EXPIRED") << validate_only;
  }
  // Its expiry moved a year on, the signature kept: not a token of ours.
  std::string payload;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(token->substr(0, token->find('.')), &payload));
  const std::string later = absl::StrCat(payload.substr(0, payload.rfind(':') + 1),
                                         absl::ToUnixSeconds(clock_.Now() + absl::Hours(24 * 365)));
  s = call(absl::StrCat(absl::WebSafeBase64Escape(later), token->substr(token->find('.'))), false, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GrpcErrorReason(s), "UNSUBSCRIBE_TOKEN_NOT_FOUND");
  EXPECT_TRUE(OutboxEvents().empty());
  // Nothing was turned off and click-1 kept no answer: a fresh link's
  // click under it turns the kind off now.
  auto fresh = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(fresh.ok());
  s = call(*fresh, false, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(out.changed());
  EXPECT_EQ(OutboxEvents().size(), 1u);
}

// The retry of a click made just before the link expired (its answer lost,
// e.g. REPLICA_ACK_TIMEOUT) answers the first answer, not
// UNSUBSCRIBE_TOKEN_EXPIRED: the kind was turned off. A new request with
// the expired link is UNSUBSCRIBE_TOKEN_EXPIRED.
TEST_F(NotifyContractTest, UnsubscribeRetryAfterExpiryAnswersTheFirstAnswer) {
  StartMail();
  auto token = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok());
  auto call = [&](const std::string& request_id, v1::UnsubscribeResponse* out) {
    v1::UnsubscribeRequest r;
    r.set_token(*token);
    r.set_request_id(request_id);
    return stub_->Unsubscribe(As(Principal{}).get(), r, out);  // no LabShare token
  };
  clock_.Advance(absl::Hours(24 * 365) - absl::Seconds(1));
  v1::UnsubscribeResponse first;
  grpc::Status s = call("click-1", &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(first.changed());
  clock_.Advance(absl::Seconds(1));
  v1::UnsubscribeResponse again;
  s = call("click-1", &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  s = call("click-2", &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GrpcErrorReason(s), "UNSUBSCRIBE_TOKEN_EXPIRED");
  EXPECT_EQ(OutboxEvents().size(), 1u);
}

// ReplayDeadLetter keeps its request_id like every mutation: a retry
// answers the first answer also after the message died again meanwhile (it
// is not replayed twice), and the same id for another dead letter is
// REQUEST_ID_REUSED (that one is not replayed).
TEST_F(NotifyContractTest, ReplayDeadLetterRetryAnswersTheFirstAnswer) {
  StartMail();
  MakeDeadLetter("m1", "ana", "550 no such user");
  MakeDeadLetter("m2", "bo", "550 mailbox full");
  const Principal admin{"root", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(1)};
  auto call = [&](const std::string& name, const std::string& request_id, v1::DeadLetter* out) {
    v1::ReplayDeadLetterRequest r;
    r.set_name(name);
    r.set_request_id(request_id);
    return stub_->ReplayDeadLetter(As(admin).get(), r, out);
  };
  clock_.Advance(absl::Minutes(5));
  v1::DeadLetter first;
  grpc::Status s = call("deadLetters/m1", "replay-1", &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(first.name(), "deadLetters/m1");
  EXPECT_EQ(first.attempts(), 0);
  EXPECT_EQ(first.replayed_by(), "users/root");
  EXPECT_EQ(FromProto(first.replay_time()), clock_.Now());
  EXPECT_EQ(first.last_error(), "550 no such user");
  // It fails again and goes back to the dead letters.
  clock_.Advance(absl::Minutes(5));
  auto claimed = mail_->queue().Claim("sender", clock_.Now(), 10);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(*claimed, std::vector<std::string>{"m1"});
  ASSERT_TRUE(mail_->queue()
                  .Finish("m1", "sender", MailQueue::Outcome::kDead, clock_.Now(), clock_.Now(), "550 still no",
                          v1::DeadLetter::REJECTED, "payload", absl::Hours(1), clock_.Now())
                  .ok());
  v1::DeadLetter again;
  s = call("deadLetters/m1", "replay-1", &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ((*mail_->queue().Load("m1"))["state"], "DEAD");  // not replayed by the retry
  s = call("deadLetters/m2", "replay-1", &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
  EXPECT_EQ((*mail_->queue().Load("m2"))["state"], "DEAD");
  // Another id replays it.
  ASSERT_TRUE(call("deadLetters/m2", "replay-2", &again).ok());
  EXPECT_EQ((*mail_->queue().Load("m2"))["state"], "QUEUED");
}

}  // namespace
}  // namespace labshare::notify
