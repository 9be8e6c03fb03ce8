#include "common/events.h"

#include <gtest/gtest.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/outbox_trim.h"
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
    o.retry_initial = absl::ZeroDuration();  // failed entries retried in the next round
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

// [id, consumer, idle ms, deliveries] of a pending entry (empty: not pending).
std::vector<std::string> PendingEntry(RedisPool& pool, const std::string& id) {
  auto v = pool.Command({"XPENDING", "{s}:outbox", "billing", id, id, "1"});
  if (!v.ok() || !v->is_array() || v->elements.empty()) return {};
  const auto& e = v->elements[0].elements;
  return {e[0].str, e[1].str, std::to_string(e[2].integer), std::to_string(e[3].integer)};
}

// Moves an entry's idle time (and optionally its delivery count) as if time
// had passed since its last delivery, without delivering it.
void SetIdle(RedisPool& pool, const std::string& id, const std::string& consumer, int64_t idle_ms,
             int retry_count = -1) {
  std::vector<std::string> cmd = {"XCLAIM", "{s}:outbox", "billing", consumer, "0", id,
                                  "IDLE", std::to_string(idle_ms)};
  if (retry_count >= 0) {
    cmd.push_back("RETRYCOUNT");
    cmd.push_back(std::to_string(retry_count));
  }
  cmd.push_back("JUSTID");
  ASSERT_FALSE(pool.Command(cmd)->is_error());
}

// Finding 1: an entry that keeps failing is retried after exponential,
// capped delays measured on its idle time (Redis's clock), not every round;
// the other entries of the stream go on meanwhile, and the stuck entry's
// idle time is not reset by the rounds that skip it.
TEST_F(EventsTest, AFailingEntryIsRetriedWithBackoffNotEveryRound) {
  ConsumerOptions o = Options("c1");
  o.retry_initial = absl::Seconds(1);
  o.retry_max = absl::Seconds(8);
  o.reclaim_idle = absl::Seconds(60);
  EventConsumer c(pool_.get(), o);
  ASSERT_TRUE(c.EnsureGroup().ok());
  Publish(666);  // always fails
  Publish(1);
  auto apply = Apply();
  std::string stuck;
  int calls = 0;
  auto handler = [&](const StreamEvent& e) -> absl::Status {
    if (e.payload == "666") {
      stuck = e.stream_id;
      ++calls;
      return absl::UnavailableError("inventory down");
    }
    return apply(e);
  };
  EXPECT_EQ(*c.PollOnce(handler), 1);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(Total(), 1);
  // 50 rounds within its first delay: not handed again (the old code called
  // it once per round); a new entry is applied meanwhile.
  for (int i = 0; i < 50; ++i) {
    if (i == 25) Publish(2);
    ASSERT_TRUE(c.PollOnce(handler).ok());
  }
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(Total(), 3);
  // Its idle time grows while it waits (the rounds did not touch it).
  SetIdle(*pool_, stuck, "c1", 500);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.PollOnce(handler).ok());
  EXPECT_GE(std::stoll(PendingEntry(*pool_, stuck)[2]), 500);
  // Delivered once: due after 1 s idle.
  SetIdle(*pool_, stuck, "c1", 900);
  ASSERT_TRUE(c.PollOnce(handler).ok());
  EXPECT_EQ(calls, 1);
  SetIdle(*pool_, stuck, "c1", 1000);
  ASSERT_TRUE(c.PollOnce(handler).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(PendingEntry(*pool_, stuck)[3], "2");  // delivered twice
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c.PollOnce(handler).ok());
  EXPECT_EQ(calls, 2);
  // Twice: after 2 s.
  SetIdle(*pool_, stuck, "c1", 1900);
  ASSERT_TRUE(c.PollOnce(handler).ok());
  EXPECT_EQ(calls, 2);
  SetIdle(*pool_, stuck, "c1", 2000);
  ASSERT_TRUE(c.PollOnce(handler).ok());
  EXPECT_EQ(calls, 3);
  // Many deliveries: capped at retry_max (8 s).
  SetIdle(*pool_, stuck, "c1", 7500, 40);
  ASSERT_TRUE(c.PollOnce(handler).ok());
  EXPECT_EQ(calls, 3);
  SetIdle(*pool_, stuck, "c1", 8000, 40);
  ASSERT_TRUE(c.PollOnce(handler).ok());
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(c.failed_entries(), 4);
  // Once it succeeds it is acknowledged like any other.
  SetIdle(*pool_, stuck, "c1", 8000);
  EXPECT_EQ(*c.PollOnce(apply), 1);
  EXPECT_EQ(Total(), 669);
  EXPECT_TRUE(PendingIds(*pool_).empty());
}

