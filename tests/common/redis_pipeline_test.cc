#include "common/redis_pipeline.h"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <future>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

const RedisScript& Incr() {
  static const RedisScript* s = new RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  return *s;
}

absl::StatusOr<RedisValue> EvalAndWait(RedisPipeline& pipe, const RedisScript& script,
                                       std::vector<std::string> keys, std::vector<std::string> args) {
  std::promise<absl::StatusOr<RedisValue>> done;
  pipe.Eval(script, std::move(keys), std::move(args),
            [&](absl::StatusOr<RedisValue> v) { done.set_value(std::move(v)); });
  return done.get_future().get();
}

TEST(RedisPipeline, AnswersEveryCallInOrderUnderConcurrency) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisPipeline pipe(server->options(), 2);
  constexpr int kCalls = 2000;
  std::vector<std::promise<long long>> answers(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    pipe.Eval(Incr(), {"{p}:n"}, {"1"}, [&answers, i](absl::StatusOr<RedisValue> v) {
      answers[static_cast<size_t>(i)].set_value(v.ok() ? v->integer : -1);
    });
  }
  std::set<long long> seen;
  for (auto& a : answers) seen.insert(a.get_future().get());
  EXPECT_EQ(seen.size(), static_cast<size_t>(kCalls));  // every increment answered once
  EXPECT_EQ(*seen.begin(), 1);
  EXPECT_EQ(*seen.rbegin(), kCalls);
}

TEST(RedisPipeline, RecoversFromScriptFlush) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisPool pool(server->options());
  ASSERT_TRUE(pool.Command({"SCRIPT", "FLUSH"}).ok());
  RedisPipeline pipe(server->options());
  auto v = EvalAndWait(pipe, Incr(), {"{p}:m"}, {"5"});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->integer, 5);
}

TEST(RedisPipeline, ScriptErrorsAreInternalWithoutRawText) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  RedisPipeline pipe(server->options());
  RedisScript bad("return redis.call('NOSUCHCOMMAND')");
  auto v = EvalAndWait(pipe, bad, {"{p}:x"}, {});
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrorReason(v.status()), "STORAGE_ERROR");
}

TEST(RedisPipeline, UnreachableRedisIsUnavailable) {
  auto redis = testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok());
  RedisOptions options = (*redis)->options();
  redis->reset();
  RedisPipeline pipe(options);
  auto v = EvalAndWait(pipe, Incr(), {"{p}:n"}, {"1"});
  EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrorReason(v.status()), "STORAGE_UNAVAILABLE");
}

absl::StatusOr<RedisValue> CommandAndWait(RedisPipeline& pipe, std::vector<std::string> argv) {
  std::promise<absl::StatusOr<RedisValue>> done;
  pipe.Command(std::move(argv), [&](absl::StatusOr<RedisValue> v) { done.set_value(std::move(v)); });
  return done.get_future().get();
}

absl::StatusOr<std::vector<RedisValue>> PipelineAndWait(RedisPipeline& pipe,
                                                        std::vector<std::vector<std::string>> commands) {
  std::promise<absl::StatusOr<std::vector<RedisValue>>> done;
  pipe.Pipeline(std::move(commands), [&](absl::StatusOr<std::vector<RedisValue>> v) { done.set_value(std::move(v)); });
  return done.get_future().get();
}

TEST(RedisPipeline, CommandsAnswerLikeThePool) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisPipeline pipe(server->options(), 2);
  auto set = CommandAndWait(pipe, {"SET", "{p}:a", std::string("x\0y", 3)});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, RedisValue::Type::kStatus);
  EXPECT_EQ(set->str, "OK");
  auto get = CommandAndWait(pipe, {"GET", "{p}:a"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, std::string("x\0y", 3));  // binary safe
  auto missing = CommandAndWait(pipe, {"GET", "{p}:none"});
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->is_nil());
  // An error reply is a value, as RedisPool::Command answers it.
  auto wrong = CommandAndWait(pipe, {"INCR", "{p}:a"});
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_TRUE(wrong->is_error());
  auto empty = CommandAndWait(pipe, {});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrorReason(empty.status()), "STORAGE_ERROR");
}

