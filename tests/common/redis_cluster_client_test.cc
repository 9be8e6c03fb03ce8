// The cluster side of RedisPool and RedisPipeline (common/redis.h,
// common/redis_pipeline.h) against a real local Redis Cluster of 3 masters
// and 3 replicas (tests/support/redis_cluster.h). Where a key really lives
// is checked on the raw node (no redirection followed); redirections are
// counted by the nodes themselves (INFO errorstats: MOVED, ASK, TRYAGAIN).
//
// One cluster for the suite; each test starts healthy and empty. The master
// kill -9 runs last and brings the old master back as a replica.
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/redis.h"
#include "common/redis_pipeline.h"
#include "tests/support/redis_cluster.h"

namespace labshare {
namespace {

using testing::KeyTagForSlot;
using testing::RedisCluster;

std::string Describe(const absl::StatusOr<RedisValue>& v) {
  return v.ok() ? v->DebugString() : v.status().ToString();
}

bool IsOkStatus(const absl::StatusOr<RedisValue>& v) {
  return v.ok() && v->type == RedisValue::Type::kStatus && v->str == "OK";
}

bool IsString(const absl::StatusOr<RedisValue>& v, const std::string& want) {
  return v.ok() && v->type == RedisValue::Type::kString && v->str == want;
}

bool IsMoved(const absl::StatusOr<RedisValue>& v) {
  return v.ok() && v->is_error() && v->str.rfind("MOVED ", 0) == 0;
}

absl::StatusOr<RedisValue> EvalAndWait(RedisPipeline& pipe, const RedisScript& script,
                                       std::vector<std::string> keys, std::vector<std::string> args) {
  std::promise<absl::StatusOr<RedisValue>> done;
  pipe.Eval(script, std::move(keys), std::move(args),
            [&](absl::StatusOr<RedisValue> v) { done.set_value(std::move(v)); });
  return done.get_future().get();
}

// Sets KEYS[1] to ARGV[1]; returns {ARGV[1], INCR KEYS[2]}.
const RedisScript& SetAndCount() {
  static const RedisScript* s = new RedisScript(
      "redis.call('SET', KEYS[1], ARGV[1]) return {ARGV[1], redis.call('INCR', KEYS[2])}");
  return *s;
}

// GET of every key, joined by ','; a missing key is '-'.
const RedisScript& GetAll() {
  static const RedisScript* s = new RedisScript(
      "local out = {} for i, k in ipairs(KEYS) do out[i] = redis.call('GET', k) or '-' end "
      "return table.concat(out, ',')");
  return *s;
}

class RedisClusterClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const absl::Time t0 = absl::Now();
    auto started = RedisCluster::Start();
    if (!started.ok()) {
      *start_error_ = started.status().ToString();
      return;
    }
    cluster_ = started->release();
    std::cout << "cluster of " << cluster_->size() << " nodes healthy in "
              << absl::ToDoubleSeconds(absl::Now() - t0) << " s; seeds " << cluster_->seed_list() << "\n";
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(cluster_, nullptr) << *start_error_;
    absl::Status healthy = cluster_->WaitHealthy();
    ASSERT_TRUE(healthy.ok()) << healthy;
    absl::Status flushed = cluster_->FlushAll();
    ASSERT_TRUE(flushed.ok()) << flushed;
    masters_ = cluster_->Masters();
    ASSERT_EQ(masters_.size(), 3u);
  }

  RedisCluster& cluster() { return *cluster_; }

  // A slot the master owns (searched from `start`, in steps of 97).
  int SlotOf(int master, int start = 0) {
    for (int i = 0; i < 16384 / 97 + 1; ++i) {
      const int slot = (start + i * 97) % 16384;
      absl::StatusOr<int> owner = cluster_->MasterOfSlot(slot);
      if (owner.ok() && *owner == master) return slot;
    }
    ADD_FAILURE() << "no slot found for master " << master;
    return 0;
  }

  int OtherMaster(int master) const {
    for (int m : masters_) {
      if (m != master) return m;
    }
    return -1;
  }

  static RedisCluster* cluster_;
  static std::string* start_error_;
  std::vector<int> masters_;
};

RedisCluster* RedisClusterClientTest::cluster_ = nullptr;
std::string* RedisClusterClientTest::start_error_ = new std::string("cluster not started");

// ----------------------------------------------------------------------------