// A stuck entry whose consumer is gone (or stuck) is claimed by another
// consumer of the group once idle for reclaim_idle and due.
TEST_F(EventsTest, AnotherConsumerClaimsAStuckEntryOnceIdleAndDue) {
  ConsumerOptions o = Options("c1");
  o.retry_initial = absl::Seconds(1);
  o.retry_max = absl::Seconds(30);
  o.reclaim_idle = absl::Seconds(10);
  EventConsumer c1(pool_.get(), o);
  ASSERT_TRUE(c1.EnsureGroup().ok());
  Publish(5);
  std::string id;
  EXPECT_EQ(*c1.PollOnce([&](const StreamEvent& e) {
    id = e.stream_id;
    return absl::UnavailableError("down");
  }), 0);
  o.consumer = "c2";
  EventConsumer c2(pool_.get(), o);
  int calls = 0;
  auto apply = Apply();
  auto counting = [&](const StreamEvent& e) {
    ++calls;
    return apply(e);
  };
  SetIdle(*pool_, id, "c1", 9000);  // due for c1, not idle enough for others
  EXPECT_EQ(*c2.PollOnce(counting), 0);
  SetIdle(*pool_, id, "c1", 10000, 6);  // idle enough, but its delay is 30 s
  EXPECT_EQ(*c2.PollOnce(counting), 0);
  SetIdle(*pool_, id, "c1", 30000, 6);
  EXPECT_EQ(*c2.PollOnce(counting), 1);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(Total(), 5);
}

// Finding 3: the scan of the group's idle entries goes on from where the
// last round stopped: entries behind a page of not-yet-due ones are reached.
TEST_F(EventsTest, TheIdleEntryScanGoesOnFromItsCursor) {
  ConsumerOptions o = Options("dying");
  o.retry_initial = absl::Seconds(1);
  o.retry_max = absl::Seconds(30);
  EventConsumer dying(pool_.get(), o);
  ASSERT_TRUE(dying.EnsureGroup().ok());
  for (int i = 1; i <= 4; ++i) Publish(i);
  std::vector<std::string> ids;
  EXPECT_EQ(*dying.PollOnce([&](const StreamEvent& e) {
    ids.push_back(e.stream_id);
    return absl::AbortedError("killed");
  }), 0);
  ASSERT_EQ(ids.size(), 4u);
  // The first two were delivered many times (30 s delay), the others are due.
  SetIdle(*pool_, ids[0], "dying", 5000, 10);
  SetIdle(*pool_, ids[1], "dying", 5000, 10);
  SetIdle(*pool_, ids[2], "dying", 5000);
  SetIdle(*pool_, ids[3], "dying", 5000);
  o.consumer = "heir";
  o.scan = 2;
  o.batch = 2;
  EventConsumer heir(pool_.get(), o);
  std::vector<std::string> seen;
  auto apply = Apply();
  auto handler = [&](const StreamEvent& e) {
    seen.push_back(e.payload);
    return apply(e);
  };
  EXPECT_EQ(*heir.PollOnce(handler), 0);  // the first page: nothing due
  EXPECT_EQ(*heir.PollOnce(handler), 2);  // the next page
  EXPECT_EQ(seen, (std::vector<std::string>{"3", "4"}));
  EXPECT_EQ(PendingIds(*pool_), (std::vector<std::string>{ids[0], ids[1]}));
}

