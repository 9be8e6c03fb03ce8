// Routing pieces of the Redis client (common/redis_internal.h): hash slots,
// the key of each command, redirections, address lists; and WAIT against a
// real master with a real replica.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/redis.h"
#include "common/redis_internal.h"
#include "common/redis_pipeline.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

using Kind = RedisRedirect::Kind;

TEST(RedisKeySlot, MatchesTheClusterSpecification) {
  // The specification's reference value: CRC16("123456789") = 0x31C3.
  EXPECT_EQ(RedisKeySlot("123456789"), 0x31C3);
  EXPECT_EQ(RedisKeySlot("foo"), 12182);
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), RedisKeySlot("{user1000}.followers"));
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), RedisKeySlot("user1000"));
  // An empty tag does not count: the whole key is hashed.
  EXPECT_EQ(RedisKeySlot("foo{}{bar}"), RedisKeySlot(std::string("foo{}{bar}")));
  EXPECT_NE(RedisKeySlot("foo{}{bar}"), RedisKeySlot("bar"));
  // The first '{' and the next '}'.
  EXPECT_EQ(RedisKeySlot("foo{{bar}}zap"), RedisKeySlot("{bar"));
  EXPECT_EQ(RedisKeySlot("foo{bar}{zap}"), RedisKeySlot("bar"));
  // Our own tags: every key of one booking partition shares a slot.
  EXPECT_EQ(RedisKeySlot("{bk:3}:cal:x"), RedisKeySlot("{bk:3}:outbox"));
  EXPECT_EQ(RedisKeySlot("{bk:3}"), RedisKeySlot("bk:3"));
}

TEST(RedisCommandSlot, FindsTheFirstKey) {
  EXPECT_EQ(RedisCommandSlot({"GET", "{a}x"}), RedisKeySlot("a"));
  EXPECT_EQ(RedisCommandSlot({"EVALSHA", "sha", "2", "{b}k1", "{b}k2", "arg"}), RedisKeySlot("b"));
  EXPECT_EQ(RedisCommandSlot({"evalsha", "sha", "1", "{b}k1"}), RedisKeySlot("b"));
  EXPECT_EQ(RedisCommandSlot({"EVAL", "return 1", "0"}), -1);
  EXPECT_EQ(RedisCommandSlot({"XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "BLOCK", "5", "STREAMS",
                              "{usage}:in", ">"}),
            RedisKeySlot("usage"));
  EXPECT_EQ(RedisCommandSlot({"MEMORY", "USAGE", "{c}k"}), RedisKeySlot("c"));
  EXPECT_EQ(RedisCommandSlot({"XGROUP", "CREATE", "{d}:outbox", "g", "0", "MKSTREAM"}), RedisKeySlot("d"));
  EXPECT_EQ(RedisCommandSlot({"XINFO", "GROUPS", "{d}:outbox"}), RedisKeySlot("d"));
  EXPECT_EQ(RedisCommandSlot({"PING"}), -1);
  EXPECT_EQ(RedisCommandSlot({"SCAN", "0", "MATCH", "*"}), -1);
  EXPECT_EQ(RedisCommandSlot({"WAIT", "1", "100"}), -1);
  EXPECT_EQ(RedisCommandSlot({"SCRIPT", "LOAD", "return 1"}), -1);
}

TEST(RedisCommandIsReadOnly, WritesNeedWait) {
  EXPECT_TRUE(RedisCommandIsReadOnly("GET"));
  EXPECT_TRUE(RedisCommandIsReadOnly("zrangebyscore"));
  // XREADGROUP moves messages into the pending list: read again after a
  // READONLY refusal it would deliver them twice.
  EXPECT_FALSE(RedisCommandIsReadOnly("XREADGROUP"));
  EXPECT_FALSE(RedisCommandIsReadOnly("xreadgroup"));
  EXPECT_TRUE(RedisCommandIsReadOnly("XREAD"));
  EXPECT_FALSE(RedisCommandIsReadOnly("SET"));
  EXPECT_FALSE(RedisCommandIsReadOnly("EVALSHA"));
  EXPECT_FALSE(RedisCommandIsReadOnly("XACK"));
  EXPECT_FALSE(RedisCommandIsReadOnly("HSET"));
}

RedisValue Error(std::string text) {
  RedisValue v;
  v.type = RedisValue::Type::kError;
  v.str = std::move(text);
  return v;
}