TEST_F(RedisClusterClientTest, CommandsLandOnTheMasterOfTheirSlot) {
  RedisPool pool(cluster().options());
  for (int m : masters_) {
    const std::string tag = KeyTagForSlot(SlotOf(m, 1000 + 77 * m), "land");
    const std::string key = tag + ":k";
    const std::string value = absl::StrCat("on-node-", m);
    auto set = pool.Command({"SET", key, value});
    ASSERT_TRUE(IsOkStatus(set)) << "SET " << key << ": " << Describe(set);
    EXPECT_TRUE(IsString(cluster().NodeCommand(m, {"GET", key}), value)) << key << " is not on its master " << m;
    for (int other : masters_) {
      if (other == m) continue;
      auto there = cluster().NodeCommand(other, {"GET", key});
      EXPECT_TRUE(IsMoved(there)) << key << " on node " << other << ": " << Describe(there);
    }
    auto get = pool.Command({"GET", key});
    EXPECT_TRUE(IsString(get, value)) << "GET " << key << ": " << Describe(get);
    // Several keys of one hash tag in one command.
    auto mset = pool.Command({"MSET", tag + ":a", "1", tag + ":b", "2"});
    EXPECT_TRUE(IsOkStatus(mset)) << Describe(mset);
    auto mget = pool.Command({"MGET", tag + ":a", tag + ":b", tag + ":none"});
    ASSERT_TRUE(mget.ok() && mget->is_array() && mget->elements.size() == 3) << Describe(mget);
    EXPECT_EQ(mget->elements[0].str, "1");
    EXPECT_EQ(mget->elements[1].str, "2");
    EXPECT_TRUE(mget->elements[2].is_nil());
    auto on_node = cluster().NodeCommand(m, {"EXISTS", tag + ":a", tag + ":b"});
    EXPECT_TRUE(on_node.ok() && on_node->integer == 2) << Describe(on_node);
  }
  // Keyless commands go to some master.
  EXPECT_TRUE(pool.Ping().ok());
  absl::Status ready = pool.Ready();
  EXPECT_TRUE(ready.ok()) << ready;
  auto pong = pool.Command({"PING"});
  EXPECT_TRUE(pong.ok() && pong->str == "PONG") << Describe(pong);
}

TEST_F(RedisClusterClientTest, PoolPipelineAcrossSlotsAnswersInOrder) {
  RedisPool pool(cluster().options());
  std::vector<std::string> tags;
  for (int m : masters_) tags.push_back(KeyTagForSlot(SlotOf(m, 3000 + 131 * m), "pipe"));
  // Interleaved over the three masters: SETs, then INCRs and GETs in an
  // order unlike the SETs'.
  std::vector<std::vector<std::string>> commands;
  std::vector<std::string> want;  // each reply, as DebugString-free text
  constexpr int kKeys = 30;
  for (int i = 0; i < kKeys; ++i) {
    commands.push_back({"SET", absl::StrCat(tags[static_cast<size_t>(i % 3)], ":k", i), absl::StrCat("v", i)});
    want.push_back("OK");
  }
  for (int i = kKeys - 1; i >= 0; --i) {
    commands.push_back({"INCR", absl::StrCat(tags[static_cast<size_t>(i % 3)], ":n")});
    want.push_back(absl::StrCat(kKeys / 3 - i / 3));  // 1..10 per tag, counting down i
    commands.push_back({"GET", absl::StrCat(tags[static_cast<size_t>(i % 3)], ":k", i)});
    want.push_back(absl::StrCat("v", i));
  }
  auto replies = pool.Pipeline(commands);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), commands.size());
  for (size_t j = 0; j < commands.size(); ++j) {
    const RedisValue& r = (*replies)[j];
    const std::string got = r.type == RedisValue::Type::kInteger ? absl::StrCat(r.integer) : r.str;
    EXPECT_EQ(got, want[j]) << "reply " << j << " to " << commands[j][0] << " " << commands[j][1] << ": "
                            << r.DebugString();
  }
  for (int i = 0; i < kKeys; ++i) {
    const int m = masters_[static_cast<size_t>(i % 3)];
    const std::string key = absl::StrCat(tags[static_cast<size_t>(i % 3)], ":k", i);
    EXPECT_TRUE(IsString(cluster().NodeCommand(m, {"GET", key}), absl::StrCat("v", i))) << key << " not on node " << m;
  }
}

