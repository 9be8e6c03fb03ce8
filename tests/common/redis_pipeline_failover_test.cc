// RedisPipeline across Sentinel failovers (issues 15 and 17), against a real
// setup of 1 master, 2 replicas and 3 sentinels (tests/support/
// redis_sentinel.h): after a kill -9 of the master, the promotion and the old
// master's return as a replica, a read through the pipeline never comes from
// the old master (it holds an older value of its own here), writes follow
// the new master, and a pipeline allowed one shard at a time retires the old
// master's shard at every failover instead of running out of shards.
#include <gtest/gtest.h>

#include <future>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/redis.h"
#include "common/redis_pipeline.h"
#include "tests/support/redis_sentinel.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

using testing::RedisSentinelSetup;
using testing::RedisServer;

absl::StatusOr<RedisValue> Call(RedisPipeline& pipe, std::vector<std::string> argv) {
  std::promise<absl::StatusOr<RedisValue>> done;
  pipe.Command(std::move(argv), [&](absl::StatusOr<RedisValue> v) { done.set_value(std::move(v)); });
  return done.get_future().get();
}

std::string Describe(const absl::StatusOr<RedisValue>& v) {
  return v.ok() ? v->DebugString() : v.status().ToString();
}

bool IsString(const absl::StatusOr<RedisValue>& v, const std::string& want) {
  return v.ok() && v->type == RedisValue::Type::kString && v->str == want;
}

bool IsOk(const absl::StatusOr<RedisValue>& v) {
  return v.ok() && v->type == RedisValue::Type::kStatus && v->str == "OK";
}

std::string RoleOf(RedisServer& node) {
  RedisPool pool(node.options());
  auto role = pool.Command({"ROLE"});
  if (!role.ok() || !role->is_array() || role->elements.empty()) return Describe(role);
  return role->elements[0].str;
}

RedisServer* NodeOfPort(RedisSentinelSetup& s, int port) {
  for (const auto& n : s.nodes()) {
    if (n->port() == port) return n.get();
  }
  return nullptr;
}

TEST(RedisPipelineSentinel, FollowsFailoversNeverReadsTheOldMasterAndRetiresItsShard) {
  auto setup = RedisSentinelSetup::Start();
  ASSERT_TRUE(setup.ok()) << setup.status();
  RedisSentinelSetup& s = **setup;
  RedisOptions options = s.options();
  // Calls made right after a failover wait it out (the new master is
  // already named by then; this only bounds a slow machine).
  options.command_timeout = absl::Seconds(30);
  RedisPipeline pipe(options);
  RedisPipeline capped(options, /*threads=*/1, /*max_batch=*/256, RedisPipeline::kDefaultMaxQueue,
                       /*max_shards=*/1);

  auto first = Call(pipe, {"SET", "warm", "1"});
  ASSERT_TRUE(IsOk(first)) << Describe(first);
  auto warm = Call(capped, {"GET", "warm"});
  ASSERT_TRUE(IsString(warm, "1")) << Describe(warm);
  EXPECT_EQ(pipe.live_shards(), 1);
  EXPECT_EQ(capped.live_shards(), 1);

  constexpr int kCycles = 3;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("failover ", cycle));
    const std::string key = absl::StrCat("where:", cycle);
    // Acknowledged before the failover (WAIT 1 through the pipeline).
    ASSERT_TRUE(IsOk(Call(pipe, {"SET", key, "before"})));

    // No pipeline call between the kill and the old master's return: the
    // pipelines' connections to it are what gets tested.
    const int old_port = s.Kill9Master();
    auto promoted = s.WaitForNewMaster();
    ASSERT_TRUE(promoted.ok()) << promoted.status() << "\n" << s.SentinelLogs(3000);
    absl::Status whole = s.RestartKilled();
    ASSERT_TRUE(whole.ok()) << whole << "\n" << s.SentinelLogs(3000);
    RedisServer* old_master = NodeOfPort(s, old_port);
    ASSERT_NE(old_master, nullptr);
    if (RoleOf(*old_master) != "slave") {
      // On a loaded machine (down-after is 1 s) the sentinels may fail
      // over once more by themselves, back to the restarted node. The
      // setup follows the master they name; the stale value then goes to
      // a node that is a replica now, which a read must not reach either.
      old_master = nullptr;
      for (const auto& n : s.nodes()) {
        if (n->running() && n.get() != &s.master() && RoleOf(*n) == "slave") old_master = n.get();
      }
      ASSERT_NE(old_master, nullptr) << "no replica after the sentinels' own failover\n" << s.SentinelLogs(3000);
      std::cout << "failover " << cycle << ": the sentinels failed over again by themselves; the stale value goes to "
                << old_master->address() << std::endl;
    }

    // A write acknowledged by the new master and both replicas (the old
    // master among them).
    RedisPool master(s.MasterOptions());
    auto acked = master.Pipeline({{"SET", key, "after"}, {"WAIT", "2", "10000"}});
    ASSERT_TRUE(acked.ok()) << acked.status();
    ASSERT_EQ((*acked)[0].str, "OK") << (*acked)[0].DebugString();
    ASSERT_EQ((*acked)[1].integer, 2) << "not both replicas acknowledged";
    // The old master, now a replica, holds the older value again (as a
    // replica that lags would): any read it serves shows it.
    RedisPool old_node(old_master->options());
    auto role = old_node.Command({"ROLE"});
    ASSERT_TRUE(role.ok() && role->is_array() && !role->elements.empty()) << Describe(role);
    ASSERT_EQ(role->elements[0].str, "slave");
    ASSERT_TRUE(IsOk(old_node.Command({"CONFIG", "SET", "replica-read-only", "no"})));
    ASSERT_TRUE(IsOk(old_node.Command({"SET", key, "before"})));
    ASSERT_TRUE(IsOk(old_node.Command({"CONFIG", "SET", "replica-read-only", "yes"})));

    auto read = Call(pipe, {"GET", key});
    EXPECT_TRUE(IsString(read, "after")) << "pipeline read after the failover: " << Describe(read);
    auto read_capped = Call(capped, {"GET", key});
    EXPECT_TRUE(IsString(read_capped, "after")) << "capped pipeline read: " << Describe(read_capped);
    // Writes land on the new master, acknowledged by a replica.
    auto wrote = Call(pipe, {"SET", key + ":w", "pipe"});
    EXPECT_TRUE(IsOk(wrote)) << Describe(wrote);
    auto wrote_capped = Call(capped, {"SET", key + ":c", "capped"});
    EXPECT_TRUE(IsOk(wrote_capped)) << Describe(wrote_capped);
    RedisPool now(s.MasterOptions());
    EXPECT_TRUE(IsString(now.Command({"GET", key + ":w"}), "pipe"));
    EXPECT_TRUE(IsString(now.Command({"GET", key + ":c"}), "capped"));
    // The old master's shard is retired: one shard, the new master's.
    EXPECT_EQ(pipe.live_shards(), 1);
    EXPECT_EQ(capped.live_shards(), 1);
    // The older value goes: the master writes the key again (replicated).
    auto restore = master.Pipeline({{"SET", key, "after"}, {"WAIT", "2", "10000"}});
    ASSERT_TRUE(restore.ok()) << restore.status();
    std::cout << "failover " << cycle << ": 127.0.0.1:" << old_port << " -> " << (*promoted)->address()
              << "; pipeline reads and writes follow it" << std::endl;
  }
}

