// The event consumer loop (issue 12): a failing read is retried with capped
// exponential backoff and jitter, not in a tight loop, and a stop request
// ends the loop quietly, even in the middle of a failing read. Time is a
// FakeClock moved by an injected sleeper: no wall-clock sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/events.h"
#include "common/log.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

absl::Status Unavailable() {
  return MakeError(absl::StatusCode::kUnavailable, "STORAGE_UNAVAILABLE", "redis is down");
}

TEST(BackoffTest, ExponentialCappedAndJittered) {
  BackoffOptions o;
  o.initial = absl::Milliseconds(100);
  o.max = absl::Seconds(1);
  o.jitter = 0;
  Backoff exact(o, 7);
  std::vector<int64_t> ms;
  for (int i = 0; i < 7; ++i) ms.push_back(absl::ToInt64Milliseconds(exact.Next()));
  EXPECT_EQ(ms, (std::vector<int64_t>{100, 200, 400, 800, 1000, 1000, 1000}));
  exact.Reset();
  EXPECT_EQ(exact.Next(), absl::Milliseconds(100));

  o.jitter = 0.5;
  Backoff jittered(o, 11);
  std::set<int64_t> distinct;
  for (int round = 0; round < 50; ++round) {
    jittered.Reset();
    absl::Duration d = o.initial;
    for (int i = 0; i < 6; ++i) {
      const absl::Duration got = jittered.Next();
      EXPECT_GE(got, d / 2);
      EXPECT_LE(got, d);
      distinct.insert(absl::ToInt64Microseconds(got));
      d = std::min(d * 2, o.max);
    }
  }
  EXPECT_GT(distinct.size(), 100u);  // really random, not a fixed schedule
}

// A loop on a fake clock; every sleep advances it and counts a step.
struct FakeTimeLoop {
  explicit FakeTimeLoop(ConsumerLoopOptions o = {}) {
    o.clock = &clock;
    o.seed = 42;
    o.sleep = [this](absl::Duration d) {
      ++sleeps;
      clock.Advance(d);
    };
    o.warn = [this](absl::string_view, const LogFields&) { ++warnings; };
    loop = std::make_unique<ConsumerLoop>(std::move(o));
  }
  // Rounds until `span` of fake time has passed.
  void RunFor(absl::Duration span) {
    const absl::Time end = clock.Now() + span;
    while (clock.Now() < end && !loop->stopped()) {
      const absl::Duration wait = loop->RunOnce();
      ++sleeps;
      clock.Advance(wait);
    }
  }
  FakeClock clock;
  std::unique_ptr<ConsumerLoop> loop;
  int sleeps = 0;
  int warnings = 0;
};

TEST(ConsumerLoopTest, ARedisThatGoesAwayIsRetriedWithBackoffNotInATightLoop) {
  SetQuietLogging(true);
  auto redis = testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  const int port = (*redis)->port();
  RedisOptions ro = (*redis)->options();
  ro.connect_timeout = absl::Milliseconds(500);
  ro.command_timeout = absl::Milliseconds(500);
  RedisPool pool(ro);
  ConsumerOptions co;
  co.stream = "{s}:outbox";
  co.group = "g";
  co.consumer = "c";
  co.block = absl::ZeroDuration();
  EventConsumer consumer(&pool, co);
  int handled = 0;
  int reads = 0;
  FakeTimeLoop t;
  t.loop->Add("{s}:outbox", [&]() -> absl::StatusOr<int> {
    ++reads;
    LS_RETURN_IF_ERROR(consumer.EnsureGroup());
    return consumer.PollOnce([&](const StreamEvent&) {
      ++handled;
      return absl::OkStatus();
    });
  });
  ASSERT_TRUE(pool.Command({"XADD", "{s}:outbox", "*", "type", "t", "payload", "1"}).ok());
  // Healthy: one read per idle pause (50 ms), no warning.
  t.RunFor(absl::Milliseconds(500));
  EXPECT_EQ(handled, 1);
  EXPECT_EQ(t.warnings, 0);
  EXPECT_GE(reads, 9);
  EXPECT_LE(reads, 11);

  // Redis goes away. The old loop read every 50 ms: 40 failing reads and
  // 40 warnings in 2 s. With backoff from 200 ms (jitter: each delay in
  // [d/2, d]), reads are at 0, then >= 0.1, >= 0.3, >= 0.7, >= 1.5 s: at most
  // 5 in 2 s, and one warning each.
  redis->reset();
  reads = 0;
  t.RunFor(absl::Seconds(2));
  EXPECT_GE(reads, 4);
  EXPECT_LE(reads, 5);
  EXPECT_EQ(t.warnings, reads);
  // Then at most one read per 30 s cap (at least every 15 s with jitter):
  // over 10 more minutes, between 20 and 40 + the ramp-up reads.
  reads = 0;
  t.warnings = 0;
  t.RunFor(absl::Minutes(10));
  EXPECT_GE(reads, 20);
  EXPECT_LE(reads, 48);
  EXPECT_EQ(t.warnings, reads);

  // Redis is back on its port: the next due read succeeds and the pace is
  // the idle one again.
  auto back = testing::RedisServer::StartOnPort(port);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_TRUE(pool.Command({"XADD", "{s}:outbox", "*", "type", "t", "payload", "2"}).ok());
  t.warnings = 0;
  t.RunFor(absl::Seconds(31));
  EXPECT_EQ(handled, 2);
  reads = 0;
  t.RunFor(absl::Milliseconds(500));
  EXPECT_GE(reads, 9);
  EXPECT_EQ(t.warnings, 0);
}

