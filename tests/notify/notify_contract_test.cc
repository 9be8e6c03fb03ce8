// The notify contracts (proto/labshare/notify/v1/) where the code and the RPC
// comments once disagreed: CalendarFeed.display_name is "at most 200
// characters" (not bytes: a Chinese calendar name of 200 characters is
// fine); a feed's kind is USER or INSTRUMENT, nothing else; a retry of
// UpdateNotificationSettings, Unsubscribe or ReplayDeadLetter with its
// request_id answers the first answer (a replay's also after the dead
// letter was removed), and other content under the id is
// REQUEST_ID_REUSED; an unsubscribe link past its expiry is
// UNSUBSCRIBE_TOKEN_EXPIRED and changes nothing; ReplayDeadLetter of a
// message queued or delivered is NOT_A_DEAD_LETTER, of one that does not
// exist (or was removed after the retention) DEAD_LETTER_NOT_FOUND.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/doc_store.h"
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

  // The mail module behind a real gRPC server (plaintext loopback); people:
  // nullptr for inventory's (unreachable here).
  void StartMail(std::unique_ptr<People> people = nullptr) {
    NotifyContext ctx;
    ctx.redis = pool_.get();
    ctx.clock = &clock_;
    ctx.wall = &clock_;
    // Inventory: nothing listens at 127.0.0.1:1 (refused at once) unless a
    // test names an address.
    ctx.inventory = grpc::CreateChannel(inventory_address_.empty() ? std::string("127.0.0.1:1") : inventory_address_,
                                        grpc::InsecureChannelCredentials());
    ctx.console_url = "https://labshare.example.org";
    ctx.consumer = "contract-test";
    mail_ = std::make_unique<MailModule>(ctx, MailOptions(), std::move(people));
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
  // A mail to `user` of organizations/lab, queued now.
  void QueueMail(const std::string& id, const std::string& user) {
    const Fields mail = {{"kind", "BOOKING_CONFIRMED"}, {"user", "users/" + user}, {"org", "organizations/lab"},
                         {"email", user + "@lab.test"}, {"name", user}, {"subject", "s"}, {"text", "t"},
                         {"html", "h"}, {"unsub", ""}, {"event", "e-" + id}, {"lang", "en"}, {"tz", "UTC"}};
    ASSERT_TRUE(mail_->queue().Enqueue(id, mail, false, clock_.Now(), clock_.Now(), clock_.Now()).ok()) << id;
  }
  // Claims the due messages (it expects exactly those of `outcomes`, in
  // that order) and ends each attempt with its outcome (a dead one with
  // `error` and a MailDeadLettered payload the test does not parse).
  void Attempt(const std::vector<std::pair<std::string, MailQueue::Outcome>>& outcomes, const std::string& error) {
    MailQueue& q = mail_->queue();
    auto claimed = q.Claim("sender", clock_.Now(), 10);
    ASSERT_TRUE(claimed.ok());
    std::vector<std::string> ids;
    for (const auto& o : outcomes) ids.push_back(o.first);
    ASSERT_EQ(*claimed, ids);
    for (const auto& [id, outcome] : outcomes) {
      ASSERT_TRUE(q.Finish(id, "sender", outcome, clock_.Now(), clock_.Now(), error, v1::DeadLetter::REJECTED,
                           "payload", absl::Hours(1), clock_.Now())
                      .ok());
    }
  }
  // A mail to `user` that died after one attempt.
  void MakeDeadLetter(const std::string& id, const std::string& user, const std::string& error) {
    QueueMail(id, user);
    Attempt({{id, MailQueue::Outcome::kDead}}, error);
  }
  // Entries on {notify}:outbox (the dead letters' payloads included).
  int64_t OutboxLength() {
    auto n = pool_->Command({"XLEN", "{notify}:outbox"});
    EXPECT_TRUE(n.ok());
    return n.ok() ? n->integer : -1;
  }
  // A principal whose token is valid for an hour from the clock's now.
  Principal Now(const std::string& user, const std::string& org, Role role) {
    return Principal{user, org, {role}, clock_.Now() + absl::Hours(1)};
  }
  std::string State(const std::string& id) {
    auto f = mail_->queue().Load(id);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() && f->count("state") ? (*f)["state"] : "";
  }

  static std::string Repeat(absl::string_view piece, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out.append(piece.data(), piece.size());
    return out;
  }

  std::string inventory_address_;  // StartMail's inventory ("": none)
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

// notify.proto: "INVALID_NAME: name is not users/{user}/notificationSettings";
// {user} is an id like every other ([a-z0-9][a-z0-9-]{0,62}). An admin (who
// may read anyone's) is refused a malformed one, and nothing is stored.
TEST_F(NotifyContractTest, SettingsNameWithAMalformedUserIsInvalidName) {
  StartMail();
  const Principal admin = Now("root", "", Role::kConsortiumAdmin);
  for (const std::string name : {"users/Bad User!/notificationSettings", "users/ANA/notificationSettings",
                                 "users/-ana/notificationSettings", "users/ana:x/notificationSettings"}) {
    v1::GetNotificationSettingsRequest get;
    get.set_name(name);
    v1::NotificationSettings out;
    grpc::Status s = stub_->GetNotificationSettings(As(admin).get(), get, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_NAME") << name;
    v1::UpdateNotificationSettingsRequest update;
    update.mutable_settings()->set_name(name);
    update.mutable_settings()->set_language("en");
    update.mutable_update_mask()->add_paths("language");
    s = stub_->UpdateNotificationSettings(As(admin).get(), update, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_NAME") << name;
  }
  EXPECT_EQ(OutboxLength(), 0);
  auto keys = pool_->Command({"KEYS", "*ettings*"});
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->elements.empty());
}

// An update that changes nothing is no change (as inventory's updates): no
// write, no NotificationSettingsChanged, the etag and update_time as they
// were; a request_id keeps that answer, a stale etag is still ETAG_MISMATCH.
TEST_F(NotifyContractTest, SettingsUpdateThatChangesNothingPublishesNothing) {
  StartMail();
  const Principal ana = Now("ana", "lab", Role::kLabUser);
  v1::UpdateNotificationSettingsRequest english;
  english.mutable_settings()->set_name("users/ana/notificationSettings");
  english.mutable_settings()->set_language("en");
  english.mutable_settings()->add_disabled_kinds(v1::BOOKING_REMINDER);
  english.mutable_update_mask()->add_paths("language");
  english.mutable_update_mask()->add_paths("disabled_kinds");
  v1::NotificationSettings first;
  grpc::Status s = stub_->UpdateNotificationSettings(As(ana).get(), english, &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_FALSE(first.etag().empty());
  ASSERT_EQ(OutboxLength(), 1);

  clock_.Advance(absl::Minutes(5));
  v1::UpdateNotificationSettingsRequest same = english;
  same.mutable_settings()->add_disabled_kinds(v1::BOOKING_REMINDER);  // twice: the same set
  same.set_request_id("ana-same");
  v1::NotificationSettings again;
  s = stub_->UpdateNotificationSettings(As(ana).get(), same, &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(OutboxLength(), 1);
  s = stub_->UpdateNotificationSettings(As(ana).get(), same, &again);  // the retry
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  same.mutable_settings()->set_language("zh-CN");  // other content under the id
  s = stub_->UpdateNotificationSettings(As(ana).get(), same, &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");

  v1::UpdateNotificationSettingsRequest stale = english;
  stale.mutable_settings()->set_etag("not-the-etag");
  s = stub_->UpdateNotificationSettings(As(ana).get(), stale, &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "ETAG_MISMATCH");
  stale.mutable_settings()->set_etag(first.etag());
  s = stub_->UpdateNotificationSettings(As(ana).get(), stale, &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.etag(), first.etag());

  v1::GetNotificationSettingsRequest get;
  get.set_name("users/ana/notificationSettings");
  v1::NotificationSettings stored;
  ASSERT_TRUE(stub_->GetNotificationSettings(As(ana).get(), get, &stored).ok());
  EXPECT_EQ(stored.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(OutboxLength(), 1);
}

// Unsubscribe's message for a malformed token describes the token a mail
// carries: the signature is 32 hex digits (128 bits), not 64.
TEST_F(NotifyContractTest, UnsubscribeMalformedTokenMessageSays32HexDigits) {
  StartMail();
  auto token = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->size() - token->find('.') - 1, 32u);
  v1::UnsubscribeRequest req;
  req.set_token(token->substr(0, token->find('.')) + "." + std::string(64, 'a'));
  v1::UnsubscribeResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = stub_->Unsubscribe(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  EXPECT_NE(s.error_message().find("32 hex digits"), std::string::npos) << s.error_message();
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

// A link's token with any character of its payload changed is no token of
// ours (UNSUBSCRIBE_TOKEN_NOT_FOUND), also the last one, whose spare low
// bits base64 ignores (such an edit decoded the same payload and was taken).
TEST_F(NotifyContractTest, UnsubscribeRefusesEveryEditOfTheTokensPayload) {
  StartMail();
  int spare_bits = 0;
  for (const char* user : {"ana", "bo", "cyd"}) {
    auto token = mail_->UnsubscribeToken(user, v1::BOOKING_REMINDER);
    ASSERT_TRUE(token.ok());
    const size_t dot = token->find('.');
    ASSERT_NE(dot, std::string::npos);
    spare_bits += dot % 4 != 0;
    v1::UnsubscribeRequest r;
    r.set_validate_only(true);
    r.set_token(*token);
    v1::UnsubscribeResponse out;
    ASSERT_TRUE(stub_->Unsubscribe(As(Principal{}).get(), r, &out).ok());
    for (size_t i = 0; i < dot; ++i) {
      for (char c : {'A', 'B', 'D', 'Q', 'g', 'w', '_'}) {
        if (c == (*token)[i]) continue;
        std::string edited = *token;
        edited[i] = c;
        r.set_token(edited);
        grpc::Status s = stub_->Unsubscribe(As(Principal{}).get(), r, &out);
        ASSERT_EQ(GrpcErrorReason(s), "UNSUBSCRIBE_TOKEN_NOT_FOUND") << i << " " << edited << ": " << s.error_message();
      }
    }
  }
  EXPECT_GE(spare_bits, 1);  // a payload whose last character has spare bits
  EXPECT_TRUE(OutboxEvents().empty());
}

// "INVALID_ARGUMENT (INVALID_FIELD: token empty or malformed)": a token
// whose signature is no 32 hex digits is malformed whatever its first part,
// also a first part edited so that it still decodes but is not the form the
// link was made with (the spare low bits of its last character): that was
// UNSUBSCRIBE_TOKEN_NOT_FOUND, the form checked before the signature's.
TEST_F(NotifyContractTest, UnsubscribeWithAMalformedSignatureIsInvalidFieldWhateverTheFirstPart) {
  StartMail();
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  int same_payload = 0;  // edits that decode to the token's own payload
  for (const char* user : {"ana", "bo", "cyd"}) {
    auto token = mail_->UnsubscribeToken(user, v1::BOOKING_REMINDER);
    ASSERT_TRUE(token.ok());
    const size_t dot = token->find('.');
    ASSERT_NE(dot, std::string::npos);
    std::string payload;
    ASSERT_TRUE(absl::WebSafeBase64Unescape(token->substr(0, dot), &payload));
    // The first and the last character of the first part, to every other.
    for (size_t i : {size_t{0}, dot - 1}) {
      for (const char* c = kAlphabet; *c != '\0'; ++c) {
        std::string first = token->substr(0, dot);
        first[i] = *c;
        std::string decoded;
        same_payload += first != token->substr(0, dot) && absl::WebSafeBase64Unescape(first, &decoded) &&
                        decoded == payload;
        for (const std::string& sig : {std::string("zz"), std::string(32, 'g'), token->substr(dot + 2)}) {
          v1::UnsubscribeRequest r;
          r.set_validate_only(true);
          r.set_token(first + "." + sig);
          v1::UnsubscribeResponse out;
          grpc::Status s = stub_->Unsubscribe(As(Principal{}).get(), r, &out);
          ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.token() << ": " << s.error_message();
          ASSERT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << r.token();
          ASSERT_EQ(ErrorMetadataOf(FromGrpcStatus(s))["field"], "token") << r.token();
        }
      }
    }
  }
  EXPECT_GE(same_payload, 1);  // the case that was UNSUBSCRIBE_TOKEN_NOT_FOUND is exercised
  EXPECT_TRUE(OutboxEvents().empty());
}

// "INVALID_FIELD: token empty or malformed", UNSUBSCRIBE_TOKEN_NOT_FOUND an
// "unknown token": a first part with anything outside base64url
// ([A-Za-z0-9_-]: no '+', '/', '=' padding) is malformed, also whitespace,
// which the decoder skips (the genuine payload came out and the token was
// answered UNSUBSCRIBE_TOKEN_NOT_FOUND); and the form is judged before the
// token key is read, so Redis out of reach does not turn a malformed token
// into STORAGE_UNAVAILABLE ("retry"). Morning audit of 2026-12-07, finding 3.
TEST_F(NotifyContractTest, UnsubscribeTokenOutsideBase64UrlIsMalformedAndJudgedBeforeTheKeyIsRead) {
  StartMail();
  auto token = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok());
  const std::string& t = *token;
  const size_t dot = t.find('.');
  ASSERT_NE(dot, std::string::npos);
  ASSERT_GT(dot, 5u);
  ASSERT_NE(dot % 4, 0u);  // "ana:BOOKING_REMINDER:<expiry>": not a multiple of 3 bytes, so padding fits
  auto call = [&](const std::string& tok) {
    v1::UnsubscribeRequest r;
    r.set_validate_only(true);
    r.set_token(tok);
    v1::UnsubscribeResponse out;
    return stub_->Unsubscribe(As(Principal{}).get(), r, &out);  // no LabShare token
  };
  grpc::Status s = call(t);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::string head = t.substr(0, 4), rest = t.substr(4);
  const std::string padded = t.substr(0, dot) + std::string(4 - dot % 4, '=') + t.substr(dot);
  std::vector<std::string> malformed = {head + " " + rest, head + "\n" + rest, head + "\r\n" + rest, "\t" + t,
                                        padded, head + "+" + t.substr(5), head + "/" + t.substr(5)};
  for (const std::string& bad : malformed) {
    s = call(bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "[" << bad << "]: " << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << "[" << bad << "]";
    EXPECT_EQ(ErrorMetadataOf(FromGrpcStatus(s))["field"], "token") << "[" << bad << "]";
  }
  // The whitespace does hide the genuine payload.
  std::string decoded, genuine;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(t.substr(0, dot), &genuine));
  ASSERT_TRUE(absl::WebSafeBase64Unescape(malformed[0].substr(0, dot + 1), &decoded));
  EXPECT_EQ(decoded, genuine);
  // A token of the right form that we did not sign stays unknown.
  std::string forged = t;
  forged[dot + 1] = forged[dot + 1] == '0' ? '1' : '0';
  s = call(forged);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "UNSUBSCRIBE_TOKEN_NOT_FOUND");
  EXPECT_TRUE(OutboxEvents().empty());

  // A module that has not read its key yet, while its Redis is down: the
  // form first (kMalformed, Unsubscribe's INVALID_FIELD); a token of the
  // right form needs the key (STORAGE_UNAVAILABLE).
  auto own = testing::RedisServer::Start();
  ASSERT_TRUE(own.ok()) << own.status();
  RedisOptions o = (*own)->options();
  o.wait_timeout = absl::Milliseconds(300);
  (*own)->Kill9();
  RedisPool down(o);
  NotifyContext ctx;
  ctx.redis = &down;
  ctx.clock = &clock_;
  ctx.wall = &clock_;
  ctx.inventory = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());  // never called here
  MailModule fresh(ctx, MailOptions(), nullptr);
  std::string user;
  Kind kind;
  for (const std::string& bad : {malformed[0], padded, t.substr(0, dot) + ".zz", "%%%." + t.substr(dot + 1)}) {
    auto check = fresh.CheckUnsubscribeToken(bad, &user, &kind);
    ASSERT_TRUE(check.ok()) << "[" << bad << "]: " << check.status();
    EXPECT_EQ(*check, MailModule::TokenCheck::kMalformed) << "[" << bad << "]";
  }
  auto check = fresh.CheckUnsubscribeToken(t, &user, &kind);
  EXPECT_EQ(check.status().code(), absl::StatusCode::kUnavailable) << check.status();
  EXPECT_EQ(ErrorReason(check.status()), "STORAGE_UNAVAILABLE");
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
  Attempt({{"m1", MailQueue::Outcome::kDead}}, "550 still no");
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

// ReplayDeadLetter "FAILED_PRECONDITION (NOT_A_DEAD_LETTER: the message is
// queued or was delivered)": a dead letter queued again by a replay, a
// message that never died and a delivered one, by the admin and by the
// organisation's facility staff, with a request_id or none. Nothing is
// written: no event, the state as it was, and the request kept no answer
// (its id replays the message once it has died again). The first replay's
// retry still answers its first answer.
TEST_F(NotifyContractTest, ReplayingAMessageThatIsNotDeadIsNotADeadLetter) {
  StartMail();
  MakeDeadLetter("m1", "ana", "550 no such user");
  QueueMail("m2", "bo");
  auto call = [&](const Principal& by, const std::string& name, const std::string& request_id, v1::DeadLetter* out) {
    v1::ReplayDeadLetterRequest r;
    r.set_name(name);
    r.set_request_id(request_id);
    return stub_->ReplayDeadLetter(As(by).get(), r, out);
  };
  auto expect_not_dead = [&](const std::string& name, const std::string& request_id) {
    for (const Principal& by : {Now("root", "", Role::kConsortiumAdmin), Now("fs", "lab", Role::kFacilityStaff)}) {
      v1::DeadLetter out;
      grpc::Status s = call(by, name, request_id, &out);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
          << name << " " << request_id << " by " << by.user_id << ": " << s.error_message();
      EXPECT_EQ(GrpcErrorReason(s), "NOT_A_DEAD_LETTER") << name << " " << request_id << " by " << by.user_id;
    }
  };
  const Principal admin = Now("root", "", Role::kConsortiumAdmin);
  v1::DeadLetter first;
  grpc::Status s = call(admin, "deadLetters/m1", "replay-1", &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(State("m1"), "QUEUED");
  const int64_t events = OutboxLength();

  // Queued again by the replay, and queued from the start.
  expect_not_dead("deadLetters/m1", "replay-2");
  expect_not_dead("deadLetters/m1", "");
  expect_not_dead("deadLetters/m2", "replay-3");
  v1::DeadLetter again;
  s = call(admin, "deadLetters/m1", "replay-1", &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(OutboxLength(), events);
  EXPECT_EQ(State("m1"), "QUEUED");
  EXPECT_EQ(State("m2"), "QUEUED");

  // m1 dies again, m2 is delivered.
  clock_.Advance(absl::Minutes(5));
  Attempt({{"m1", MailQueue::Outcome::kDead}, {"m2", MailQueue::Outcome::kSent}}, "550 still no");
  ASSERT_EQ(State("m1"), "DEAD");
  ASSERT_EQ(State("m2"), "SENT");
  const int64_t died = OutboxLength();
  expect_not_dead("deadLetters/m2", "replay-3");
  expect_not_dead("deadLetters/m2", "replay-4");
  EXPECT_EQ(State("m2"), "SENT");
  EXPECT_EQ(OutboxLength(), died);
  v1::ListDeadLettersResponse dead;
  ASSERT_TRUE(stub_->ListDeadLetters(As(admin).get(), v1::ListDeadLettersRequest(), &dead).ok());
  ASSERT_EQ(dead.dead_letters_size(), 1);
  EXPECT_EQ(dead.dead_letters(0).name(), "deadLetters/m1");

  // replay-2, refused above, kept no answer: it replays m1 now.
  v1::DeadLetter second;
  s = call(admin, "deadLetters/m1", "replay-2", &second);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(second.last_error(), "550 still no");
  EXPECT_EQ(State("m1"), "QUEUED");
  EXPECT_EQ(OutboxLength(), died + 1);
}

// types.proto: the organisation scope is "checked before validation", after
// the range checks of numbers and enums (which read nothing stored). Facility
// staff without an organisation may list nobody's dead letters:
// ORGANIZATION_SCOPE, whatever the page token (it used to be
// INVALID_PAGE_TOKEN); a reason filter that is no DeadLetter.Reason is
// INVALID_FIELD for them and for staff with an organisation alike.
TEST_F(NotifyContractTest, ListDeadLettersChecksTheScopeBeforeTheFilterAndToken) {
  StartMail();
  v1::ListDeadLettersResponse out;
  v1::ListDeadLettersRequest bad_reason;
  bad_reason.set_reason(static_cast<v1::DeadLetter::Reason>(99));
  v1::ListDeadLettersRequest forged;
  forged.set_page_token("bm90LWEtdG9rZW4");
  grpc::Status s = stub_->ListDeadLetters(As(Now("fs", "", Role::kFacilityStaff)).get(), forged, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  for (const char* org : {"", "lab"}) {
    s = stub_->ListDeadLetters(As(Now("fs", org, Role::kFacilityStaff)).get(), bad_reason, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << org;
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << org;
    EXPECT_EQ(ErrorMetadataOf(FromGrpcStatus(s))["field"], "reason") << org;
  }
  s = stub_->ListDeadLetters(As(Now("fs", "lab", Role::kFacilityStaff)).get(), forged, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_PAGE_TOKEN");
}

// ReplayDeadLetter alike: facility staff without an organisation hear
// ORGANIZATION_SCOPE before the name is looked at (a malformed name was
// INVALID_NAME, an unknown one DEAD_LETTER_NOT_FOUND).
TEST_F(NotifyContractTest, ReplayDeadLetterChecksTheScopeBeforeTheName) {
  StartMail();
  MakeDeadLetter("m1", "ana", "550 no such user");
  for (const char* name : {"deadLetters/a/b", "deadLetters/nope", "deadLetters/m1"}) {
    v1::ReplayDeadLetterRequest r;
    r.set_name(name);
    v1::DeadLetter out;
    grpc::Status s = stub_->ReplayDeadLetter(As(Now("fs", "", Role::kFacilityStaff)).get(), r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << name << ": " << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE") << name;
  }
  EXPECT_EQ(State("m1"), "DEAD");
}

// A name whose message id is no resource id (a space, upper case, other
// letters, a control character, too long) is INVALID_NAME for the admin, not
// DEAD_LETTER_NOT_FOUND: no message can have it (ids are lowercase hex).
TEST_F(NotifyContractTest, ReplayDeadLetterRefusesAMessageIdNoMessageCanHave) {
  StartMail();
  for (const std::string& name :
       {std::string("deadLetters/A B"), std::string("deadLetters/\xc3\xbcn\xc3\xaf"), std::string("deadLetters/x\n"),
        std::string("deadLetters/ABC"), std::string("deadLetters/-a"), "deadLetters/" + std::string(64, 'a')}) {
    v1::ReplayDeadLetterRequest r;
    r.set_name(name);
    r.set_request_id("replay-bad");
    v1::DeadLetter out;
    grpc::Status s = stub_->ReplayDeadLetter(As(Now("root", "", Role::kConsortiumAdmin)).get(), r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name << ": " << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_NAME") << name;
  }
  // A well-formed id no message has is still DEAD_LETTER_NOT_FOUND.
  v1::ReplayDeadLetterRequest r;
  r.set_name("deadLetters/" + std::string(63, 'a'));
  v1::DeadLetter out;
  grpc::Status s = stub_->ReplayDeadLetter(As(Now("root", "", Role::kConsortiumAdmin)).get(), r, &out);
  EXPECT_EQ(GrpcErrorReason(s), "DEAD_LETTER_NOT_FOUND") << s.error_message();
}

// A digest's id is "dg-{user}-{due ms}": for a user whose id is 63
// characters (the longest a user id may be) it is longer than a resource id,
// yet ListDeadLetters lists it and ReplayDeadLetter replays it (it was
// INVALID_NAME). Another id of that form no message has is
// DEAD_LETTER_NOT_FOUND; one whose user part is no user id INVALID_NAME.
TEST_F(NotifyContractTest, ReplayDeadLetterReplaysTheDeadDigestOfAUserWithALongId) {
  StartMail();
  const std::string user = "u-" + std::string(61, 'x');
  ASSERT_EQ(user.size(), 63u);
  const Fields mail = {{"kind", "BOOKING_CONFIRMED"}, {"user", "users/" + user}, {"org", "organizations/lab"},
                       {"email", "long@lab.test"}, {"name", "Long"}, {"subject", "s"}, {"text", "t"},
                       {"html", "h"}, {"unsub", ""}, {"event", "e-part"}, {"lang", "en"}, {"tz", "UTC"}};
  const absl::Time due = clock_.Now() + absl::Hours(1);
  ASSERT_TRUE(mail_->queue().Enqueue("part1", mail, true, due, clock_.Now(), clock_.Now()).ok());
  clock_.Advance(absl::Hours(1));
  auto made = mail_->queue().MakeDigests(clock_.Now(), clock_.Now(), 10);
  ASSERT_TRUE(made.ok()) << made.status();
  ASSERT_EQ(*made, 1);
  const std::string id = absl::StrCat("dg-", user, "-", absl::ToUnixMillis(due));
  Attempt({{id, MailQueue::Outcome::kDead}}, "550 no such user");
  ASSERT_EQ(State(id), "DEAD");

  const Principal admin = Now("root", "", Role::kConsortiumAdmin);
  v1::ListDeadLettersResponse dead;
  ASSERT_TRUE(stub_->ListDeadLetters(As(admin).get(), v1::ListDeadLettersRequest(), &dead).ok());
  ASSERT_EQ(dead.dead_letters_size(), 1);
  ASSERT_EQ(dead.dead_letters(0).name(), "deadLetters/" + id);
  EXPECT_EQ(dead.dead_letters(0).kind(), v1::DIGEST);

  for (const Principal& by : {admin, Now("fs", "lab", Role::kFacilityStaff)}) {
    v1::ReplayDeadLetterRequest r;
    r.set_name(dead.dead_letters(0).name());
    r.set_request_id("replay-digest");
    v1::DeadLetter out;
    grpc::Status s = stub_->ReplayDeadLetter(As(by).get(), r, &out);
    ASSERT_TRUE(s.ok()) << by.user_id << ": " << GrpcErrorReason(s) << " " << s.error_message();
    EXPECT_EQ(out.name(), "deadLetters/" + id);
    EXPECT_EQ(State(id), "QUEUED");
    if (by.user_id == "root") {  // dead again for the staff member's replay
      Attempt({{id, MailQueue::Outcome::kDead}}, "550 still no");
      ASSERT_EQ(State(id), "DEAD");
    }
  }

  auto reason_of = [&](const std::string& name) {
    v1::ReplayDeadLetterRequest r;
    r.set_name(name);
    v1::DeadLetter out;
    return GrpcErrorReason(stub_->ReplayDeadLetter(As(admin).get(), r, &out));
  };
  EXPECT_EQ(reason_of(absl::StrCat("deadLetters/dg-", user, "-1796812800000")), "DEAD_LETTER_NOT_FOUND");
  EXPECT_EQ(reason_of(absl::StrCat("deadLetters/dg-", user, "x-1796812800000")), "INVALID_NAME");  // 64
  EXPECT_EQ(reason_of(absl::StrCat("deadLetters/dg-", user, "-17968128OOOOO")), "INVALID_NAME");
  EXPECT_EQ(reason_of(absl::StrCat("deadLetters/dg-", user, "-")), "INVALID_NAME");
  EXPECT_EQ(reason_of(absl::StrCat("deadLetters/dg-", user, "-1 ")), "INVALID_NAME");
  EXPECT_EQ(reason_of(absl::StrCat("deadLetters/dg-U", user.substr(1), "-1796812800000")), "INVALID_NAME");
}

// ReplayDeadLetter "NOT_FOUND (DEAD_LETTER_NOT_FOUND: no such message, or a
// dead letter removed after the retention)": an id no message has (to the
// admin and to facility staff alike), and a dead letter once
// --mail_dead_letter_retention (90 days on the domain clock) after it died
// has passed and the clean-up removed it. Nothing written, no event.
TEST_F(NotifyContractTest, ReplayingAMessageThatDoesNotExistIsDeadLetterNotFound) {
  StartMail();
  MakeDeadLetter("m1", "ana", "550 no such user");
  auto expect_not_found = [&](const std::string& name, const std::string& request_id) {
    for (const Principal& by : {Now("root", "", Role::kConsortiumAdmin), Now("fs", "lab", Role::kFacilityStaff)}) {
      v1::ReplayDeadLetterRequest r;
      r.set_name(name);
      r.set_request_id(request_id);
      v1::DeadLetter out;
      grpc::Status s = stub_->ReplayDeadLetter(As(by).get(), r, &out);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << name << " by " << by.user_id << ": "
                                                             << s.error_message();
      EXPECT_EQ(GrpcErrorReason(s), "DEAD_LETTER_NOT_FOUND") << name << " by " << by.user_id;
    }
  };
  const int64_t events = OutboxLength();
  expect_not_found("deadLetters/never-queued", "replay-1");
  expect_not_found("deadLetters/never-queued", "");
  EXPECT_EQ(State("m1"), "DEAD");

  // Still there one second before the retention ends; removed after it.
  clock_.Advance(absl::Hours(24 * 90) - absl::Seconds(1));
  auto removed = mail_->PruneDeadLetters();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0);
  clock_.Advance(absl::Seconds(2));
  removed = mail_->PruneDeadLetters();
  ASSERT_TRUE(removed.ok()) << removed.status();
  ASSERT_EQ(*removed, 1);
  expect_not_found("deadLetters/m1", "replay-2");
  expect_not_found("deadLetters/m1", "");
  EXPECT_EQ(OutboxLength(), events);
  auto gone = mail_->queue().Load("m1");
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->empty());
}

// The retry of a replay (its answer lost) after the message died again and
// the clean-up removed it answers the first answer, as every retry with its
// request_id does, not DEAD_LETTER_NOT_FOUND: the replay was made. A new
// request for it is DEAD_LETTER_NOT_FOUND.
TEST_F(NotifyContractTest, ReplayRetryAfterTheDeadLetterWentAnswersTheFirstAnswer) {
  StartMail();
  MakeDeadLetter("m1", "ana", "550 no such user");
  auto call = [&](const Principal& by, const std::string& request_id, v1::DeadLetter* out) {
    v1::ReplayDeadLetterRequest r;
    r.set_name("deadLetters/m1");
    r.set_request_id(request_id);
    return stub_->ReplayDeadLetter(As(by).get(), r, out);
  };
  v1::DeadLetter first;
  grpc::Status s = call(Now("fs", "lab", Role::kFacilityStaff), "replay-1", &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  Attempt({{"m1", MailQueue::Outcome::kDead}}, "550 still no");
  clock_.Advance(absl::Hours(24 * 90) + absl::Seconds(1));
  auto removed = mail_->PruneDeadLetters();
  ASSERT_TRUE(removed.ok()) << removed.status();
  ASSERT_EQ(*removed, 1);
  const int64_t events = OutboxLength();

  v1::DeadLetter again;
  s = call(Now("fs", "lab", Role::kFacilityStaff), "replay-1", &again);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << GrpcErrorReason(s) << " " << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  // Someone else's request, or another of the same person's, finds nothing.
  for (const auto& [by, request_id] : {std::pair<Principal, std::string>{Now("fs", "lab", Role::kFacilityStaff), "replay-2"},
                                       {Now("root", "", Role::kConsortiumAdmin), "replay-1"}}) {
    s = call(by, request_id, &again);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << by.user_id << " " << request_id;
    EXPECT_EQ(GrpcErrorReason(s), "DEAD_LETTER_NOT_FOUND") << by.user_id << " " << request_id;
  }
  EXPECT_EQ(OutboxLength(), events);
  auto gone = mail_->queue().Load("m1");
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(gone->empty());
}

// ------------------------------------------------------------ audit of 2026-12-06 (notify)

// types.proto: ReplayDeadLetter "treat[s] another caller's same request_id
// as that caller's own request". A message replayed under A's id kept the
// id in its fields, and B's request with the same id was answered as A's
// retry (the message as it is, nothing replayed). Now B's request is B's:
// on the message queued by A's replay, NOT_A_DEAD_LETTER; once it has died
// again, B's replay happens (replayed by B). A's retry still answers A's
// first answer.
TEST_F(NotifyContractTest, AnotherCallersSameReplayRequestIdIsThatCallersOwnRequest) {
  StartMail();
  MakeDeadLetter("m1", "ana", "550 no such user");
  auto call = [&](const Principal& by, const std::string& request_id, v1::DeadLetter* out) {
    v1::ReplayDeadLetterRequest r;
    r.set_name("deadLetters/m1");
    r.set_request_id(request_id);
    return stub_->ReplayDeadLetter(As(by).get(), r, out);
  };
  const Principal a = Now("root", "", Role::kConsortiumAdmin);
  const Principal b = Now("fs", "lab", Role::kFacilityStaff);
  // A record of A's request kept in the message only (as the version before
  // request records kept it): A's retry answers; B's same id is B's.
  v1::DeadLetter first;
  grpc::Status s = call(a, "replay-1", &first);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(pool_->Command({"DEL", "{notify}:mail:req:users/root:replay-1"}).ok());
  ASSERT_EQ(State("m1"), "QUEUED");
  const int64_t events = OutboxLength();
  v1::DeadLetter out;
  s = call(b, "replay-1", &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "NOT_A_DEAD_LETTER");
  s = call(a, "replay-1", &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.replayed_by(), "users/root");
  EXPECT_EQ(OutboxLength(), events);

  // It dies again: B's request under the same id replays it.
  clock_.Advance(absl::Minutes(5));
  Attempt({{"m1", MailQueue::Outcome::kDead}}, "550 still no");
  ASSERT_EQ(State("m1"), "DEAD");
  const int64_t died = OutboxLength();
  s = call(b, "replay-1", &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.replayed_by(), "users/fs");
  EXPECT_EQ(out.attempts(), 0);
  EXPECT_EQ(out.last_error(), "550 still no");
  EXPECT_EQ(State("m1"), "QUEUED");
  EXPECT_EQ(OutboxLength(), died + 1);
  // B's retry answers B's first answer; nothing more is replayed.
  v1::DeadLetter again;
  s = call(b, "replay-1", &again);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(again.SerializeAsString(), out.SerializeAsString());
  EXPECT_EQ(OutboxLength(), died + 1);
}

// NotificationSettings.Delivery: DELIVERY_UNSPECIFIED is "as IMMEDIATE", and
// an update that changes nothing keeps the etag and publishes nothing:
// IMMEDIATE over settings never set (delivery unspecified) is no change (it
// used to write the settings and publish an event), and so is unspecified
// over IMMEDIATE.
TEST_F(NotifyContractTest, ImmediateOverUnspecifiedDeliveryChangesNothing) {
  StartMail();
  const Principal ana = Now("ana", "lab", Role::kLabUser);
  v1::UpdateNotificationSettingsRequest immediate;
  immediate.mutable_settings()->set_name("users/ana/notificationSettings");
  immediate.mutable_settings()->set_delivery(v1::NotificationSettings::IMMEDIATE);
  immediate.mutable_update_mask()->add_paths("delivery");
  v1::NotificationSettings out;
  grpc::Status s = stub_->UpdateNotificationSettings(As(ana).get(), immediate, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(out.etag().empty());
  EXPECT_FALSE(out.has_update_time());
  EXPECT_EQ(OutboxLength(), 0);

  // Set to IMMEDIATE by another change (language); unspecified after it is
  // no change either.
  v1::UpdateNotificationSettingsRequest both = immediate;
  both.mutable_settings()->set_language("en");
  both.mutable_update_mask()->add_paths("language");
  v1::NotificationSettings set;
  ASSERT_TRUE(stub_->UpdateNotificationSettings(As(ana).get(), both, &set).ok());
  ASSERT_EQ(set.delivery(), v1::NotificationSettings::IMMEDIATE);
  ASSERT_EQ(OutboxLength(), 1);
  v1::UpdateNotificationSettingsRequest unspecified = immediate;
  unspecified.mutable_settings()->set_delivery(v1::NotificationSettings::DELIVERY_UNSPECIFIED);
  s = stub_->UpdateNotificationSettings(As(ana).get(), unspecified, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.etag(), set.etag());
  EXPECT_EQ(OutboxLength(), 1);
}

// UpdateNotificationSettings: "INVALID_FIELD: ... an unknown IANA time
// zone". The zone library also loads names that are no IANA zone (the
// host's "localtime", fixed offsets, paths, the posix/ and right/ trees):
// they were accepted; now INVALID_FIELD, nothing stored.
TEST_F(NotifyContractTest, TimeZonesOutsideTheIanaDatabaseAreInvalid) {
  StartMail();
  const Principal ana = Now("ana", "lab", Role::kLabUser);
  auto set = [&](const std::string& zone, v1::NotificationSettings* out) {
    v1::UpdateNotificationSettingsRequest r;
    r.mutable_settings()->set_name("users/ana/notificationSettings");
    r.mutable_settings()->set_time_zone(zone);
    r.mutable_update_mask()->add_paths("time_zone");
    return stub_->UpdateNotificationSettings(As(ana).get(), r, out);
  };
  v1::NotificationSettings out;
  for (const std::string zone : {"localtime", "Fixed/UTC+08:00:00", "/usr/share/zoneinfo/Asia/Shanghai",
                                 "file:/usr/share/zoneinfo/UTC", "Asia/../Asia/Shanghai", "right/Asia/Shanghai",
                                 "posix/Asia/Shanghai", "posixrules", "Factory", "Mars/Olympus_Mons", "asia shanghai"}) {
    grpc::Status s = set(zone, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << zone;
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << zone;
  }
  EXPECT_EQ(OutboxLength(), 0);
  for (const std::string zone : {"Asia/Shanghai", "UTC", "Etc/GMT-8", "America/Argentina/Buenos_Aires", "PRC"}) {
    grpc::Status s = set(zone, &out);
    ASSERT_TRUE(s.ok()) << zone << ": " << s.error_message();
    EXPECT_EQ(out.time_zone(), zone);
  }
}

// One user, ana of organizations/lab, as inventory knows her.
class AnaOfLab final : public People {
 public:
  absl::StatusOr<Person> User(const std::string& name) override {
    if (name == "users/ana") return Person{name, "Ana", "ana@lab.test", "organizations/lab", false};
    return absl::NotFoundError(name);
  }
  absl::StatusOr<std::vector<Person>> WithRole(const std::string&, Role) override { return std::vector<Person>(); }
  std::string InstrumentName(const std::string& name) override { return name; }
  std::string InstrumentZone(const std::string&) override { return ""; }
  absl::StatusOr<std::pair<absl::Time, absl::Time>> Window(const std::string&) override {
    return absl::NotFoundError("no");
  }
};

// types.proto EventHeader.actor_organization: "The caller's organisation,
// if any". An unsubscribe's NotificationSettingsChanged names the token's
// user as actor and, now, that user's organisation (it was empty); a user
// inventory does not know has none.
TEST_F(NotifyContractTest, AnUnsubscribesEventNamesTheUsersOrganisation) {
  StartMail(std::make_unique<AnaOfLab>());
  for (const std::string user : {"ana", "nobody"}) {
    auto token = mail_->UnsubscribeToken(user, v1::BOOKING_REMINDER);
    ASSERT_TRUE(token.ok());
    v1::UnsubscribeRequest r;
    r.set_token(*token);
    v1::UnsubscribeResponse out;
    grpc::Status s = stub_->Unsubscribe(As(Principal{}).get(), r, &out);  // no LabShare token
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(out.changed());
  }
  const std::vector<v1::NotifyEvent> events = OutboxEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].header().actor(), "users/ana");
  EXPECT_EQ(events[0].header().actor_organization(), "organizations/lab");
  EXPECT_EQ(events[1].header().actor(), "users/nobody");
  EXPECT_EQ(events[1].header().actor_organization(), "");
}

// ------------------------------------------------------------ audit of 2026-12-08 (notify)

// A TCP listener that accepts connections and never answers (an inventory
// that is overloaded or behind a stalled proxy): gRPC calls to it end only
// at their deadline.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd_, 16) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    address_ = absl::StrCat("127.0.0.1:", ntohs(a.sin_port));
  }
  ~SilentListener() {
    if (fd_ >= 0) close(fd_);
  }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;
  const std::string& address() const { return address_; }  // "" when it could not listen

 private:
  int fd_ = -1;
  std::string address_;
};

// notify.proto Unsubscribe: the event names the user's organisation,
// "empty ... when inventory does not answer within the call's deadline: the
// unsubscribe is not refused for it". The lookup had a fixed 10 s: with
// inventory silent, a call with a 2 s deadline was DEADLINE_EXCEEDED (and
// the change still made later). Now it answers OK within its deadline, the
// change made, the event's actor_organization empty. (The real inventory
// client, not a fake: the bound is the RPC's.)
TEST_F(NotifyContractTest, UnsubscribeAnswersWithinTheCallsDeadlineWhileInventoryIsSilent) {
  SilentListener inventory;
  ASSERT_FALSE(inventory.address().empty());
  inventory_address_ = inventory.address();
  StartMail();  // inventory's People, its cache empty
  auto token = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok());
  v1::UnsubscribeRequest r;
  r.set_token(*token);
  r.set_request_id("click-1");
  v1::UnsubscribeResponse out;
  auto c = As(Principal{});
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::Status s = stub_->Unsubscribe(c.get(), r, &out);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_TRUE(out.changed());
  EXPECT_EQ(out.user(), "users/ana");
  const std::vector<v1::NotifyEvent> events = OutboxEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].header().actor(), "users/ana");
  EXPECT_EQ(events[0].header().actor_organization(), "");
  ASSERT_TRUE(events[0].has_notification_settings_changed());
  EXPECT_THAT(events[0].notification_settings_changed().settings().disabled_kinds(),
              ::testing::ElementsAre(v1::BOOKING_REMINDER));
}

// A directory whose user lookup reports the deadline it was given and can
// act in between (here: change the settings, as a concurrent update would).
class WatchedPeople final : public People {
 public:
  std::function<void()> on_lookup;
  std::vector<absl::Time> deadlines;  // one per UserWithin
  int plain_lookups = 0;              // User without a deadline
  absl::StatusOr<Person> User(const std::string& name) override {
    ++plain_lookups;
    return Person{name, "Ana", "ana@lab.test", "organizations/lab", false};
  }
  absl::StatusOr<Person> UserWithin(const std::string& name, absl::Time deadline) override {
    deadlines.push_back(deadline);
    if (on_lookup) on_lookup();
    return Person{name, "Ana", "ana@lab.test", "organizations/lab", false};
  }
  absl::StatusOr<std::vector<Person>> WithRole(const std::string&, Role) override { return std::vector<Person>(); }
  std::string InstrumentName(const std::string& name) override { return name; }
  std::string InstrumentZone(const std::string&) override { return ""; }
  absl::StatusOr<std::pair<absl::Time, absl::Time>> Window(const std::string&) override {
    return absl::NotFoundError("no");
  }
};

// The organisation lookup is given the call's deadline less a margin (not
// a deadline of its own), and is made once: the settings changed by
// someone else during the lookup make the first write a conflict, and the
// attempt that follows writes without asking again. A user whose kind is
// already off is not looked up at all (nothing to publish).
TEST_F(NotifyContractTest, UnsubscribeLooksTheOrganisationUpOnceWithinTheCallsDeadline) {
  auto owned = std::make_unique<WatchedPeople>();
  WatchedPeople* people = owned.get();
  StartMail(std::move(owned));
  people->on_lookup = [&] {
    if (people->deadlines.size() != 1) return;
    v1::UpdateNotificationSettingsRequest u;
    u.mutable_settings()->set_name("users/ana/notificationSettings");
    u.mutable_settings()->set_language("en");
    u.mutable_update_mask()->add_paths("language");
    v1::NotificationSettings set;
    grpc::Status s = stub_->UpdateNotificationSettings(As(Now("ana", "lab", Role::kLabUser)).get(), u, &set);
    EXPECT_TRUE(s.ok()) << s.error_message();
  };
  auto token = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok());
  v1::UnsubscribeRequest r;
  r.set_token(*token);
  v1::UnsubscribeResponse out;
  auto c = As(Principal{});
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(60);
  c->set_deadline(deadline);
  grpc::Status s = stub_->Unsubscribe(c.get(), r, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(out.changed());
  ASSERT_EQ(people->deadlines.size(), 1u);
  EXPECT_EQ(people->plain_lookups, 0);
  // Before the call's deadline, and not the lookup's former fixed 10 s.
  EXPECT_LT(people->deadlines[0], absl::FromChrono(deadline));
  EXPECT_GT(people->deadlines[0], absl::FromChrono(deadline) - absl::Seconds(5));
  const std::vector<v1::NotifyEvent> events = OutboxEvents();
  ASSERT_EQ(events.size(), 2u);  // the language, then the unsubscribe
  EXPECT_EQ(events[1].header().actor(), "users/ana");
  EXPECT_EQ(events[1].header().actor_organization(), "organizations/lab");
  EXPECT_EQ(events[1].notification_settings_changed().settings().language(), "en");

  // Used again: nothing changes, nothing looked up.
  s = stub_->Unsubscribe(As(Principal{}).get(), r, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(out.changed());
  EXPECT_EQ(people->deadlines.size(), 1u);
  EXPECT_EQ(OutboxEvents().size(), 2u);
}

// The seconds a request record has left (-1: no expiry, -2: none).
int64_t TtlOf(RedisPool& pool, const std::string& key) {
  auto ttl = pool.Command({"TTL", key});
  EXPECT_TRUE(ttl.ok()) << key;
  return ttl.ok() ? ttl->integer : -3;
}

// types.proto: a request_id is remembered 7 days (DocStore's records, i.e.
// every other service's but billing's 30). Notify's own records
// (UpdateNotificationSettings, Unsubscribe; a change and a request that
// changed nothing) were kept one day: a retry on the second day was a new
// request (an unsubscribe retried after its link expired
// UNSUBSCRIBE_TOKEN_EXPIRED, a settings update with a stale etag
// ETAG_MISMATCH). Redis times the record: the TTL it was given is checked.
TEST_F(NotifyContractTest, NotifysRequestRecordsAreKeptSevenDays) {
  StartMail(std::make_unique<AnaOfLab>());
  constexpr int64_t kSevenDays = 7 * 24 * 3600;
  ASSERT_EQ(absl::ToInt64Seconds(kRequestRecordRetention), kSevenDays);
  const Principal ana = Now("ana", "lab", Role::kLabUser);
  auto update = [&](const std::string& request_id) {
    v1::UpdateNotificationSettingsRequest r;
    r.mutable_settings()->set_name("users/ana/notificationSettings");
    r.mutable_settings()->set_language("en");
    r.mutable_update_mask()->add_paths("language");
    r.set_request_id(request_id);
    v1::NotificationSettings out;
    grpc::Status s = stub_->UpdateNotificationSettings(As(ana).get(), r, &out);
    EXPECT_TRUE(s.ok()) << request_id << ": " << s.error_message();
  };
  auto token = mail_->UnsubscribeToken("ana", v1::BOOKING_REMINDER);
  ASSERT_TRUE(token.ok());
  auto unsubscribe = [&](const std::string& request_id, bool changed) {
    v1::UnsubscribeRequest r;
    r.set_token(*token);
    r.set_request_id(request_id);
    v1::UnsubscribeResponse out;
    grpc::Status s = stub_->Unsubscribe(As(Principal{}).get(), r, &out);
    EXPECT_TRUE(s.ok()) << request_id << ": " << s.error_message();
    EXPECT_EQ(out.changed(), changed) << request_id;
  };
  update("set-1");        // a change
  update("set-2");        // nothing to change
  unsubscribe("unsub-1", true);
  unsubscribe("unsub-2", false);
  for (const char* request_id : {"set-1", "set-2", "unsub-1", "unsub-2"}) {
    const int64_t ttl = TtlOf(*pool_, absl::StrCat("{notify}:mail:req:users/ana:", request_id));
    EXPECT_LE(ttl, kSevenDays) << request_id;
    EXPECT_GT(ttl, kSevenDays - 60) << request_id;
  }
}

// notify.proto ReplayDeadLetter: "a retry with the same request_id answers
// the first answer and replays nothing, also once the message was
// removed". The record expired after a day whatever became of the message
// (a delivered one is removed 30 days after it was sent, a dead letter 90
// days after it died): the retry then met the message as it was, or
// DEAD_LETTER_NOT_FOUND. Now the record has no expiry while the message
// exists and is kept 7 days once it was removed: from the send, the
// message's retention plus 7 days; from the clean-up of the dead letter, 7
// days. A replay without a request_id keeps nothing.
TEST_F(NotifyContractTest, AReplaysRequestRecordOutlivesItsMessageBySevenDays) {
  StartMail();
  constexpr int64_t kSevenDays = 7 * 24 * 3600;
  MakeDeadLetter("m1", "ana", "550 no such user");
  MakeDeadLetter("m2", "bo", "550 mailbox full");
  MakeDeadLetter("m3", "cy", "550 gone");
  auto replay = [&](const std::string& id, const std::string& request_id, v1::DeadLetter* out) {
    v1::ReplayDeadLetterRequest r;
    r.set_name("deadLetters/" + id);
    r.set_request_id(request_id);
    return stub_->ReplayDeadLetter(As(Now("root", "", Role::kConsortiumAdmin)).get(), r, out);
  };
  const std::string record1 = "{notify}:mail:req:users/root:replay-1";
  const std::string record2 = "{notify}:mail:req:users/root:replay-2";
  v1::DeadLetter first1, first2, out;
  ASSERT_TRUE(replay("m1", "replay-1", &first1).ok());
  ASSERT_TRUE(replay("m2", "replay-2", &first2).ok());
  ASSERT_TRUE(replay("m3", "", &out).ok());
  EXPECT_EQ(TtlOf(*pool_, record1), -1);
  EXPECT_EQ(TtlOf(*pool_, record2), -1);
  EXPECT_EQ(TtlOf(*pool_, "{notify}:mail:replays:m3"), -2);

  // m1 is delivered (Attempt's retention: 1 hour), m2 and m3 die again.
  clock_.Advance(absl::Minutes(1));
  Attempt({{"m1", MailQueue::Outcome::kSent}, {"m2", MailQueue::Outcome::kDead}, {"m3", MailQueue::Outcome::kDead}},
          "550 still no");
  const int64_t sent = TtlOf(*pool_, record1);
  EXPECT_LE(sent, 3600 + kSevenDays);
  EXPECT_GT(sent, 3600 + kSevenDays - 60);
  EXPECT_EQ(TtlOf(*pool_, "{notify}:mail:replays:m1"), -2);
  EXPECT_EQ(TtlOf(*pool_, record2), -1);  // m2 is still there (dead)

  // m2 and m3 leave after the dead-letter retention: m2's record 7 days more.
  clock_.Advance(absl::Hours(24 * 90) + absl::Seconds(1));
  auto removed = mail_->PruneDeadLetters();
  ASSERT_TRUE(removed.ok()) << removed.status();
  ASSERT_EQ(*removed, 2);
  const int64_t pruned = TtlOf(*pool_, record2);
  EXPECT_LE(pruned, kSevenDays);
  EXPECT_GT(pruned, kSevenDays - 60);
  EXPECT_EQ(TtlOf(*pool_, "{notify}:mail:replays:m2"), -2);
  grpc::Status s = replay("m2", "replay-2", &out);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
  EXPECT_EQ(out.SerializeAsString(), first2.SerializeAsString());
  s = replay("m3", "", &out);
  EXPECT_EQ(GrpcErrorReason(s), "DEAD_LETTER_NOT_FOUND");
}

}  // namespace
}  // namespace labshare::notify
