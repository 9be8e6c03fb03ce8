// Outbox retention (OutboxTrimmer) and the lag figures on a real
// redis-server: exactly which entries go, that nothing a group has pending
// or not yet read goes, the safety window on Redis's clock, and the lag
// after an AOF reload, where XINFO GROUPS' own figure is gone.
#include "common/outbox_trim.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "common/metrics.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

constexpr char kStream[] = "{t}:outbox";

class OutboxTrimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing::SharedRedisServer();
    ASSERT_NE(server_, nullptr);
    testing::FlushAll(*server_);
    pool_ = std::make_unique<RedisPool>(server_->options());
  }

  // Entries "1000-0", "2000-0", ... "<n>000-0".
  void Fill(RedisPool& pool, int n) {
    for (int i = 1; i <= n; ++i) {
      ASSERT_EQ(pool.Command({"XADD", kStream, std::to_string(i * 1000) + "-0", "f", "v"})->str,
                std::to_string(i * 1000) + "-0");
    }
  }
  void Group(RedisPool& pool, const std::string& g) {
    ASSERT_EQ(pool.Command({"XGROUP", "CREATE", kStream, g, "0"})->str, "OK");
  }
  void Read(RedisPool& pool, const std::string& g, int n) {
    auto r = pool.Command({"XREADGROUP", "GROUP", g, "c", "COUNT", std::to_string(n), "STREAMS", kStream, ">"});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->elements[0].elements[1].elements.size(), static_cast<size_t>(n));
  }
  void Ack(RedisPool& pool, const std::string& g, std::vector<int> seconds) {
    for (int s : seconds) {
      ASSERT_EQ(pool.Command({"XACK", kStream, g, std::to_string(s * 1000) + "-0"})->integer, 1);
    }
  }
  std::vector<std::string> Ids() {
    std::vector<std::string> out;
    auto r = pool_->Command({"XRANGE", kStream, "-", "+"});
    for (const auto& e : r->elements) out.push_back(e.elements[0].str);
    return out;
  }

  testing::RedisServer* server_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
};

// Entries at explicit ids "<ms>-0".
std::vector<std::string> FillAt(RedisPool& pool, const std::vector<int64_t>& ms) {
  std::vector<std::string> ids;
  for (int64_t m : ms) {
    const std::string id = std::to_string(m) + "-0";
    EXPECT_EQ(pool.Command({"XADD", kStream, id, "f", "v"})->str, id);
    ids.push_back(id);
  }
  return ids;
}
// Redis's own clock (TIME) in ms.
int64_t RedisNowMs(RedisPool& pool) {
  auto t = pool.Command({"TIME"});
  return std::stoll(t->elements[0].str) * 1000 + std::stoll(t->elements[1].str) / 1000;
}

TEST_F(OutboxTrimTest, TrimsExactlyWhatEveryGroupAcknowledgedAndTheWindowAllows) {
  // Entries 1..3 two minutes old by Redis's clock, 4..10 about 25 s old.
  const int64_t now = RedisNowMs(*pool_);
  std::vector<int64_t> ms;
  for (int i = 1; i <= 3; ++i) ms.push_back(now - 120000 + i * 1000);
  for (int i = 4; i <= 10; ++i) ms.push_back(now - 30000 + i * 1000);
  const std::vector<std::string> id = FillAt(*pool_, ms);
  auto ack = [&](const std::string& g, std::vector<int> which) {
    for (int i : which) ASSERT_EQ(pool_->Command({"XACK", kStream, g, id[i - 1]})->integer, 1);
  };
  Group(*pool_, "usage");
  Group(*pool_, "billing");
  Read(*pool_, "usage", 6);
  ack("usage", {1, 2, 3, 4});  // 5 and 6 pending
  Read(*pool_, "billing", 8);
  ack("billing", {1, 2, 3, 4, 5, 6, 7, 8});
  OutboxTrimmer trimmer(pool_.get(), absl::Minutes(1), {"usage"});

  // The window: only entries older than Redis's now - 1 min may go.
  auto r = trimmer.Trim(kStream);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->trimmed, 3);
  EXPECT_EQ(Ids(), std::vector<std::string>(id.begin() + 3, id.end()));
  // A short window allows everything; usage's oldest pending entry (5)
  // holds the rest.
  OutboxTrimmer short_window(pool_.get(), absl::Milliseconds(1), {"usage"});
  r = short_window.Trim(kStream);
  EXPECT_EQ(r->trimmed, 1);
  EXPECT_EQ(r->min_id, id[4]);
  EXPECT_EQ(Ids().front(), id[4]);
  // usage acknowledges 5 and 6: billing's last-delivered id (8) and
  // usage's (6) now bound it: entries up to 6 go, not one more.
  ack("usage", {5, 6});
  r = short_window.Trim(kStream);
  EXPECT_EQ(r->trimmed, 2);
  EXPECT_EQ(r->min_id, std::to_string(ms[5]) + "-1");
  EXPECT_EQ(Ids(), std::vector<std::string>(id.begin() + 6, id.end()));
  // Nothing more until usage reads further; a second replica running the
  // same pass changes nothing.
  OutboxTrimmer replica(pool_.get(), absl::Milliseconds(1), {"usage"});
  EXPECT_EQ(replica.Trim(kStream)->trimmed, 0);
  EXPECT_EQ(Ids().size(), 4u);
  // The groups read on from where they were.
  auto next = pool_->Command({"XREADGROUP", "GROUP", "usage", "c", "COUNT", "10", "STREAMS", kStream, ">"});
  EXPECT_EQ(next->elements[0].elements[1].elements[0].elements[0].str, id[6]);
}

