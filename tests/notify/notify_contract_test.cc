// The notify contracts (proto/labshare/notify/v1/) where the code and the RPC
// comments once disagreed: CalendarFeed.display_name is "at most 200
// characters" (not bytes: a Chinese calendar name of 150 characters is
// fine), and a feed's kind is USER or INSTRUMENT, nothing else.
#include <gtest/gtest.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "services/notify/feed_manager.h"
#include "tests/support/redis_server.h"

namespace labshare::notify {
namespace {

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

}  // namespace
}  // namespace labshare::notify