TEST_F(RedisClusterClientTest, RedisPipelineRoutesEveryCallAndAnswersItsOwnCallback) {
  RedisPipeline pipe(cluster().options(), /*threads=*/1);
  std::vector<std::string> tags;
  for (int m : masters_) tags.push_back(KeyTagForSlot(SlotOf(m, 5000 + 59 * m), "rp"));
  constexpr int kCalls = 300;
  std::mutex mu;
  std::map<int, std::vector<long long>> counts_by_tag;  // in callback order
  std::vector<std::promise<std::string>> answers(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    const int t = i % 3;
    pipe.Eval(SetAndCount(), {absl::StrCat(tags[static_cast<size_t>(t)], ":k", i), tags[static_cast<size_t>(t)] + ":n"},
              {absl::StrCat("call-", i)}, [&, i, t](absl::StatusOr<RedisValue> v) {
                if (!v.ok() || !v->is_array() || v->elements.size() != 2) {
                  answers[static_cast<size_t>(i)].set_value("bad: " + Describe(v));
                  return;
                }
                {
                  std::lock_guard<std::mutex> lock(mu);
                  counts_by_tag[t].push_back(v->elements[1].integer);
                }
                answers[static_cast<size_t>(i)].set_value(v->elements[0].str);
              });
  }
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(answers[static_cast<size_t>(i)].get_future().get(), absl::StrCat("call-", i)) << "call " << i;
  }
  // Calls of one slot run in the order they were queued.
  for (int t = 0; t < 3; ++t) {
    std::vector<long long> want(kCalls / 3);
    for (size_t k = 0; k < want.size(); ++k) want[k] = static_cast<long long>(k) + 1;
    EXPECT_EQ(counts_by_tag[t], want) << "INCR answers of tag " << tags[static_cast<size_t>(t)];
    const int m = masters_[static_cast<size_t>(t)];
    EXPECT_TRUE(IsString(cluster().NodeCommand(m, {"GET", tags[static_cast<size_t>(t)] + ":n"}),
                         absl::StrCat(kCalls / 3)))
        << "counter of " << tags[static_cast<size_t>(t)] << " not on node " << m;
  }
}

TEST_F(RedisClusterClientTest, EvalWithKeysOfOneSlotRunsOnItsMaster) {
  RedisPool pool(cluster().options());
  for (int m : masters_) {
    const std::string tag = KeyTagForSlot(SlotOf(m, 7000 + 211 * m), "ev");
    // The script is new to this master: EVALSHA answers NOSCRIPT, then EVAL.
    auto v = pool.Eval(SetAndCount(), {tag + ":a", tag + ":n"}, {absl::StrCat("x", m)});
    ASSERT_TRUE(v.ok() && v->is_array() && v->elements.size() == 2) << Describe(v);
    EXPECT_EQ(v->elements[0].str, absl::StrCat("x", m));
    EXPECT_EQ(v->elements[1].integer, 1);
    v = pool.Eval(SetAndCount(), {tag + ":b", tag + ":n"}, {"y"});
    ASSERT_TRUE(v.ok() && v->is_array() && v->elements.size() == 2) << Describe(v);
    EXPECT_EQ(v->elements[1].integer, 2);
    auto all = pool.Eval(GetAll(), {tag + ":a", tag + ":b", tag + ":c"}, {});
    EXPECT_TRUE(IsString(all, absl::StrCat("x", m, ",y,-"))) << Describe(all);
    EXPECT_TRUE(IsString(cluster().NodeCommand(m, {"GET", tag + ":n"}), "2"));
  }
}