// The window is on Redis's clock, the clock that stamps the ids (XADD '*'),
// whatever the platform clock (a demo clock may run years ahead): entries
// every group acknowledged but younger than the window stay.
TEST_F(OutboxTrimTest, WindowIsOnRedisClockNotThePlatformClock) {
  std::vector<std::string> id;
  for (int i = 0; i < 5; ++i) id.push_back(pool_->Command({"XADD", kStream, "*", "f", "v"})->str);
  Group(*pool_, "usage");
  Read(*pool_, "usage", 5);
  for (const std::string& i : id) ASSERT_EQ(pool_->Command({"XACK", kStream, "usage", i})->integer, 1);
  OutboxTrimmer trimmer(pool_.get(), absl::Hours(24), {"usage"});
  auto r = trimmer.Trim(kStream);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->trimmed, 0);
  EXPECT_EQ(r->skipped, "");
  EXPECT_EQ(Ids(), id);
  // The bound used is Redis's now - 24 h: below every id.
  uint64_t cut_ms = 0, cut_seq = 0, first_ms = 0, first_seq = 0;
  ASSERT_TRUE(ParseStreamId(r->min_id, &cut_ms, &cut_seq));
  ASSERT_TRUE(ParseStreamId(id[0], &first_ms, &first_seq));
  EXPECT_LE(cut_ms + 24 * 3600 * 1000, first_ms + 1000);
}

TEST_F(OutboxTrimTest, NothingGoesWithoutGroupsWithoutARequiredGroupOrWithRetentionOff) {
  Fill(*pool_, 3);  // ids 1000-0..: old by Redis's clock
  OutboxTrimmer trimmer(pool_.get(), absl::Minutes(1), {"usage"});
  EXPECT_EQ(trimmer.Trim(kStream)->skipped, "no group");
  EXPECT_EQ(trimmer.Trim("{t}:absent")->skipped, "no stream");
  Group(*pool_, "billing");
  Read(*pool_, "billing", 3);
  Ack(*pool_, "billing", {1, 2, 3});
  auto r = trimmer.Trim(kStream);
  EXPECT_EQ(r->trimmed, 0);
  EXPECT_EQ(r->skipped, "missing group usage");
  EXPECT_EQ(Ids().size(), 3u);
  // A group created now (at "0", as EnsureGroup does) has read nothing: it
  // holds every entry.
  Group(*pool_, "usage");
  EXPECT_EQ(trimmer.Trim(kStream)->trimmed, 0);
  EXPECT_EQ(Ids().size(), 3u);
  OutboxTrimmer off(pool_.get(), absl::ZeroDuration(), {});
  EXPECT_EQ(off.Trim(kStream)->skipped, "retention off");
  Read(*pool_, "usage", 3);
  Ack(*pool_, "usage", {1, 2, 3});
  EXPECT_EQ(trimmer.Trim(kStream)->trimmed, 3);
  EXPECT_EQ(pool_->Command({"XLEN", kStream})->integer, 0);
  // A group created after the trim starts at the first entry still held.
  ASSERT_TRUE(pool_->Command({"XADD", kStream, "5000-0", "f", "v"}).ok());
  Group(*pool_, "late");
  auto late = pool_->Command({"XREADGROUP", "GROUP", "late", "c", "STREAMS", kStream, ">"});
  ASSERT_EQ(late->elements[0].elements[1].elements.size(), 1u);
  EXPECT_EQ(late->elements[0].elements[1].elements[0].elements[0].str, "5000-0");
}