// A master demoted by hand (REPLICAOF, no CLIENT KILL, as an operator
// would) while the pipeline keeps a connection to it. With the periodic
// ROLE check off (role_recheck infinite), only the batch's own refusal
// tells: a batch {GET, INCR} meets READONLY on the INCR; the GET is read
// again and the INCR run again where the sentinels now point, once.
TEST(RedisPipelineSentinel, AMasterDemotedUnderAKeptConnectionIsReadAgainAndWrittenOnceOnTheNewMaster) {
  auto setup = RedisSentinelSetup::Start();
  ASSERT_TRUE(setup.ok()) << setup.status();
  RedisSentinelSetup& s = **setup;
  RedisOptions options = s.options();
  options.command_timeout = absl::Seconds(30);
  options.role_recheck = absl::InfiniteDuration();
  RedisPipeline pipe(options, /*threads=*/1);
  ASSERT_TRUE(IsOk(Call(pipe, {"SET", "k", "old"})));  // the kept connection, to the master

  RedisServer& old_master = s.master();
  RedisServer* promoted = nullptr;
  for (const auto& n : s.nodes()) {
    if (n.get() != &old_master && n->running()) promoted = n.get();
  }
  ASSERT_NE(promoted, nullptr);
  const std::string name = s.config().master_name;
  // The sentinels forget the old master, the replica is promoted by hand,
  // and the sentinels name it.
  for (const auto& sentinel : s.sentinels()) {
    RedisPool p(sentinel->options());
    auto r = p.Command({"SENTINEL", "REMOVE", name});
    ASSERT_TRUE(IsOk(r)) << Describe(r);
  }
  RedisPool new_master(promoted->options());
  ASSERT_TRUE(IsOk(new_master.Command({"REPLICAOF", "NO", "ONE"})));
  for (const auto& sentinel : s.sentinels()) {
    RedisPool p(sentinel->options());
    auto r = p.Command({"SENTINEL", "MONITOR", name, "127.0.0.1", std::to_string(promoted->port()),
                        std::to_string(s.config().quorum)});
    ASSERT_TRUE(IsOk(r)) << Describe(r);
  }
  RedisPool old_node(old_master.options());
  ASSERT_TRUE(IsOk(old_node.Command({"REPLICAOF", "127.0.0.1", std::to_string(promoted->port())})));
  // The new master's value, acknowledged by the old master (its replica now).
  // Writes need a replica (min-replicas-to-write): once the old master is
  // attached, the SET goes through.
  absl::StatusOr<RedisValue> set;
  const absl::Time until = absl::Now() + absl::Seconds(20);
  while (!IsOk(set = new_master.Command({"SET", "k", "new"})) && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));  // polling a condition, bounded
  }
  ASSERT_TRUE(IsOk(set)) << Describe(set);
  auto acked = new_master.Command({"WAIT", "1", "4000"});
  ASSERT_TRUE(acked.ok() && acked->integer == 1) << Describe(acked);
  // The old master then holds an older value of its own: a read it serves
  // shows it.
  ASSERT_TRUE(IsOk(old_node.Command({"CONFIG", "SET", "replica-read-only", "no"})));
  ASSERT_TRUE(IsOk(old_node.Command({"SET", "k", "stale"})));
  ASSERT_TRUE(IsOk(old_node.Command({"CONFIG", "SET", "replica-read-only", "yes"})));

  std::promise<absl::StatusOr<std::vector<RedisValue>>> done;
  pipe.Pipeline({{"GET", "k"}, {"INCR", "n"}},
                [&](absl::StatusOr<std::vector<RedisValue>> v) { done.set_value(std::move(v)); });
  auto batch = done.get_future().get();
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 2u);
  EXPECT_EQ((*batch)[0].str, "new") << (*batch)[0].DebugString();
  EXPECT_EQ((*batch)[1].type, RedisValue::Type::kInteger) << (*batch)[1].DebugString();
  EXPECT_EQ((*batch)[1].integer, 1);
  EXPECT_TRUE(IsString(new_master.Command({"GET", "n"}), "1"));
}

}  // namespace
}  // namespace labshare