TEST_F(RedisClusterClientTest, MovedAfterASlotMovedIsFollowedAndTheMapRefreshed) {
  RedisPool pool(cluster().options());
  RedisPipeline pipe(cluster().options());
  const int from = masters_[0];
  const int to = OtherMaster(from);
  const int slot = SlotOf(from, 9000);
  const std::string tag = KeyTagForSlot(slot, "mv");
  constexpr int kKeys = 20;
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(IsOkStatus(pool.Command({"SET", absl::StrCat(tag, ":k", i), absl::StrCat("v", i)})));
  }
  auto warm = EvalAndWait(pipe, SetAndCount(), {tag + ":p", tag + ":n"}, {"warm"});  // the pipeline knows the slot
  ASSERT_TRUE(warm.ok()) << warm.status();

  auto moved_keys = cluster().MigrateSlot(slot, from, to);
  ASSERT_TRUE(moved_keys.ok()) << moved_keys.status();
  EXPECT_EQ(*moved_keys, kKeys + 2);
  ASSERT_EQ(*cluster().MasterOfSlot(slot), to);

  auto moved_before = cluster().ErrorCount(from, "MOVED");
  ASSERT_TRUE(moved_before.ok()) << moved_before.status();
  for (int i = 0; i < kKeys; ++i) {
    auto v = pool.Command({"GET", absl::StrCat(tag, ":k", i)});
    EXPECT_TRUE(IsString(v, absl::StrCat("v", i))) << "GET " << tag << ":k" << i << " after the move: " << Describe(v);
  }
  auto set = pool.Command({"SET", tag + ":new", "after-move"});
  EXPECT_TRUE(IsOkStatus(set)) << Describe(set);
  EXPECT_TRUE(IsString(cluster().NodeCommand(to, {"GET", tag + ":new"}), "after-move"));
  auto moved_after = cluster().ErrorCount(from, "MOVED");
  ASSERT_TRUE(moved_after.ok());
  std::cout << "RedisPool: " << kKeys + 1 << " calls on the moved slot drew " << *moved_after - *moved_before
            << " MOVED from the old owner\n";
  EXPECT_LE(*moved_after - *moved_before, 1) << "the pool keeps sending the moved slot to its old owner";

  // The pipeline, warmed before the move, follows too (and the new owner
  // does not know the script yet: NOSCRIPT, then EVAL).
  const long long pipe_moved_before = *cluster().ErrorCount(from, "MOVED");
  for (int i = 0; i < 5; ++i) {
    auto v = EvalAndWait(pipe, SetAndCount(), {absl::StrCat(tag, ":p", i), tag + ":n"}, {absl::StrCat("p", i)});
    ASSERT_TRUE(v.ok() && v->is_array() && v->elements.size() == 2) << "pipeline call " << i << ": " << Describe(v);
    EXPECT_EQ(v->elements[1].integer, 2 + i);
  }
  const long long pipe_moved = *cluster().ErrorCount(from, "MOVED") - pipe_moved_before;
  std::cout << "RedisPipeline: 5 calls on the moved slot drew " << pipe_moved << " MOVED\n";
  EXPECT_LE(pipe_moved, 1) << "the pipeline keeps sending the moved slot to its old owner";
  EXPECT_TRUE(IsString(cluster().NodeCommand(to, {"GET", tag + ":n"}), "6"));
}