TEST(ParseRedisRedirect, ReadsEveryKind) {
  const RedisAddress from{"10.0.0.7", 7000};
  RedisRedirect r = ParseRedisRedirect(Error("MOVED 3999 127.0.0.1:6381"), from);
  EXPECT_EQ(r.kind, Kind::kMoved);
  EXPECT_EQ(r.slot, 3999);
  EXPECT_EQ(r.node.host, "127.0.0.1");
  EXPECT_EQ(r.node.port, 6381);
  r = ParseRedisRedirect(Error("ASK 12 :6390"), from);
  EXPECT_EQ(r.kind, Kind::kAsk);
  EXPECT_EQ(r.slot, 12);
  EXPECT_EQ(r.node.host, "10.0.0.7");  // empty host: the answering node's
  EXPECT_EQ(r.node.port, 6390);
  r = ParseRedisRedirect(Error("MOVED 1 [::1]:7001"), from);
  EXPECT_EQ(r.kind, Kind::kMoved);
  EXPECT_EQ(r.node.host, "::1");
  EXPECT_EQ(r.node.port, 7001);
  EXPECT_EQ(ParseRedisRedirect(Error("TRYAGAIN Multiple keys request during rehashing of slot"), from).kind,
            Kind::kTryAgain);
  EXPECT_EQ(ParseRedisRedirect(Error("READONLY You can't write against a read only replica."), from).kind,
            Kind::kNotMaster);
  EXPECT_EQ(ParseRedisRedirect(Error("CLUSTERDOWN The cluster is down"), from).kind, Kind::kClusterDown);
  EXPECT_EQ(ParseRedisRedirect(Error("ERR wrong number of arguments"), from).kind, Kind::kNone);
  EXPECT_EQ(ParseRedisRedirect(Error("MOVED nonsense"), from).kind, Kind::kNone);
  EXPECT_EQ(ParseRedisRedirect(Error("MOVED 16384 127.0.0.1:1"), from).kind, Kind::kNone);
  RedisValue ok;
  ok.type = RedisValue::Type::kStatus;
  ok.str = "MOVED 1 127.0.0.1:1";
  EXPECT_EQ(ParseRedisRedirect(ok, from).kind, Kind::kNone);
}

TEST(ParseRedisAddressList, CommaSeparated) {
  auto list = ParseRedisAddressList("127.0.0.1:26379, redis-1.redis:26379,[::1]:26380");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[1].host, "redis-1.redis");
  EXPECT_EQ((*list)[1].port, 26379);
  EXPECT_EQ((*list)[2].host, "::1");
  for (const char* bad : {"", "a:1,,b:2", "a:1,b", "a:99999"}) {
    auto r = ParseRedisAddressList(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(ErrorReason(r.status()), "INVALID_REDIS_ADDRESS") << bad;
  }
}

// A master with one replica, linked.
struct MasterReplica {
  std::unique_ptr<testing::RedisServer> master;
  std::unique_ptr<testing::RedisServer> replica;
};

bool ReplicaLinked(testing::RedisServer& master) {
  RedisPool pool(master.options());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    auto info = pool.Command({"INFO", "replication"});
    if (info.ok() && absl::StrContains(info->str, "connected_slaves:1") &&
        absl::StrContains(info->str, "state=online")) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(20));  // polling a condition, bounded
  }
  return false;
}

absl::StatusOr<MasterReplica> StartMasterReplica() {
  MasterReplica mr;
  auto master = testing::RedisServer::Start();
  if (!master.ok()) return master.status();
  mr.master = *std::move(master);
  auto replica = testing::RedisServer::Start({"--replicaof", "127.0.0.1", std::to_string(mr.master->port())});
  if (!replica.ok()) return replica.status();
  mr.replica = *std::move(replica);
  if (!ReplicaLinked(*mr.master)) return absl::UnavailableError("replica did not link");
  return mr;
}

