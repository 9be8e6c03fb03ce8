// The test harness for issue 15 on its own, against real redis-servers and
// sentinels and without the services: RedisServer::Kill9/Restart (same port,
// same directory, the AOF loaded), and RedisSentinelSetup (a kill -9 of the
// master is followed by a promotion; every write a replica acknowledged
// through WAIT survives it). Plain single-server pools only, so it does not
// depend on the client's Sentinel support.
#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/redis.h"
#include "tests/support/redis_sentinel.h"
#include "tests/support/redis_server.h"

namespace labshare::testing {
namespace {

TEST(RedisServerRestartTest, Kill9KeepsTheDirectoryAndRestartLoadsTheAof) {
  auto server = RedisServer::Start({"--appendonly", "yes", "--appendfsync", "always"});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  const std::string dir = (*server)->dir();
  {
    RedisPool pool((*server)->options());
    for (int i = 0; i < 500; ++i) {
      auto v = pool.Command({"SET", absl::StrCat("k", i), absl::StrCat("v", i)});
      ASSERT_TRUE(v.ok()) << v.status();
    }
  }
  (*server)->Kill9();
  EXPECT_FALSE((*server)->running());
  ASSERT_TRUE((*server)->Restart().ok());
  EXPECT_TRUE((*server)->running());
  EXPECT_EQ((*server)->port(), port);
  EXPECT_EQ((*server)->dir(), dir);
  RedisPool pool((*server)->options());
  auto n = pool.Command({"DBSIZE"});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->integer, 500);
  auto v = pool.Command({"GET", "k499"});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->str, "v499");
}

TEST(RedisSentinelSetupTest, Kill9OfTheMasterKeepsEveryWriteAReplicaAcknowledged) {
  auto setup = RedisSentinelSetup::Start();
  ASSERT_TRUE(setup.ok()) << setup.status();
  RedisSentinelSetup& s = **setup;
  ASSERT_EQ(s.nodes().size(), 3u);
  ASSERT_EQ(s.sentinels().size(), 3u);
  for (const std::string& a : s.AskSentinels()) EXPECT_EQ(a, s.master().address());
  const std::vector<std::string> flags = s.ServiceFlags();
  ASSERT_EQ(flags.size(), 3u);
  EXPECT_EQ(flags[0], "--redis_sentinels=" + s.SentinelAddresses());
  EXPECT_EQ(flags[1], "--redis_sentinel_master=labshare");
  EXPECT_EQ(flags[2], "--redis_wait_replicas=1");
  EXPECT_EQ(s.options().sentinels.size(), 3u);
  EXPECT_EQ(s.options().wait_replicas, 1);

  // Writers: SET then WAIT 1; acknowledged when a replica has it.
  RedisOptions plain = s.MasterOptions();
  plain.command_timeout = absl::Seconds(2);
  RedisPool pool(plain);
  std::atomic<bool> stop{false};
  std::atomic<int> acknowledged{0};
  std::mutex mu;
  std::vector<std::string> acked_keys;
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const std::string key = absl::StrFormat("w%d-%06d", t, i);
        auto r = pool.Pipeline({{"SET", key, key}, {"WAIT", "1", "1000"}});
        if (!r.ok()) return;  // the master is gone
        if ((*r)[0].is_error() || (*r)[1].integer < 1) continue;
        acknowledged.fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        acked_keys.push_back(key);
      }
    });
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (acknowledged.load() < 400 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  const absl::Time killed = absl::Now();
  const int old_port = s.Kill9Master();
  stop.store(true);
  for (auto& w : writers) w.join();
  ASSERT_GE(acknowledged.load(), 400);

  auto promoted = s.WaitForNewMaster();
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  std::cout << "kill -9 of 127.0.0.1:" << old_port << "; sentinels name " << (*promoted)->address()
            << " (taking writes) after " << absl::FormatDuration(absl::Trunc(absl::Now() - killed, absl::Milliseconds(1)))
            << "; " << acked_keys.size() << " writes acknowledged before" << std::endl;
  EXPECT_NE((*promoted)->port(), old_port);
  EXPECT_EQ(&s.master(), *promoted);

  RedisPool fresh(s.MasterOptions());
  int lost = 0;
  for (const std::string& key : acked_keys) {
    auto v = fresh.Command({"GET", key});
    ASSERT_TRUE(v.ok()) << v.status();
    if (v->str != key && ++lost <= 10) ADD_FAILURE() << "acknowledged write " << key << " lost";
  }
  EXPECT_EQ(lost, 0);
  // The new master takes writes and has a replica for them.
  auto w = fresh.Pipeline({{"SET", "after", "1"}, {"WAIT", "1", "5000"}});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)[0].type, RedisValue::Type::kStatus) << (*w)[0].DebugString();
  EXPECT_EQ((*w)[0].str, "OK");
  EXPECT_EQ((*w)[1].integer, 1);

  // The killed node comes back as a replica of the new master; then the
  // new master is killed in turn and the writes so far survive again.
  const absl::Time restarting = absl::Now();
  absl::Status whole = s.RestartKilled();
  ASSERT_TRUE(whole.ok()) << whole;
  std::cout << "killed node back as a replica after "
            << absl::FormatDuration(absl::Trunc(absl::Now() - restarting, absl::Milliseconds(1))) << std::endl;
  const int second_port = s.Kill9Master();
  auto second = s.WaitForNewMaster();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE((*second)->port(), second_port);
  RedisPool last(s.MasterOptions());
  auto after = last.Command({"GET", "after"});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->str, "1");
  auto n = last.Command({"DBSIZE"});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_GE(n->integer, static_cast<long long>(acked_keys.size()) + 1);
}

}  // namespace
}  // namespace labshare::testing