TEST_F(RedisClusterClientTest, AskDuringAMigrationIsFollowedWithoutChangingTheMap) {
  RedisOptions options = cluster().options();
  options.command_timeout = absl::Seconds(10);
  RedisPool pool(options);
  RedisPipeline pipe(options);
  const int from = masters_[1];
  const int to = OtherMaster(from);
  const int slot = SlotOf(from, 11000);
  const std::string tag = KeyTagForSlot(slot, "ask");
  auto key = [&](int i) { return absl::StrCat(tag, ":k", i); };
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(IsOkStatus(pool.Command({"SET", key(i), absl::StrCat("v", i)})));
  auto warm = EvalAndWait(pipe, GetAll(), {key(9)}, {});
  ASSERT_TRUE(IsString(warm, "v9")) << Describe(warm);

  // Paused midway: k0..k4 on the target, k5..k9 still on the source.
  ASSERT_TRUE(cluster().BeginMigration(slot, from, to).ok());
  ASSERT_TRUE(cluster().MigrateKeysNamed(slot, from, to, {key(0), key(1), key(2), key(3), key(4)}).ok());
  const long long ask_before = *cluster().ErrorCount(from, "ASK");
  const long long to_moved_before = *cluster().ErrorCount(to, "MOVED");

  int asked = 0;  // calls that must draw one ASK each
  for (int i = 0; i < 10; ++i) {
    auto v = pool.Command({"GET", key(i)});
    EXPECT_TRUE(IsString(v, absl::StrCat("v", i))) << "GET " << key(i) << (i < 5 ? " (moved)" : " (not moved)")
                                                    << ": " << Describe(v);
    if (i < 5) ++asked;
  }
  // A new key goes to the target.
  auto set = pool.Command({"SET", key(10), "new"});
  EXPECT_TRUE(IsOkStatus(set)) << Describe(set);
  ++asked;
  // One-key scripts on a moved key: the target does not know the script
  // (NOSCRIPT after ASKING), so EVAL, after ASKING again.
  auto one = pool.Eval(GetAll(), {key(1)}, {});
  EXPECT_TRUE(IsString(one, "v1")) << "Eval on a moved key: " << Describe(one);
  ++asked;
  auto piped = EvalAndWait(pipe, GetAll(), {key(2)}, {});
  EXPECT_TRUE(IsString(piped, "v2")) << "RedisPipeline Eval on a moved key: " << Describe(piped);
  ++asked;
  auto piped_here = EvalAndWait(pipe, GetAll(), {key(7)}, {});
  EXPECT_TRUE(IsString(piped_here, "v7")) << "RedisPipeline Eval on a key not moved yet: " << Describe(piped_here);
  // Where the keys are, on the nodes.
  EXPECT_EQ(*cluster().CountKeysInSlot(from, slot), 5);
  EXPECT_EQ(*cluster().CountKeysInSlot(to, slot), 6);

  const long long asks = *cluster().ErrorCount(from, "ASK") - ask_before;
  const long long to_moved = *cluster().ErrorCount(to, "MOVED") - to_moved_before;
  std::cout << asked << " calls on moved keys drew " << asks << " ASK; the target answered " << to_moved
            << " MOVED\n";
  // Each call on a moved key is asked at least once (an Eval whose EVALSHA
  // met NOSCRIPT on the target may be asked again for its EVAL).
  EXPECT_GE(asks, asked) << "calls on moved keys that drew no ASK: the map followed an ASK?";
  EXPECT_LE(asks, asked + 2) << "more ASK than calls on moved keys";
  EXPECT_EQ(to_moved, 0) << "a call went to the importing node without ASKING (the map followed an ASK?)";

  // A script over a moved and a not-yet-moved key draws TRYAGAIN until the
  // slot is done; the client retries it (within command_timeout).
  const long long tryagain_before = *cluster().ErrorCount(from, "TRYAGAIN");
  std::promise<absl::StatusOr<RedisValue>> spanning;
  std::thread caller([&] { spanning.set_value(pool.Eval(GetAll(), {key(0), key(7)}, {})); });
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (*cluster().ErrorCount(from, "TRYAGAIN") == tryagain_before && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_GT(*cluster().ErrorCount(from, "TRYAGAIN"), tryagain_before) << "no TRYAGAIN seen within 5 s";
  auto rest = cluster().MigrateSlot(slot, from, to);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, 5);
  caller.join();
  auto spanned = spanning.get_future().get();
  EXPECT_TRUE(IsString(spanned, "v0,v7")) << "Eval over both sides of a migration, retried after TRYAGAIN: "
                                          << Describe(spanned);

  // Done: the source answers MOVED now, and the pool follows.
  for (int i = 0; i <= 10; ++i) {
    auto v = pool.Command({"GET", key(i)});
    EXPECT_TRUE(IsString(v, i < 10 ? absl::StrCat("v", i) : "new")) << "GET " << key(i) << ": " << Describe(v);
  }
  auto piped_after = EvalAndWait(pipe, GetAll(), {key(8), key(9)}, {});
  EXPECT_TRUE(IsString(piped_after, "v8,v9")) << Describe(piped_after);
}