TEST(RedisWait, WritesAreAcknowledgedOnlyOnceAReplicaHasThem) {
  auto mr = StartMasterReplica();
  ASSERT_TRUE(mr.ok()) << mr.status();
  RedisOptions options = mr->master->options();
  options.wait_replicas = 1;
  // Generous: a loaded machine (the whole suite in parallel) can take a
  // while to ship a write to the replica; the refusals below wait it out.
  options.wait_timeout = absl::Seconds(3);
  RedisPool pool(options);
  RedisPool replica_reader(mr->replica->options());

  auto set = pool.Command({"SET", "k", "v1"});
  ASSERT_TRUE(set.ok()) << set.status();
  // WAIT answered: the replica has it the moment the call returns.
  auto seen = replica_reader.Command({"GET", "k"});
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->str, "v1");

  auto piped = pool.Pipeline({{"HSET", "h", "f", "1"}, {"HGET", "h", "f"}});
  ASSERT_TRUE(piped.ok()) << piped.status();
  EXPECT_EQ((*piped)[1].str, "1");
  EXPECT_EQ(replica_reader.Command({"HGET", "h", "f"})->str, "1");

  RedisScript script("redis.call('SET', KEYS[1], ARGV[1]) return 7");
  auto eval = pool.Eval(script, {"s"}, {"x"});
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->integer, 7);
  EXPECT_EQ(replica_reader.Command({"GET", "s"})->str, "x");

  RedisPipeline pipeline(options);
  absl::Notification done;
  absl::StatusOr<RedisValue> piped_eval;
  pipeline.Eval(script, {"p"}, {"y"}, [&](absl::StatusOr<RedisValue> v) {
    piped_eval = std::move(v);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_TRUE(piped_eval.ok()) << piped_eval.status();
  EXPECT_EQ(replica_reader.Command({"GET", "p"})->str, "y");

  // Without the replica a write cannot be confirmed: UNAVAILABLE with the
  // cause, never a silent success. Reads still answer.
  mr->replica.reset();
  auto lonely = pool.Command({"SET", "k", "v2"});
  ASSERT_FALSE(lonely.ok());
  EXPECT_EQ(lonely.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrorReason(lonely.status()), "STORAGE_UNAVAILABLE");
  EXPECT_EQ(ErrorMetadataOf(lonely.status())["cause"], "REPLICA_ACK_TIMEOUT");
  auto read = pool.Command({"GET", "s"});
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->str, "x");

  absl::Notification done2;
  pipeline.Eval(script, {"p"}, {"z"}, [&](absl::StatusOr<RedisValue> v) {
    piped_eval = std::move(v);
    done2.Notify();
  });
  done2.WaitForNotification();
  ASSERT_FALSE(piped_eval.ok());
  EXPECT_EQ(ErrorMetadataOf(piped_eval.status())["cause"], "REPLICA_ACK_TIMEOUT");
}

// ---- A real three-master Redis Cluster ----------------------------------------

struct Cluster {
  std::vector<std::unique_ptr<testing::RedisServer>> nodes;
  std::vector<std::string> ids;
  RedisOptions options() const {
    RedisOptions o;
    o.cluster = true;
    o.host = "127.0.0.1";
    o.port = nodes[0]->port();
    o.cluster_seeds = {RedisAddress{"127.0.0.1", nodes[0]->port()}};
    return o;
  }
};