// Finding 3: an error reply (here NOGROUP) fails the poll instead of being
// taken for nothing to claim.
TEST_F(EventsTest, AMissingGroupFailsThePoll) {
  EventConsumer c(pool_.get(), Options("c1"));
  ASSERT_TRUE(c.EnsureGroup().ok());
  EXPECT_TRUE(c.group_ready());
  Publish(1);
  ASSERT_FALSE(pool_->Command({"XGROUP", "DESTROY", "{s}:outbox", "billing"})->is_error());
  auto polled = c.PollOnce(Apply());
  EXPECT_EQ(polled.status().code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(c.group_ready());
  ASSERT_TRUE(c.EnsureGroup().ok());
  EXPECT_EQ(*c.PollOnce(Apply()), 1);
}

// Finding 2: a permanent failure parks the entry in one step: appended to
// "<stream>:parked:<group>" with its fields and why, and acknowledged, so
// that nothing of the group is pending and the outbox can be trimmed past it.
TEST_F(EventsTest, APermanentFailureParksTheEntry) {
  EventConsumer c(pool_.get(), Options("c1"));
  ASSERT_TRUE(c.EnsureGroup().ok());
  // An hour old (ids on Redis's clock), so that the trimmer's window is past.
  auto t = pool_->Command({"TIME"});
  const int64_t old_ms = std::stoll(t->elements[0].str) * 1000 - 3600 * 1000;
  for (const auto& [seq, amount] : std::vector<std::pair<int, std::string>>{{0, "1"}, {1, "13"}, {2, "2"}}) {
    ASSERT_FALSE(pool_->Command({"XADD", "{s}:outbox", absl::StrCat(old_ms, "-", seq), "type", "t", "payload",
                                 amount})->is_error());
  }
  auto apply = Apply();
  int bad_calls = 0;
  std::string bad;
  auto handler = [&](const StreamEvent& e) -> absl::Status {
    if (e.payload == "13") {
      ++bad_calls;
      bad = e.stream_id;
      return PermanentEventFailure(
          MakeError(absl::StatusCode::kDataLoss, "CORRUPT_EVENT", "unreadable event"));
    }
    return apply(e);
  };
  EXPECT_EQ(*c.PollOnce(handler), 3);  // two applied, one parked
  EXPECT_EQ(Total(), 3);
  EXPECT_TRUE(PendingIds(*pool_).empty());
  EXPECT_EQ(c.parked_entries(), 1);
  EXPECT_EQ(c.failed_entries(), 1);
  EXPECT_EQ(ParkingStream("{s}:outbox", "billing"), "{s}:outbox:parked:billing");
  auto parked = pool_->Command({"XRANGE", "{s}:outbox:parked:billing", "-", "+"});
  ASSERT_EQ(parked->elements.size(), 1u);
  std::map<std::string, std::string> fields;
  const auto& kv = parked->elements[0].elements[1].elements;
  for (size_t i = 0; i + 1 < kv.size(); i += 2) fields[kv[i].str] = kv[i + 1].str;
  EXPECT_EQ(fields["type"], "t");
  EXPECT_EQ(fields["payload"], "13");
  EXPECT_EQ(fields["id"], bad);
  EXPECT_EQ(fields["group"], "billing");
  EXPECT_EQ(fields["consumer"], "c1");
  EXPECT_EQ(fields["reason"], "DATA_LOSS CORRUPT_EVENT: unreadable event");
  EXPECT_GT(std::stoll(fields["time"]), 1600000000000LL);
  // Never handed again.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(*c.PollOnce(handler), 0);
  EXPECT_EQ(bad_calls, 1);
  // Nothing holds trimming back: the whole outbox may go.
  OutboxTrimmer trimmer(pool_.get(), absl::Seconds(60));
  auto trimmed = trimmer.Trim("{s}:outbox");
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(trimmed->trimmed, 3) << trimmed->skipped << " held by " << trimmed->held_by;
  // The metrics.
  const std::string text = RenderConsumerMetrics(pool_.get(), {&c});
  EXPECT_NE(text.find("labshare_consumer_parked_entries{stream=\"{s}:outbox\",group=\"billing\"} 1\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("labshare_consumer_failed_entries_total{stream=\"{s}:outbox\",group=\"billing\"} 1\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("labshare_consumer_oldest_pending_age_seconds{stream=\"{s}:outbox\",group=\"billing\"} 0\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("labshare_consumer_scrape_errors 0\n"), std::string::npos) << text;
}

// Parking twice (a lost reply, another replica) adds one parking entry.
TEST_F(EventsTest, ParkingIsDoneOnce) {
  EventConsumer c(pool_.get(), Options("c1"));
  ASSERT_TRUE(c.EnsureGroup().ok());
  Publish(13);
  auto permanent = [](const StreamEvent&) { return PermanentEventFailure(absl::DataLossError("bad")); };
  EXPECT_EQ(*c.PollOnce(permanent), 1);
  EXPECT_EQ(*c.PollOnce(permanent), 0);
  EXPECT_EQ(pool_->Command({"XLEN", "{s}:outbox:parked:billing"})->integer, 1);
  EXPECT_TRUE(IsPermanentEventFailure(PermanentEventFailure(absl::DataLossError("x"))));
  EXPECT_FALSE(IsPermanentEventFailure(absl::DataLossError("x")));
  EXPECT_FALSE(IsPermanentEventFailure(absl::OkStatus()));
}

// Finding 4: the oldest pending entry's age.
TEST_F(EventsTest, MetricsShowTheOldestPendingEntrysAge) {
  ConsumerOptions o = Options("c1");
  o.retry_initial = absl::Seconds(30);
  EventConsumer c(pool_.get(), o);
  ASSERT_TRUE(c.EnsureGroup().ok());
  // An entry an hour old (explicit id on Redis's clock).
  auto t = pool_->Command({"TIME"});
  const int64_t now_ms = std::stoll(t->elements[0].str) * 1000;
  ASSERT_FALSE(pool_->Command({"XADD", "{s}:outbox", std::to_string(now_ms - 3600 * 1000) + "-0", "type", "t",
                               "payload", "1"})->is_error());
  EXPECT_EQ(*c.PollOnce([](const StreamEvent&) { return absl::UnavailableError("down"); }), 0);
  const std::string text = RenderConsumerMetrics(pool_.get(), {&c, &c});
  const std::string key = "labshare_consumer_oldest_pending_age_seconds{stream=\"{s}:outbox\",group=\"billing\"} ";
  const size_t at = text.find(key);
  ASSERT_NE(at, std::string::npos) << text;
  const double age = std::stod(text.substr(at + key.size()));
  EXPECT_GE(age, 3600.0);
  EXPECT_LT(age, 3700.0);
  EXPECT_EQ(text.find(key, at + 1), std::string::npos) << "one series per stream and group";
}

TEST(EventId, IsRandomHex) {
  const std::string a = NewEventId(), b = NewEventId();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

}  // namespace
}  // namespace labshare