TEST_F(RedisClusterClientTest, ScanWalksEveryMasterOnce) {
  RedisPool pool(cluster().options());
  constexpr int kKeys = 600;
  std::set<std::string> want;
  std::vector<std::vector<std::string>> sets;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = absl::StrCat("scan:{", i, "}:x");
    want.insert(key);
    sets.push_back({"SET", key, "1"});
  }
  auto written = pool.Pipeline(sets);
  ASSERT_TRUE(written.ok()) << written.status();
  long long on_nodes = 0;
  for (int m : masters_) {
    auto n = cluster().NodeCommand(m, {"DBSIZE"});
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_GT(n->integer, 100) << "master " << m << " holds too few of the keys";
    on_nodes += n->integer;
  }
  EXPECT_EQ(on_nodes, kKeys);

  std::map<std::string, int> seen;
  std::string cursor = "0";
  int calls = 0;
  do {
    auto v = pool.Command({"SCAN", cursor, "COUNT", "50"});
    ASSERT_TRUE(v.ok() && v->is_array() && v->elements.size() == 2) << Describe(v);
    cursor = v->elements[0].str;
    for (const RedisValue& k : v->elements[1].elements) ++seen[k.str];
    ASSERT_LT(++calls, 10000) << "SCAN does not end";
  } while (cursor != "0");
  std::set<std::string> got;
  int repeated = 0;
  for (const auto& [k, n] : seen) {
    got.insert(k);
    if (n > 1) ++repeated;
  }
  std::cout << "SCAN COUNT 50: " << calls << " calls, " << got.size() << " keys\n";
  EXPECT_EQ(got, want);
  EXPECT_EQ(repeated, 0) << "keys returned more than once (no rehashing happened)";
  EXPECT_GE(calls, 3);

  // With MATCH, through the same walk.
  seen.clear();
  cursor = "0";
  do {
    auto v = pool.Command({"SCAN", cursor, "MATCH", "scan:{1*", "COUNT", "100"});
    ASSERT_TRUE(v.ok() && v->is_array() && v->elements.size() == 2) << Describe(v);
    cursor = v->elements[0].str;
    for (const RedisValue& k : v->elements[1].elements) ++seen[k.str];
  } while (cursor != "0");
  EXPECT_EQ(seen.size(), 111u);  // 1, 10-19, 100-199
}

// A call for a slot that no master serves (every node forgot it: CLUSTER
// DELSLOTS) cannot be placed on a shard; it waits in the routing queue,
// asking the topology again with backoff, and is answered once the slot is
// served again (CLUSTER ADDSLOTS on its old master, which kept the key),
// well within its deadline, instead of failing at once.
TEST_F(RedisClusterClientTest, ACallForASlotWithoutMasterWaitsForTheTopology) {
  const int owner = masters_[1];
  const int slot = SlotOf(owner, 5000);
  const std::string key = KeyTagForSlot(slot, "orphan") + ":k";
  {
    RedisPool pool(cluster().options());
    ASSERT_TRUE(IsOkStatus(pool.Command({"SET", key, "kept"})));
  }
  struct ServeAgain {  // whatever happens below, the slot is served again
    RedisCluster& c;
    int owner;
    int slot;
    bool done = false;
    ~ServeAgain() {
      if (!done) (void)c.NodeCommand(owner, {"CLUSTER", "ADDSLOTS", std::to_string(slot)});
    }
  } serve_again{cluster(), owner, slot};
  for (int n = 0; n < cluster().size(); ++n) {
    auto r = cluster().NodeCommand(n, {"CLUSTER", "DELSLOTS", std::to_string(slot)});
    ASSERT_TRUE(IsOkStatus(r)) << "node " << n << ": " << Describe(r);
  }

  RedisOptions options = cluster().options();
  options.command_timeout = absl::Seconds(30);
  RedisPipeline pipe(options);
  std::promise<absl::StatusOr<RedisValue>> answer;
  std::future<absl::StatusOr<RedisValue>> answered = answer.get_future();
  pipe.Command({"GET", key}, [&](absl::StatusOr<RedisValue> v) { answer.set_value(std::move(v)); });
  // The router found no master for the slot and keeps the call.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  bool waiting = false;
  while (!(waiting = pipe.waiting_for_topology() == 1) &&
         answered.wait_for(std::chrono::seconds(0)) != std::future_status::ready && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));  // polling a condition, bounded
  }
  ASSERT_NE(answered.wait_for(std::chrono::seconds(0)), std::future_status::ready)
      << "answered while no master serves the slot: " << Describe(answered.get());
  ASSERT_TRUE(waiting) << "the call never waited in the routing queue";

  // A call with a short deadline waiting for the same slot is answered by
  // that deadline (tried again no later than it), UNAVAILABLE.
  {
    RedisOptions short_options = cluster().options();
    short_options.command_timeout = absl::Milliseconds(300);
    RedisPipeline short_pipe(short_options);
    std::promise<absl::StatusOr<RedisValue>> short_answer;
    short_pipe.Command({"GET", key},
                       [&](absl::StatusOr<RedisValue> v) { short_answer.set_value(std::move(v)); });
    auto r = short_answer.get_future().get();
    ASSERT_FALSE(r.ok()) << Describe(r);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
    EXPECT_EQ(short_pipe.timed_out_waiting_for_topology(), 1u) << "not answered by the deadline of its wait";
    EXPECT_EQ(short_pipe.waiting_for_topology(), 0u);
  }
  EXPECT_EQ(pipe.timed_out_waiting_for_topology(), 0u);

  auto added = cluster().NodeCommand(owner, {"CLUSTER", "ADDSLOTS", std::to_string(slot)});
  ASSERT_TRUE(IsOkStatus(added)) << Describe(added);
  serve_again.done = true;
  auto v = answered.get();
  EXPECT_TRUE(IsString(v, "kept")) << Describe(v);
  EXPECT_EQ(pipe.waiting_for_topology(), 0u);
  EXPECT_EQ(pipe.live_shards(), 1);
  // Calls for every master still work (the whole cluster was down while the
  // slot had no master).
  for (int m : masters_) {
    const std::string k = KeyTagForSlot(SlotOf(m, 700), "after") + ":k";
    std::promise<absl::StatusOr<RedisValue>> set;
    pipe.Command({"SET", k, "v"}, [&](absl::StatusOr<RedisValue> r) { set.set_value(std::move(r)); });
    auto r = set.get_future().get();
    EXPECT_TRUE(IsOkStatus(r)) << "master " << m << ": " << Describe(r);
  }
  EXPECT_EQ(pipe.live_shards(), 3);
  ASSERT_TRUE(cluster().WaitHealthy().ok());
}

