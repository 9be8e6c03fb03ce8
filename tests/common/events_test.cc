#include "common/events.h"

#include <gtest/gtest.h>

#include "tests/support/redis_server.h"

namespace labshare {
namespace {

// A consumer whose effect (adding the payload to a total) is applied once per
// event, in the same Lua step as its dedup marker.
class EventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing::SharedRedisServer();
    ASSERT_NE(server_, nullptr);
    testing::FlushAll(*server_);
    pool_ = std::make_unique<RedisPool>(server_->options());
    apply_ = std::make_unique<RedisScript>(std::string(kApplyOnceLua) + R"lua(
if apply_once(KEYS[1], 3600) then redis.call('INCRBY', KEYS[2], ARGV[1]) end
return 1
)lua");
  }

  void Publish(int amount) {
    ASSERT_TRUE(pool_->Command({"XADD", "{s}:outbox", "*", "type", "t", "payload",
                                std::to_string(amount)}).ok());
  }

  EventConsumer::Handler Apply() {
    return [this](const StreamEvent& e) {
      return pool_->Eval(*apply_, {"{s}:applied:" + e.stream_id, "{s}:total"}, {e.payload}).status();
    };
  }

  long long Total() {
    auto v = pool_->Command({"GET", "{s}:total"});
    return v->is_nil() ? 0 : std::stoll(v->str);
  }

  ConsumerOptions Options(const std::string& name) {
    ConsumerOptions o;
    o.stream = "{s}:outbox";
    o.group = "billing";
    o.consumer = name;
    o.block = absl::ZeroDuration();
    o.reclaim_idle = absl::ZeroDuration();
    return o;
  }

  testing::RedisServer* server_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<RedisScript> apply_;
};

TEST_F(EventsTest, AppliesAndAcknowledgesEachEvent) {
  EventConsumer c(pool_.get(), Options("c1"));
  ASSERT_TRUE(c.EnsureGroup().ok());
  ASSERT_TRUE(c.EnsureGroup().ok());  // idempotent
  for (int i = 1; i <= 5; ++i) Publish(i);
  EXPECT_EQ(*c.PollOnce(Apply()), 5);
  EXPECT_EQ(Total(), 15);
  EXPECT_EQ(*c.PollOnce(Apply()), 0);
  EXPECT_EQ(pool_->Command({"XPENDING", "{s}:outbox", "billing"})->elements[0].integer, 0);
}

TEST_F(EventsTest, FailedHandlerLeavesEventPendingForRetry) {
  EventConsumer c(pool_.get(), Options("c1"));
  ASSERT_TRUE(c.EnsureGroup().ok());
  Publish(7);
  EXPECT_EQ(*c.PollOnce([](const StreamEvent&) { return absl::UnavailableError("down"); }), 0);
  EXPECT_EQ(Total(), 0);
  EXPECT_EQ(*c.PollOnce(Apply()), 1);  // re-read from its own pending list
  EXPECT_EQ(Total(), 7);
}

TEST_F(EventsTest, CrashBetweenApplyAndAckAppliesOnce) {
  EventConsumer dying(pool_.get(), Options("dying"));
  ASSERT_TRUE(dying.EnsureGroup().ok());
  Publish(10);
  Publish(20);
  // The first consumer applies both events, then "dies" before acknowledging.
  auto handler = Apply();
  EXPECT_EQ(*dying.PollOnce([&](const StreamEvent& e) {
    EXPECT_TRUE(handler(e).ok());
    return absl::AbortedError("killed before XACK");
  }), 0);
  EXPECT_EQ(Total(), 30);
  // Another consumer reclaims the idle entries; applying again has no effect.
  EventConsumer heir(pool_.get(), Options("heir"));
  EXPECT_EQ(*heir.PollOnce(Apply()), 2);
  EXPECT_EQ(Total(), 30);
  EXPECT_EQ(pool_->Command({"XPENDING", "{s}:outbox", "billing"})->elements[0].integer, 0);
}

// XACK calls counted by the server since the last CONFIG RESETSTAT.
int64_t XackCalls(RedisPool& pool) {
  auto info = pool.Command({"INFO", "commandstats"});
  const std::string& text = info->str;
  const size_t at = text.find("cmdstat_xack:calls=");
  if (at == std::string::npos) return 0;
  return std::stoll(text.substr(at + std::string("cmdstat_xack:calls=").size()));
}

std::vector<std::string> PendingIds(RedisPool& pool) {
  auto v = pool.Command({"XPENDING", "{s}:outbox", "billing", "-", "+", "1000"});
  std::vector<std::string> out;
  for (const auto& e : v->elements) out.push_back(e.elements[0].str);
  return out;
}