// Finding 7: the loop creates a consumer's group once, not before every
// poll, and again only after a poll found it missing.
TEST(ConsumerLoopTest, TheGroupIsCreatedOnceAndAgainOnlyWhenMissing) {
  testing::RedisServer* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisPool pool(server->options());
  ConsumerOptions co;
  co.stream = "{s}:outbox";
  co.group = "g";
  co.consumer = "c";
  co.block = absl::ZeroDuration();
  EventConsumer consumer(&pool, co);
  int handled = 0;
  FakeTimeLoop t;
  t.loop->Add(&consumer, EventConsumer::Handler([&](const StreamEvent&) {
    ++handled;
    return absl::OkStatus();
  }));
  ASSERT_EQ(t.loop->consumers().size(), 1u);
  EXPECT_EQ(t.loop->consumers()[0], &consumer);
  auto xgroup_calls = [&]() -> long long {
    auto info = pool.Command({"INFO", "commandstats"});
    const size_t at = info->str.find("cmdstat_xgroup|create:calls=");
    if (at == std::string::npos) return 0;
    return std::stoll(info->str.substr(at + std::string("cmdstat_xgroup|create:calls=").size()));
  };
  ASSERT_TRUE(pool.Command({"CONFIG", "RESETSTAT"}).ok());
  ASSERT_TRUE(pool.Command({"XADD", "{s}:outbox", "*", "type", "t", "payload", "1"}).ok());
  for (int i = 0; i < 10; ++i) t.loop->RunOnce();
  EXPECT_EQ(handled, 1);
  EXPECT_EQ(xgroup_calls(), 1);  // the old loop: 10
  // The group goes (e.g. the stream was deleted): one failing poll, then it
  // is created again and the stream read from its start.
  SetQuietLogging(true);
  ASSERT_FALSE(pool.Command({"XGROUP", "DESTROY", "{s}:outbox", "g"})->is_error());
  t.RunFor(absl::Seconds(2));
  SetQuietLogging(false);
  EXPECT_EQ(t.warnings, 1);
  EXPECT_EQ(xgroup_calls(), 2);
  EXPECT_EQ(handled, 2);
}

TEST(ConsumerLoopTest, OneFailingStreamDoesNotSlowTheOthers) {
  // A stream-specific failure (not the store being down) backs off that
  // stream only.
  FakeTimeLoop t;
  int good = 0, bad = 0;
  t.loop->Add("good", [&]() -> absl::StatusOr<int> { return ++good, 0; });
  t.loop->Add("bad", [&]() -> absl::StatusOr<int> {
    return ++bad, MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "cannot read event stream");
  });
  t.RunFor(absl::Seconds(2));
  EXPECT_GE(good, 39);  // every 50 ms
  EXPECT_LE(bad, 5);
  EXPECT_EQ(t.warnings, bad);
}

TEST(ConsumerLoopTest, AnUnavailableStorePausesEveryStreamWithOneWarningPerAttempt) {
  // usage reads 20 outboxes: with the store down, the old loop logged 20
  // warnings every 50 ms (about 800 in 2 s). Now: one read and one warning
  // per backoff step for the whole loop.
  FakeTimeLoop t;
  int reads = 0;
  for (int i = 0; i < 20; ++i) {
    t.loop->Add(absl::StrCat("{bk:", i, "}:outbox"), [&]() -> absl::StatusOr<int> { return ++reads, Unavailable(); });
  }
  t.RunFor(absl::Seconds(2));
  EXPECT_GE(reads, 4);
  EXPECT_LE(reads, 5);
  EXPECT_EQ(t.warnings, reads);
}

TEST(ConsumerLoopTest, StopDuringAFailingReadIsQuiet) {
  FakeTimeLoop t;
  int reads = 0;
  t.loop->Add("s", [&]() -> absl::StatusOr<int> {
    ++reads;
    t.loop->Stop();  // SIGTERM arrives while the read fails (Redis shutting down)
    return Unavailable();
  });
  int later = 0;
  t.loop->Add("after", [&]() -> absl::StatusOr<int> { return ++later, Unavailable(); });
  t.loop->Run();  // returns by itself
  EXPECT_EQ(reads, 1);
  EXPECT_EQ(later, 0);  // nothing more is read once stop is requested
  EXPECT_EQ(t.warnings, 0);
  EXPECT_EQ(t.sleeps, 0);
}

TEST(ConsumerLoopTest, StopInterruptsTheBackoffWait) {
  // The real sleeper (waits on the stop notification): Stop() from another
  // thread ends a 30 s backoff wait at once, with no further read or warning.
  ConsumerLoopOptions o;
  o.backoff.initial = absl::Seconds(30);
  absl::Notification warned;
  std::atomic<int> warnings{0}, reads{0};
  o.warn = [&](absl::string_view, const LogFields&) {
    if (++warnings == 1) warned.Notify();
  };
  ConsumerLoop loop(o);
  loop.Add("s", [&]() -> absl::StatusOr<int> { return ++reads, Unavailable(); });
  std::thread runner([&] { loop.Run(); });
  warned.WaitForNotification();
  const absl::Time asked = absl::Now();
  loop.Stop();
  runner.join();
  EXPECT_LT(absl::Now() - asked, absl::Seconds(10));  // not the 15..30 s backoff
  EXPECT_EQ(reads.load(), 1);
  EXPECT_EQ(warnings.load(), 1);
}

}  // namespace
}  // namespace labshare