// Transaction commands would bind other callers' calls sharing the
// connection: refused unsent, alone or in a group, the rest untouched.
TEST(RedisPipeline, TransactionCommandsAreRefused) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisPipeline pipe(server->options(), 2);
  for (std::vector<std::string> argv : std::vector<std::vector<std::string>>{
           {"MULTI"}, {"exec"}, {"WATCH", "{t}:a"}, {"UNWATCH"}, {"Discard"}}) {
    auto r = CommandAndWait(pipe, argv);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << argv[0];
    EXPECT_EQ(ErrorReason(r.status()), "STORAGE_ERROR") << argv[0];
  }
  std::promise<absl::StatusOr<std::vector<RedisValue>>> group;
  pipe.Pipeline({{"MULTI"}, {"SET", "{t}:a", "1"}, {"EXEC"}},
                [&](absl::StatusOr<std::vector<RedisValue>> v) { group.set_value(std::move(v)); });
  auto g = group.get_future().get();
  EXPECT_EQ(ErrorReason(g.status()), "STORAGE_ERROR");
  // Nothing of the group was sent.
  auto a = CommandAndWait(pipe, {"GET", "{t}:a"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->is_nil());
  // The connections still answer.
  auto set = CommandAndWait(pipe, {"SET", "{t}:a", "2"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->str, "OK");
}

// H2: WAIT's answer concerns the writes only. With no replica (WAIT acks 0
// of 1) a read or a read-only script that shares the batch with a write
// still answers; the write fails with REPLICA_ACK_TIMEOUT.
TEST(RedisPipeline, ReplicaAckTimeoutFailsOnlyTheWritesOfABatch) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  {
    RedisPool pool(server->options());
    ASSERT_TRUE(pool.Command({"SET", "{p}:r", "v"}).ok());
  }
  RedisOptions options = server->options();
  options.wait_replicas = 1;
  options.wait_timeout = absl::Milliseconds(1);
  RedisPipeline pipe(options);
  static const RedisScript* read_only =
      new RedisScript("return redis.call('GET', KEYS[1])", RedisScript::Access::kReadOnly);
  std::vector<RedisPipeline::Request> requests(4);
  requests[0].argv = {"GET", "{p}:r"};
  requests[1].argv = {"SET", "{p}:w", "1"};
  requests[2].script = read_only;
  requests[2].argv = {"{p}:r"};
  requests[2].keys = 1;
  requests[3].script = &Incr();
  requests[3].argv = {"{p}:n", "1"};
  requests[3].keys = 1;
  std::promise<std::vector<absl::StatusOr<RedisValue>>> done;
  pipe.Batch(std::move(requests), [&](std::vector<absl::StatusOr<RedisValue>> v) { done.set_value(std::move(v)); });
  auto replies = done.get_future().get();
  ASSERT_EQ(replies.size(), 4u);
  ASSERT_TRUE(replies[0].ok()) << replies[0].status();
  EXPECT_EQ(replies[0]->str, "v");
  EXPECT_EQ(ErrorReason(replies[1].status()), "STORAGE_UNAVAILABLE");
  EXPECT_EQ(ErrorMetadataOf(replies[1].status())["cause"], "REPLICA_ACK_TIMEOUT");
  ASSERT_TRUE(replies[2].ok()) << replies[2].status();
  EXPECT_EQ(replies[2]->str, "v");
  EXPECT_EQ(ErrorReason(replies[3].status()), "STORAGE_UNAVAILABLE");
  EXPECT_EQ(ErrorMetadataOf(replies[3].status())["cause"], "REPLICA_ACK_TIMEOUT");
  // Alone, a read needs no WAIT at all.
  auto get = CommandAndWait(pipe, {"GET", "{p}:r"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, "v");
}

TEST(RedisPipeline, GroupsAnswerOnceInOrder) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisPipeline pipe(server->options());
  auto replies = PipelineAndWait(pipe, {{"SET", "{p}:g", "1"}, {"INCR", "{p}:g"}, {"HSET", "{q}:h", "f", "v"},
                                        {"GET", "{p}:g"}, {"HMGET", "{q}:h", "f", "nope"}, {"LPOP", "{p}:g"}});
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 6u);
  EXPECT_EQ((*replies)[0].str, "OK");
  EXPECT_EQ((*replies)[1].integer, 2);
  EXPECT_EQ((*replies)[2].integer, 1);
  EXPECT_EQ((*replies)[3].str, "2");
  ASSERT_EQ((*replies)[4].elements.size(), 2u);
  EXPECT_EQ((*replies)[4].elements[0].str, "v");
  EXPECT_TRUE((*replies)[4].elements[1].is_nil());
  EXPECT_TRUE((*replies)[5].is_error());  // WRONGTYPE: a value, as in RedisPool::Pipeline
  auto none = PipelineAndWait(pipe, {});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto bad = PipelineAndWait(pipe, {{"GET", "{p}:g"}, {}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
}

// Callbacks may enqueue more calls (a read that depends on the one before):
// 300 chains of 5 reads each, 64 at a time, all answered.
TEST(RedisPipeline, CallbacksChainFurtherCalls) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisPool pool(server->options());
  ASSERT_TRUE(pool.Command({"SET", "{p}:c0", "{p}:c1"}).ok());
  ASSERT_TRUE(pool.Command({"SET", "{p}:c1", "{p}:c2"}).ok());
  ASSERT_TRUE(pool.Command({"SET", "{p}:c2", "{p}:c3"}).ok());
  ASSERT_TRUE(pool.Command({"SET", "{p}:c3", "{p}:c4"}).ok());
  ASSERT_TRUE(pool.Command({"SET", "{p}:c4", "end"}).ok());
  RedisPipeline pipe(server->options(), 2);
  constexpr int kChains = 300;
  std::vector<std::promise<std::string>> ends(kChains);
  std::function<void(int, std::string, int)> follow = [&](int chain, std::string key, int hops) {
    pipe.Command({"GET", key}, [&, chain, hops](absl::StatusOr<RedisValue> v) {
      if (!v.ok() || v->is_nil()) return ends[static_cast<size_t>(chain)].set_value("failed");
      if (v->str == "end") return ends[static_cast<size_t>(chain)].set_value(absl::StrCat("end after ", hops + 1));
      follow(chain, v->str, hops + 1);
    });
  };
  for (int i = 0; i < kChains; ++i) follow(i, "{p}:c0", 0);
  for (auto& e : ends) EXPECT_EQ(e.get_future().get(), "end after 5");
}