TEST_F(EventsTest, PollBatchAcknowledgesTheSucceededEntriesWithOneXack) {
  EventConsumer c(pool_.get(), Options("c1"));
  ASSERT_TRUE(c.EnsureGroup().ok());
  for (int i = 1; i <= 6; ++i) Publish(i);
  ASSERT_TRUE(pool_->Command({"CONFIG", "RESETSTAT"}).ok());
  std::vector<std::string> seen, failed;
  auto handler = Apply();
  EventConsumer::BatchHandler batch = [&](const std::vector<StreamEvent>& events) {
    std::vector<absl::Status> out;
    for (const StreamEvent& e : events) {
      seen.push_back(e.payload);
      if (e.payload == "2" || e.payload == "5") {  // these fail
        failed.push_back(e.stream_id);
        out.push_back(absl::UnavailableError("down"));
      } else {
        out.push_back(handler(e));
      }
    }
    return out;
  };
  EXPECT_EQ(*c.PollBatch(batch), 4);
  EXPECT_EQ(seen, (std::vector<std::string>{"1", "2", "3", "4", "5", "6"}));  // one batch, in order
  EXPECT_EQ(Total(), 1 + 3 + 4 + 6);
  EXPECT_EQ(XackCalls(*pool_), 1);
  EXPECT_EQ(PendingIds(*pool_), failed);  // exactly the failed entries
  // The next round re-reads them (own pending list) and acknowledges them.
  seen.clear();
  EXPECT_EQ(*c.PollBatch([&](const std::vector<StreamEvent>& events) {
    std::vector<absl::Status> out;
    for (const StreamEvent& e : events) {
      seen.push_back(e.payload);
      out.push_back(handler(e));
    }
    return out;
  }), 2);
  EXPECT_EQ(seen, (std::vector<std::string>{"2", "5"}));
  EXPECT_EQ(Total(), 21);
  EXPECT_EQ(XackCalls(*pool_), 2);
  EXPECT_TRUE(PendingIds(*pool_).empty());
  // Nothing left: no handler call, no XACK.
  EXPECT_EQ(*c.PollBatch([&](const std::vector<StreamEvent>&) {
    ADD_FAILURE() << "handler called without entries";
    return std::vector<absl::Status>{};
  }), 0);
  EXPECT_EQ(XackCalls(*pool_), 2);
}

TEST_F(EventsTest, PerEventHandlerAlsoAcknowledgesOncePerBatch) {
  EventConsumer c(pool_.get(), Options("c1"));
  ASSERT_TRUE(c.EnsureGroup().ok());
  for (int i = 1; i <= 5; ++i) Publish(i);
  ASSERT_TRUE(pool_->Command({"CONFIG", "RESETSTAT"}).ok());
  EXPECT_EQ(*c.PollOnce(Apply()), 5);
  EXPECT_EQ(Total(), 15);
  EXPECT_EQ(XackCalls(*pool_), 1);
}

TEST_F(EventsTest, PollBatchWithAWrongNumberOfStatusesAcknowledgesNothing) {
  EventConsumer c(pool_.get(), Options("c1"));
  ASSERT_TRUE(c.EnsureGroup().ok());
  Publish(1);
  Publish(2);
  auto polled = c.PollBatch([](const std::vector<StreamEvent>&) { return std::vector<absl::Status>(1); });
  EXPECT_EQ(polled.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(PendingIds(*pool_).size(), 2u);
}

TEST_F(EventsTest, PollBatchReclaimsIdleEntriesOfADeadConsumer) {
  EventConsumer dying(pool_.get(), Options("dying"));
  ASSERT_TRUE(dying.EnsureGroup().ok());
  Publish(10);
  Publish(20);
  EXPECT_EQ(*dying.PollBatch([](const std::vector<StreamEvent>& events) {
    return std::vector<absl::Status>(events.size(), absl::AbortedError("killed before XACK"));
  }), 0);
  EventConsumer heir(pool_.get(), Options("heir"));
  std::vector<std::string> seen;
  auto handler = Apply();
  EXPECT_EQ(*heir.PollBatch([&](const std::vector<StreamEvent>& events) {
    std::vector<absl::Status> out;
    for (const StreamEvent& e : events) {
      seen.push_back(e.payload);
      out.push_back(handler(e));
    }
    return out;
  }), 2);
  EXPECT_EQ(seen, (std::vector<std::string>{"10", "20"}));
  EXPECT_EQ(Total(), 30);
  EXPECT_TRUE(PendingIds(*pool_).empty());
}

TEST(EventId, IsRandomHex) {
  const std::string a = NewEventId(), b = NewEventId();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

}  // namespace
}  // namespace labshare