// Groups a stream's owner requires of it (OutboxStream, e.g. billing's on
// a booking partition) besides the flag's: while one is missing nothing
// goes, even what every existing group acknowledged; the result names the
// group holding the cut back.
TEST_F(OutboxTrimTest, StreamsOwnRequiredGroupsAndTheGroupHoldingTheCutBack) {
  Fill(*pool_, 4);  // ids 1000-0..: old by Redis's clock
  Group(*pool_, "usage");
  Read(*pool_, "usage", 4);
  Ack(*pool_, "usage", {1, 2, 3, 4});
  OutboxTrimmer trimmer(pool_.get(), absl::Minutes(1), {"usage"});
  const std::vector<std::string> booking_partition = {"billing", "usage", "notify-mail"};
  auto r = trimmer.Trim(kStream, booking_partition);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->trimmed, 0);
  EXPECT_EQ(r->skipped, "missing group billing");
  EXPECT_EQ(Ids().size(), 4u);
  Group(*pool_, "billing");
  Group(*pool_, "notify-mail");
  Read(*pool_, "billing", 2);
  Ack(*pool_, "billing", {1, 2});
  Read(*pool_, "notify-mail", 4);
  Ack(*pool_, "notify-mail", {1, 2, 3, 4});
  r = trimmer.Trim(kStream, booking_partition);
  EXPECT_EQ(r->skipped, "");
  EXPECT_EQ(r->trimmed, 2);
  EXPECT_EQ(r->min_id, "2000-1");
  EXPECT_EQ(r->held_by, "billing");
  EXPECT_EQ(Ids(), (std::vector<std::string>{"3000-0", "4000-0"}));
  // Every group has acknowledged everything: the window alone bounds the cut.
  Read(*pool_, "billing", 2);
  Ack(*pool_, "billing", {3, 4});
  r = trimmer.Trim(kStream, booking_partition);
  EXPECT_EQ(r->trimmed, 2);
  EXPECT_EQ(r->held_by, "");
}

TEST_F(OutboxTrimTest, LagCountsUndeliveredAndPendingEntries) {
  Fill(*pool_, 10);
  Group(*pool_, "usage");
  Group(*pool_, "idle");
  Read(*pool_, "usage", 6);
  Ack(*pool_, "usage", {1, 2, 3, 4});
  auto lag = ReadStreamLag(pool_.get(), kStream, 1000000, 3);  // pages of 3
  ASSERT_TRUE(lag.ok()) << lag.status();
  EXPECT_EQ(lag->length, 10);
  ASSERT_EQ(lag->groups.size(), 2u);
  EXPECT_EQ(lag->groups[0].group, "idle");
  EXPECT_EQ(lag->groups[0].undelivered, 10);
  EXPECT_EQ(lag->groups[0].pending, 0);
  EXPECT_EQ(lag->groups[1].group, "usage");
  EXPECT_EQ(lag->groups[1].last_delivered_id, "6000-0");
  EXPECT_EQ(lag->groups[1].undelivered, 4);
  EXPECT_EQ(lag->groups[1].pending, 2);
  EXPECT_EQ(lag->groups[1].lag(), 6);
  EXPECT_FALSE(lag->groups[0].at_least);
  // Redis's own figure: no counting, no cap.
  EXPECT_EQ(ReadStreamLag(pool_.get(), kStream, 5, 2)->groups[0].undelivered, 10);

  // On the /metrics page of the process.
  const int id = RegisterMetricsCollector([this] { return RenderOutboxMetrics(pool_.get(), {kStream}); });
  auto metrics = Metrics::Create("test", "");
  ASSERT_TRUE(metrics.ok());
  const std::string page = (*metrics)->Render();
  UnregisterMetricsCollector(id);
  EXPECT_TRUE(absl::StrContains(page, "labshare_outbox_length{stream=\"{t}:outbox\"} 10\n")) << page;
  EXPECT_TRUE(absl::StrContains(page, "labshare_outbox_undelivered{stream=\"{t}:outbox\",group=\"usage\"} 4\n"));
  EXPECT_TRUE(absl::StrContains(page, "labshare_outbox_pending{stream=\"{t}:outbox\",group=\"usage\"} 2\n"));
  EXPECT_TRUE(absl::StrContains(page, "labshare_outbox_lag{stream=\"{t}:outbox\",group=\"usage\"} 6\n"));
  EXPECT_TRUE(absl::StrContains(page, "labshare_outbox_lag{stream=\"{t}:outbox\",group=\"idle\"} 10\n"));
  EXPECT_TRUE(absl::StrContains(page, "labshare_outbox_undelivered_at_least{stream=\"{t}:outbox\",group=\"idle\"} 0\n"));
  EXPECT_TRUE(absl::StrContains(page, "labshare_outbox_scrape_errors 0\n"));
  EXPECT_FALSE(absl::StrContains((*metrics)->Render(), "labshare_outbox_length"));  // unregistered
}