TEST(RedisPipeline, UnreachableRedisFailsCommandsAndGroupsUnavailable) {
  auto redis = testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok());
  RedisOptions options = (*redis)->options();
  redis->reset();
  RedisPipeline pipe(options);
  auto v = CommandAndWait(pipe, {"GET", "{p}:x"});
  EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrorReason(v.status()), "STORAGE_UNAVAILABLE");
  auto g = PipelineAndWait(pipe, {{"GET", "{p}:x"}, {"GET", "{p}:y"}});
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnavailable);
}

// A gate a callback waits at: the shard's one thread stays inside it (its
// queue fills) until the test opens it.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, open = false;
  void Enter() {
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return open; });
  }
  bool WaitEntered() {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(30), [&] { return entered; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    cv.notify_all();
  }
};

// M6: a full queue refuses at once; calls whose deadline passed while
// queued fail without being sent. M4: a group bigger than max_batch goes
// out whole, in order.
TEST(RedisPipeline, FullQueueRefusesAndExpiredCallsAreNotSent) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  testing::FlushAll(*server);
  RedisOptions options = server->options();
  options.command_timeout = absl::Milliseconds(200);
  RedisPipeline pipe(options, 1, /*max_batch=*/2, /*max_queue=*/3);
  Gate gate;
  std::promise<bool> first;
  pipe.Command({"PING"}, [&](absl::StatusOr<RedisValue> v) {
    first.set_value(v.ok());
    gate.Enter();
  });
  ASSERT_TRUE(gate.WaitEntered());
  std::vector<std::promise<absl::StatusOr<RedisValue>>> answers(4);
  for (int i = 0; i < 4; ++i) {
    pipe.Command({"SET", absl::StrCat("{p}:late", i), "1"},
                 [&answers, i](absl::StatusOr<RedisValue> v) { answers[static_cast<size_t>(i)].set_value(std::move(v)); });
  }
  // The fourth did not fit: refused now, while the thread is still held.
  auto refused = answers[3].get_future();
  ASSERT_EQ(refused.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(ErrorReason(refused.get().status()), "STORAGE_UNAVAILABLE");
  // Wait (bounded) until the queued calls' deadline passed, then let go.
  const auto enqueued = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < enqueued + std::chrono::milliseconds(250)) std::this_thread::yield();
  gate.Open();
  EXPECT_TRUE(first.get_future().get());
  for (int i = 0; i < 3; ++i) {
    auto v = answers[static_cast<size_t>(i)].get_future().get();
    EXPECT_EQ(ErrorReason(v.status()), "STORAGE_UNAVAILABLE") << i;
  }
  RedisPool pool(server->options());
  for (int i = 0; i < 4; ++i) {
    auto v = pool.Command({"EXISTS", absl::StrCat("{p}:late", i)});
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->integer, 0) << i;  // never sent
  }
  // A group of 3 (> max_batch) after a single call: answered whole, in order.
  auto group = PipelineAndWait(pipe, {{"RPUSH", "{p}:l", "a"}, {"RPUSH", "{p}:l", "b"}, {"LRANGE", "{p}:l", "0", "-1"}});
  ASSERT_TRUE(group.ok()) << group.status();
  ASSERT_EQ(group->size(), 3u);
  ASSERT_EQ((*group)[2].elements.size(), 2u);
}

// Calls still queued when the pipeline goes are answered UNAVAILABLE, once.
TEST(RedisPipeline, DestructionAnswersEveryCallOnce) {
  auto* server = testing::SharedRedisServer();
  ASSERT_NE(server, nullptr);
  constexpr int kCalls = 1000;
  std::vector<std::atomic<int>> answers(kCalls);  // per call: how often answered
  std::atomic<int> unavailable{0};
  {
    RedisPipeline pipe(server->options(), 1, /*max_batch=*/16);
    // The server holds the first batch's answers (CLIENT PAUSE ends on its
    // own), so the rest is still queued when the pipeline goes.
    RedisPool pool(server->options());
    ASSERT_TRUE(pool.Command({"CLIENT", "PAUSE", "1000", "ALL"}).ok());
    for (int i = 0; i < kCalls; ++i) {
      pipe.Command({"PING"}, [&answers, &unavailable, i](absl::StatusOr<RedisValue> v) {
        answers[static_cast<size_t>(i)].fetch_add(1);
        if (!v.ok()) unavailable.fetch_add(1);
      });
    }
  }
  for (int i = 0; i < kCalls; ++i) EXPECT_EQ(answers[static_cast<size_t>(i)].load(), 1) << i;
  // Whatever was still queued was answered UNAVAILABLE, not sent.
  EXPECT_GT(unavailable.load(), 0);
}

}  // namespace
}  // namespace labshare