// Last: a master dies. Calls on its slots fail UNAVAILABLE/STORAGE_UNAVAILABLE
// until its replica is promoted, then succeed; acknowledged writes survive.
TEST_F(RedisClusterClientTest, MasterKillFailsUnavailableThenSucceedsOnThePromotedReplica) {
  RedisOptions options = cluster().options();
  // Short enough that a call made right after the kill ends before the
  // failover (node timeout 1 s, then an election).
  options.command_timeout = absl::Milliseconds(400);
  options.connect_timeout = absl::Milliseconds(400);
  RedisPool pool(options);
  RedisPipeline pipe(options);
  const int victim = masters_[2];
  const std::string tag = KeyTagForSlot(SlotOf(victim, 13000), "kill");
  const std::string other_tag = KeyTagForSlot(SlotOf(masters_[0], 200), "alive");
  ASSERT_TRUE(IsOkStatus(pool.Command({"SET", tag + ":kept", "before"})));
  ASSERT_TRUE(IsOkStatus(pool.Command({"SET", other_tag + ":kept", "before"})));
  auto warm = EvalAndWait(pipe, GetAll(), {tag + ":kept"}, {});
  ASSERT_TRUE(IsString(warm, "before")) << Describe(warm);
  ASSERT_TRUE(cluster().WaitReplicasCaughtUp(victim).ok());
  const std::vector<int> replicas = cluster().ReplicasOf(victim);
  ASSERT_EQ(replicas.size(), 1u);

  ASSERT_TRUE(cluster().Kill9(victim).ok());
  const absl::Time killed = absl::Now();
  auto first = pool.Command({"SET", tag + ":k", "during"});
  EXPECT_FALSE(first.ok()) << "a write to a dead master's slot succeeded: " << Describe(first);
  if (!first.ok()) {
    EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable) << first.status();
    EXPECT_EQ(ErrorReason(first.status()), "STORAGE_UNAVAILABLE") << first.status();
  }
  auto piped = EvalAndWait(pipe, SetAndCount(), {tag + ":p", tag + ":n"}, {"during"});
  EXPECT_FALSE(piped.ok()) << Describe(piped);
  if (!piped.ok()) {
    EXPECT_EQ(piped.status().code(), absl::StatusCode::kUnavailable) << piped.status();
    EXPECT_EQ(ErrorReason(piped.status()), "STORAGE_UNAVAILABLE") << piped.status();
  }

  // One queue per shard: while the dead master's calls retry (up to 5 s
  // here, until the failover), calls for a live master are answered. The
  // live call is enqueued by the callback of another live call that was
  // enqueued after the dead one, i.e. while the dead one is retried: with
  // one queue for all shards it would wait behind those retries.
  {
    RedisOptions patient = options;
    patient.command_timeout = absl::Seconds(5);
    RedisPipeline shards(patient, /*threads=*/1);
    std::promise<absl::StatusOr<RedisValue>> warm_live;
    shards.Command({"GET", other_tag + ":kept"}, [&](absl::StatusOr<RedisValue> v) { warm_live.set_value(v); });
    ASSERT_TRUE(IsString(warm_live.get_future().get(), "before"));
    std::mutex mu;
    std::vector<std::string> order;
    std::promise<void> both;
    absl::StatusOr<RedisValue> dead_reply = absl::UnknownError("unset"), live_reply = absl::UnknownError("unset");
    auto record = [&](const std::string& who) {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(who);
      if (order.size() == 2) both.set_value();
    };
    shards.Command({"SET", tag + ":shard", "during"}, [&](absl::StatusOr<RedisValue> v) {
      dead_reply = std::move(v);
      record("dead shard");
    });
    shards.Command({"GET", other_tag + ":kept"}, [&](absl::StatusOr<RedisValue>) {
      shards.Command({"GET", other_tag + ":kept"}, [&](absl::StatusOr<RedisValue> v) {
        live_reply = std::move(v);
        record("live shard");
      });
    });
    ASSERT_EQ(both.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
    EXPECT_EQ(order, (std::vector<std::string>{"live shard", "dead shard"}));
    EXPECT_TRUE(IsString(live_reply, "before")) << Describe(live_reply);
    // The dead shard's call: written on the promoted replica, or UNAVAILABLE.
    EXPECT_TRUE(IsOkStatus(dead_reply) || (!dead_reply.ok() && ErrorReason(dead_reply.status()) == "STORAGE_UNAVAILABLE"))
        << Describe(dead_reply);
  }

  // Retry until it works; every failure meanwhile is the retryable one.
  int failures = 0, other_failures = 0;
  absl::Time pool_ok = absl::InfinitePast();
  const absl::Time deadline = killed + absl::Seconds(60);
  while (absl::Now() < deadline) {
    auto v = pool.Command({"SET", tag + ":k", "after"});
    if (v.ok()) {
      EXPECT_TRUE(IsOkStatus(v)) << Describe(v);
      pool_ok = absl::Now();
      break;
    }
    ++failures;
    if ((v.status().code() != absl::StatusCode::kUnavailable ||
         ErrorReason(v.status()) != "STORAGE_UNAVAILABLE") &&
        ++other_failures <= 5) {
      ADD_FAILURE() << "during the failover: " << v.status();
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_NE(pool_ok, absl::InfinitePast()) << "no successful write within 60 s of the kill";
  absl::Time pipe_ok = absl::InfinitePast();
  while (absl::Now() < deadline) {
    auto v = EvalAndWait(pipe, SetAndCount(), {tag + ":p", tag + ":n"}, {"after"});
    if (v.ok()) {
      pipe_ok = absl::Now();
      break;
    }
    EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable) << v.status();
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_NE(pipe_ok, absl::InfinitePast()) << "no successful pipeline call within 60 s of the kill";
  std::cout << "kill -9 of master node " << victim << ": RedisPool writes succeed again after "
            << absl::ToDoubleSeconds(pool_ok - killed) << " s (" << failures
            << " UNAVAILABLE answers before), RedisPipeline after " << absl::ToDoubleSeconds(pipe_ok - killed)
            << " s\n";
  EXPECT_EQ(other_failures, 0);

  auto successor = cluster().WaitForFailover(victim);
  ASSERT_TRUE(successor.ok()) << successor.status();
  EXPECT_EQ(*successor, replicas[0]);
  EXPECT_TRUE(IsString(cluster().NodeCommand(*successor, {"GET", tag + ":k"}), "after"));
  EXPECT_TRUE(IsString(pool.Command({"GET", tag + ":kept"}), "before")) << "acknowledged write lost";
  EXPECT_TRUE(IsString(pool.Command({"GET", other_tag + ":kept"}), "before"));

  // Bring the old master back (a replica now) for whatever runs next.
  ASSERT_TRUE(cluster().Restart(victim).ok());
  absl::Status healthy = cluster().WaitHealthy();
  ASSERT_TRUE(healthy.ok()) << healthy;
  EXPECT_TRUE(IsString(pool.Command({"GET", tag + ":k"}), "after"));
}

}  // namespace
}  // namespace labshare