// Each consuming service's /metrics shows its consumers' figures
// (ConsumerMetrics, common/events.h RenderConsumerMetrics) while registered.
TEST_F(OutboxTrimTest, ConsumerMetricsAreOnTheMetricsPageWhileRegistered) {
  ConsumerOptions o;
  o.stream = kStream;
  o.group = "billing";
  o.consumer = "c";
  o.block = absl::ZeroDuration();
  EventConsumer consumer(pool_.get(), o);
  ASSERT_TRUE(consumer.EnsureGroup().ok());
  ASSERT_TRUE(pool_->Command({"XADD", kStream, "*", "type", "t", "payload", "p"}).ok());
  EXPECT_EQ(*consumer.PollOnce([](const StreamEvent&) { return PermanentEventFailure(absl::DataLossError("x")); }), 1);
  auto metrics = Metrics::Create("test", "");
  ASSERT_TRUE(metrics.ok());
  {
    ConsumerMetrics registered(pool_.get(), {&consumer});
    const std::string page = (*metrics)->Render();
    EXPECT_TRUE(absl::StrContains(page, "labshare_consumer_parked_entries{stream=\"{t}:outbox\",group=\"billing\"} 1\n"))
        << page;
    EXPECT_TRUE(absl::StrContains(page, "labshare_consumer_parked_entries_total{stream=\"{t}:outbox\",group=\"billing\"} 1\n"));
    EXPECT_TRUE(absl::StrContains(page, "labshare_consumer_failed_entries_total{stream=\"{t}:outbox\",group=\"billing\"} 1\n"));
    EXPECT_TRUE(absl::StrContains(page, "labshare_consumer_oldest_pending_age_seconds{stream=\"{t}:outbox\",group=\"billing\"} 0\n"));
  }
  EXPECT_FALSE(absl::StrContains((*metrics)->Render(), "labshare_consumer_"));  // unregistered
}

// After an AOF reload (DEBUG LOADAOF: the server reads its append-only file
// again, as after a restart) Redis 7.0 no longer knows a group's
// entries-read, so XINFO GROUPS' lag is nil (unknown) from then on, even
// after new entries; the figure from the last-delivered id and the pending
// list is unchanged and right.
TEST(OutboxLagAfterAofReload, ComputedFromLastDeliveredIdAndPendingList) {
  auto server = testing::RedisServer::Start({"--appendonly", "yes", "--enable-debug-command", "yes"});
  ASSERT_TRUE(server.ok()) << server.status();
  RedisPool pool((*server)->options());
  for (int i = 1; i <= 10; ++i) {
    ASSERT_TRUE(pool.Command({"XADD", kStream, std::to_string(i * 1000) + "-0", "f", "v"}).ok());
  }
  ASSERT_EQ(pool.Command({"XGROUP", "CREATE", kStream, "usage", "0"})->str, "OK");
  ASSERT_TRUE(pool.Command({"XREADGROUP", "GROUP", "usage", "c", "COUNT", "6", "STREAMS", kStream, ">"}).ok());
  ASSERT_EQ(pool.Command({"XACK", kStream, "usage", "1000-0", "2000-0", "3000-0", "4000-0"})->integer, 4);
  auto xinfo_lag = [&]() -> RedisValue {
    auto g = pool.Command({"XINFO", "GROUPS", kStream});
    const auto& f = g->elements[0].elements;
    for (size_t i = 0; i + 1 < f.size(); i += 2) {
      if (f[i].str == "lag") return f[i + 1];
    }
    return RedisValue();
  };
  ASSERT_EQ(xinfo_lag().integer, 4);  // before: Redis's figure (undelivered only) is right
  auto before = ReadStreamLag(&pool, kStream);
  EXPECT_EQ(before->groups[0].undelivered, 4);

  ASSERT_EQ(pool.Command({"DEBUG", "LOADAOF"})->str, "OK");
  ASSERT_TRUE(pool.Command({"XADD", kStream, "11000-0", "f", "v"}).ok());
  const RedisValue after_reload = xinfo_lag();
  EXPECT_TRUE(after_reload.is_nil()) << "XINFO GROUPS lag after the reload: " << after_reload.integer;
  auto after = ReadStreamLag(&pool, kStream);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->length, 11);
  EXPECT_EQ(after->groups[0].last_delivered_id, "6000-0");
  EXPECT_EQ(after->groups[0].undelivered, 5);
  EXPECT_EQ(after->groups[0].pending, 2);
  EXPECT_EQ(after->groups[0].lag(), 7);
  EXPECT_FALSE(after->groups[0].at_least);
  // Counted (Redis cannot tell), capped: a lower bound.
  auto capped = ReadStreamLag(&pool, kStream, 3, 2);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->groups[0].undelivered, 3);
  EXPECT_TRUE(capped->groups[0].at_least);
}

}  // namespace
}  // namespace labshare
