#include "common/redis_pipeline.h"

#include <gtest/gtest.h>

#include <future>
#include <set>

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

}  // namespace
}  // namespace labshare