absl::StatusOr<Cluster> StartCluster() {
  Cluster c;
  std::string create = "redis-cli --cluster create";
  for (int i = 0; i < 3; ++i) {
    auto node = testing::RedisServer::Start(
        {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"});
    if (!node.ok()) return node.status();
    absl::StrAppend(&create, " ", (*node)->address());
    c.nodes.push_back(*std::move(node));
  }
  absl::StrAppend(&create, " --cluster-yes >/dev/null 2>&1");
  if (std::system(create.c_str()) != 0) return absl::UnavailableError("redis-cli --cluster create failed");
  for (auto& n : c.nodes) {
    RedisPool raw(n->options());
    auto id = raw.Command({"CLUSTER", "MYID"});
    if (!id.ok()) return id.status();
    c.ids.push_back(id->str);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (true) {
      auto info = raw.Command({"CLUSTER", "INFO"});
      if (info.ok() && absl::StrContains(info->str, "cluster_state:ok")) break;
      if (absl::Now() > deadline) return absl::UnavailableError("cluster_state did not become ok");
      absl::SleepFor(absl::Milliseconds(20));  // polling a condition, bounded
    }
  }
  return c;
}

// Which node holds `key` (ASKING first: a slot being imported counts);
// -1 when none or several do.
int Holder(Cluster& c, const std::string& key) {
  int holder = -1;
  int holders = 0;
  for (size_t i = 0; i < c.nodes.size(); ++i) {
    RedisPool raw(c.nodes[i]->options());
    auto v = raw.Pipeline({{"ASKING"}, {"EXISTS", key}});
    if (v.ok() && (*v)[1].type == RedisValue::Type::kInteger && (*v)[1].integer == 1) {
      holder = static_cast<int>(i);
      ++holders;
    }
  }
  return holders == 1 ? holder : -1;
}

TEST(RedisClusterClient, RoutesRedirectsAndScansEveryMaster) {
  auto cluster = StartCluster();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  RedisPool pool(cluster->options());

  std::vector<std::string> keys;
  for (int i = 0; i < 30; ++i) keys.push_back(absl::StrCat("{k", i, "}:x"));
  std::set<int> holders;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto set = pool.Command({"SET", keys[i], std::to_string(i)});
    ASSERT_TRUE(set.ok()) << set.status();
    ASSERT_EQ(set->str, "OK") << set->DebugString();
    const int h = Holder(*cluster, keys[i]);
    ASSERT_GE(h, 0) << keys[i];
    holders.insert(h);
  }
  EXPECT_EQ(holders.size(), 3u) << "30 keys should land on all three masters";

  // One pipeline over every slot: replies in order.
  std::vector<std::vector<std::string>> gets;
  for (const auto& k : keys) gets.push_back({"GET", k});
  auto replies = pool.Pipeline(gets);
  ASSERT_TRUE(replies.ok()) << replies.status();
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ((*replies)[i].str, std::to_string(i));

  // A script whose keys share a tag runs on its master.
  RedisScript script("redis.call('SET', KEYS[2], redis.call('GET', KEYS[1])) return redis.call('GET', KEYS[2])");
  auto eval = pool.Eval(script, {"{k7}:x", "{k7}:copy"}, {});
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->str, "7");

  // SCAN behind one cursor finds every key once, on whichever master.
  std::multiset<std::string> found;
  std::string cursor = "0";
  int rounds = 0;
  do {
    auto v = pool.Command({"SCAN", cursor, "MATCH", "{k*}:x", "COUNT", "7"});
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_TRUE(v->is_array() && v->elements.size() == 2) << v->DebugString();
    cursor = v->elements[0].str;
    for (const auto& k : v->elements[1].elements) found.insert(k.str);
    ASSERT_LT(++rounds, 1000);
  } while (cursor != "0");
  EXPECT_EQ(found, std::multiset<std::string>(keys.begin(), keys.end()));

  // Move the slot of {k0} to another master, step by step as redis-cli does.
  const std::string moved_key = keys[0];
  const int slot = RedisKeySlot(moved_key);
  const int from = Holder(*cluster, moved_key);
  const int to = (from + 1) % 3;
  RedisPool src(cluster->nodes[static_cast<size_t>(from)]->options());
  RedisPool dst(cluster->nodes[static_cast<size_t>(to)]->options());
  ASSERT_EQ(dst.Command({"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", cluster->ids[static_cast<size_t>(from)]})->str, "OK");
  ASSERT_EQ(src.Command({"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", cluster->ids[static_cast<size_t>(to)]})->str, "OK");
  // Midway: the key moved, the slot not yet. The source answers ASK.
  auto migrate = src.Command({"MIGRATE", "127.0.0.1", std::to_string(cluster->nodes[static_cast<size_t>(to)]->port()), "",
                              "0", "5000", "KEYS", moved_key});
  ASSERT_TRUE(migrate.ok()) << migrate.status();
  ASSERT_EQ(migrate->str, "OK") << migrate->DebugString();
  auto asked = pool.Command({"GET", moved_key});
  ASSERT_TRUE(asked.ok()) << asked.status();
  EXPECT_EQ(asked->str, "0");
  // A new key of the migrating slot is created on the target.
  auto fresh = pool.Command({"SET", "{k0}:fresh", "f"});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(Holder(*cluster, "{k0}:fresh"), to);
  // Done: every master learns the new owner; the client's map is stale
  // and a MOVED sends it on.
  for (auto& n : cluster->nodes) {
    RedisPool raw(n->options());
    ASSERT_EQ(raw.Command({"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", cluster->ids[static_cast<size_t>(to)]})->str, "OK");
  }
  auto after = pool.Command({"GET", moved_key});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->str, "0");
  auto write_after = pool.Command({"SET", moved_key, "moved"});
  ASSERT_TRUE(write_after.ok()) << write_after.status();
  EXPECT_EQ(Holder(*cluster, moved_key), to);

  // The pipelined hot path routes per call too.
  RedisPipeline pipeline(cluster->options());
  RedisScript incr("return redis.call('INCR', KEYS[1])");
  std::vector<absl::StatusOr<RedisValue>> results(keys.size());
  absl::BlockingCounter pending(static_cast<int>(keys.size()));
  for (size_t i = 0; i < keys.size(); ++i) {
    pipeline.Eval(incr, {absl::StrCat("{k", i, "}:n")}, {}, [&, i](absl::StatusOr<RedisValue> v) {
      results[i] = std::move(v);
      pending.DecrementCount();
    });
  }
  pending.Wait();
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_EQ(results[i]->integer, 1);
    EXPECT_GE(Holder(*cluster, absl::StrCat("{k", i, "}:n")), 0);
  }
}

}  // namespace
}  // namespace labshare
