// The Redis Cluster test harness itself (tests/support/redis_cluster.h),
// checked with raw node commands only: the cluster comes up with 3 masters
// and 3 replicas, slots answer MOVED on the wrong master, a slot migration
// step by step gives ASK midway and MOVED after, and a kill -9 of a master
// promotes its replica.
#include "tests/support/redis_cluster.h"

#include <gtest/gtest.h>

#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace labshare::testing {
namespace {

std::string Describe(const absl::StatusOr<RedisValue>& v) {
  return v.ok() ? v->DebugString() : v.status().ToString();
}

bool IsError(const absl::StatusOr<RedisValue>& v, const std::string& prefix) {
  return v.ok() && v->is_error() && absl::StartsWith(v->str, prefix);
}

TEST(RedisClusterHarnessTest, StartsMigratesAndFailsOver) {
  const absl::Time t0 = absl::Now();
  auto started = RedisCluster::Start();
  ASSERT_TRUE(started.ok()) << started.status();
  RedisCluster& cluster = **started;
  ASSERT_EQ(cluster.size(), 6);
  std::cout << "cluster of 6 nodes healthy " << absl::ToDoubleSeconds(absl::Now() - t0) << " s after start\n";
  auto first_check = cluster.RedisCliCheck();
  EXPECT_TRUE(first_check.ok()) << first_check.status();

  // ---- Shape: three masters with one replica each; every slot owned.
  const std::vector<int> masters = cluster.Masters();
  ASSERT_EQ(masters.size(), 3u);
  std::set<int> replicas;
  for (int m : masters) {
    const std::vector<int> r = cluster.ReplicasOf(m);
    ASSERT_EQ(r.size(), 1u) << "master " << m;
    replicas.insert(r[0]);
  }
  EXPECT_EQ(replicas.size(), 3u);
  std::set<int> owners;
  for (int slot : {0, 5460, 5461, 10922, 10923, 16383}) {
    auto owner = cluster.MasterOfSlot(slot);
    ASSERT_TRUE(owner.ok()) << owner.status();
    owners.insert(*owner);
  }
  EXPECT_EQ(owners, std::set<int>(masters.begin(), masters.end()));
  EXPECT_EQ(cluster.ServiceFlags().size(), 2u);
  EXPECT_EQ(cluster.ServiceFlags()[0], "--redis_cluster");
  EXPECT_TRUE(cluster.options().cluster);
  EXPECT_EQ(cluster.options().cluster_seeds.size(), 6u);

  // ---- A key on its master; MOVED elsewhere, naming the owner.
  const std::string tag = KeyTagForSlot(100);
  ASSERT_EQ(RedisKeySlot(tag + ":a"), 100);
  auto owner = cluster.MasterOfSlot(100);
  ASSERT_TRUE(owner.ok()) << owner.status();
  const int from = *owner;
  int to = -1;
  for (int m : masters) {
    if (m != from) {
      to = m;
      break;
    }
  }
  std::vector<std::string> keys;
  for (int i = 0; i < 25; ++i) {
    keys.push_back(absl::StrCat(tag, ":k", i));
    auto set = cluster.NodeCommand(from, {"SET", keys.back(), absl::StrCat("v", i)});
    ASSERT_TRUE(set.ok() && set->type == RedisValue::Type::kStatus) << Describe(set);
  }
  auto moved = cluster.NodeCommand(to, {"GET", keys[0]});
  ASSERT_TRUE(IsError(moved, "MOVED 100 ")) << Describe(moved);
  EXPECT_EQ(cluster.NodeOfAddress(moved->str.substr(moved->str.rfind(' ') + 1)), from);

  // ---- Migration, paused midway: 10 keys moved, 15 not.
  ASSERT_TRUE(cluster.BeginMigration(100, from, to).ok());
  ASSERT_TRUE(cluster.MigrateKeysNamed(100, from, to, {keys.begin(), keys.begin() + 10}).ok());
  auto ask = cluster.NodeCommand(from, {"GET", keys[0]});
  EXPECT_TRUE(IsError(ask, "ASK 100 ")) << Describe(ask);
  if (ask.ok() && ask->is_error()) {
    EXPECT_EQ(cluster.NodeOfAddress(ask->str.substr(ask->str.rfind(' ') + 1)), to);
  }
  auto still = cluster.NodeCommand(from, {"GET", keys[20]});
  EXPECT_TRUE(still.ok() && still->str == "v20") << Describe(still);
  // The target answers a moved key only after ASKING (one connection):
  // without it, MOVED back to the owner.
  auto not_asked = cluster.NodeCommand(to, {"GET", keys[0]});
  EXPECT_TRUE(IsError(not_asked, "MOVED 100 ")) << Describe(not_asked);
  auto count_from = cluster.CountKeysInSlot(from, 100);
  auto count_to = cluster.CountKeysInSlot(to, 100);
  ASSERT_TRUE(count_from.ok() && count_to.ok());
  EXPECT_EQ(*count_from, 15);
  EXPECT_EQ(*count_to, 10);
  // The rest through MigrateSlot's own loop (BeginMigration again is
  // harmless), with its hooks counting.
  int batches = 0, finishing = 0;
  RedisCluster::MigrationHooks hooks;
  hooks.after_batch = [&](int) { ++batches; };
  hooks.before_finish = [&] { ++finishing; };
  auto rest = cluster.MigrateSlot(100, from, to, hooks, /*batch=*/4);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, 15);
  EXPECT_EQ(batches, 4);  // 4 + 4 + 4 + 3
  EXPECT_EQ(finishing, 1);
  auto new_owner = cluster.MasterOfSlot(100);
  ASSERT_TRUE(new_owner.ok());
  EXPECT_EQ(*new_owner, to);
  auto after = cluster.NodeCommand(from, {"GET", keys[24]});
  EXPECT_TRUE(IsError(after, "MOVED 100 ")) << Describe(after);
  for (int i = 0; i < 25; ++i) {
    auto v = cluster.NodeCommand(to, {"GET", keys[static_cast<size_t>(i)]});
    EXPECT_TRUE(v.ok() && v->str == absl::StrCat("v", i)) << keys[static_cast<size_t>(i)] << ": " << Describe(v);
  }
  ASSERT_TRUE(cluster.WaitHealthy().ok());
  auto check = cluster.RedisCliCheck();
  EXPECT_TRUE(check.ok()) << check.status();
  // And back, in one call.
  auto back = cluster.MigrateSlot(100, to, from);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, 25);
  EXPECT_EQ(*cluster.MasterOfSlot(100), from);
  check = cluster.RedisCliCheck();
  EXPECT_TRUE(check.ok()) << check.status();

  // ---- kill -9 of a master: its replica takes over its slots.
  const int victim = from;
  const std::vector<int> victim_replicas = cluster.ReplicasOf(victim);
  ASSERT_EQ(victim_replicas.size(), 1u);
  ASSERT_TRUE(cluster.Kill9(victim).ok());
  const absl::Time killed = absl::Now();
  auto successor = cluster.WaitForFailover(victim);
  ASSERT_TRUE(successor.ok()) << successor.status();
  std::cout << "failover: replica promoted and cluster_state:ok everywhere "
            << absl::ToDoubleSeconds(absl::Now() - killed) << " s after kill -9\n";
  EXPECT_EQ(*successor, victim_replicas[0]);
  EXPECT_EQ(*cluster.MasterOfSlot(100), *successor);
  auto survived = cluster.NodeCommand(*successor, {"GET", keys[7]});
  EXPECT_TRUE(survived.ok() && survived->str == "v7") << Describe(survived);

  // ---- The old master comes back as a replica of its successor.
  const absl::Time restarted = absl::Now();
  ASSERT_TRUE(cluster.Restart(victim).ok());
  absl::Status healthy = cluster.WaitHealthy();
  ASSERT_TRUE(healthy.ok()) << healthy;
  std::cout << "old master back as a replica, cluster healthy " << absl::ToDoubleSeconds(absl::Now() - restarted)
            << " s after restart\n";
  EXPECT_EQ(cluster.ReplicasOf(*successor), std::vector<int>{victim});
  EXPECT_EQ(cluster.Masters().size(), 3u);
}

}  // namespace
}  // namespace labshare::testing
