#include "common/redis.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/log.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

using Type = RedisValue::Type;

constexpr char kUnavailableMessage[] = "storage is unavailable; retry the request";

// The shared server with no data in it.
testing::RedisServer* FreshServer() {
  testing::RedisServer* server = testing::SharedRedisServer();
  if (server != nullptr) testing::FlushAll(*server);
  return server;
}

void ExpectUnavailable(const absl::Status& status) {
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(ErrorReason(status), "STORAGE_UNAVAILABLE");
  EXPECT_EQ(status.message(), kUnavailableMessage);
}

TEST(RedisPool, BinaryValuesRoundTrip) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  const std::string key("k\0ey", 4);
  std::string value("a\0b\r\n", 5);
  for (int c = 0; c < 256; ++c) value.push_back(static_cast<char>(c));

  auto set = pool.Command({"SET", key, value});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, Type::kStatus);
  EXPECT_EQ(set->str, "OK");

  auto get = pool.Command({"GET", key});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->type, Type::kString);
  EXPECT_EQ(get->str, value);

  auto len = pool.Command({"STRLEN", key});
  ASSERT_TRUE(len.ok()) << len.status();
  EXPECT_EQ(len->integer, static_cast<long long>(value.size()));
  // The key was not cut at its NUL byte.
  auto truncated = pool.Command({"EXISTS", "k"});
  ASSERT_TRUE(truncated.ok()) << truncated.status();
  EXPECT_EQ(truncated->integer, 0);
}

TEST(RedisPool, ConvertsEveryReplyType) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());

  auto integer = pool.Command({"INCRBY", "n", "41"});
  ASSERT_TRUE(integer.ok()) << integer.status();
  EXPECT_EQ(integer->type, Type::kInteger);
  EXPECT_EQ(integer->integer, 41);

  auto status = pool.Command({"SET", "s", "v"});
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->type, Type::kStatus);
  EXPECT_EQ(status->str, "OK");

  auto nil = pool.Command({"GET", "missing"});
  ASSERT_TRUE(nil.ok()) << nil.status();
  EXPECT_TRUE(nil->is_nil());

  ASSERT_TRUE(pool.Command({"RPUSH", "l", "a", "b"}).ok());
  auto array = pool.Command({"LRANGE", "l", "0", "-1"});
  ASSERT_TRUE(array.ok()) << array.status();
  ASSERT_EQ(array->type, Type::kArray);
  ASSERT_EQ(array->elements.size(), 2u);
  EXPECT_EQ(array->elements[0].type, Type::kString);
  EXPECT_EQ(array->elements[0].str, "a");
  EXPECT_EQ(array->elements[1].str, "b");

  // An error reply is a value, not a failed call.
  auto error = pool.Command({"LPUSH", "s", "x"});
  ASSERT_TRUE(error.ok()) << error.status();
  EXPECT_TRUE(error->is_error());
  EXPECT_EQ(error->str.rfind("WRONGTYPE", 0), 0u) << error->str;

  // Nested arrays; Lua false becomes nil.
  auto nested = pool.Command({"EVAL", "return {1, {2, 'x'}, false}", "0"});
  ASSERT_TRUE(nested.ok()) << nested.status();
  ASSERT_EQ(nested->type, Type::kArray) << nested->DebugString();
  ASSERT_EQ(nested->elements.size(), 3u);
  EXPECT_EQ(nested->elements[0].integer, 1);
  ASSERT_EQ(nested->elements[1].type, Type::kArray);
  ASSERT_EQ(nested->elements[1].elements.size(), 2u);
  EXPECT_EQ(nested->elements[1].elements[0].integer, 2);
  EXPECT_EQ(nested->elements[1].elements[1].str, "x");
  EXPECT_TRUE(nested->elements[2].is_nil());
}

TEST(RedisPool, ErrorInsideTransactionIsAnErrorElement) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  auto replies =
      pool.Pipeline({{"MULTI"}, {"SET", "s", "v"}, {"LPUSH", "s", "x"}, {"EXEC"}});
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 4u);
  EXPECT_EQ((*replies)[1].str, "QUEUED");
  const RedisValue& exec = (*replies)[3];
  ASSERT_EQ(exec.type, Type::kArray) << exec.DebugString();
  ASSERT_EQ(exec.elements.size(), 2u);
  EXPECT_EQ(exec.elements[0].type, Type::kStatus);
  EXPECT_TRUE(exec.elements[1].is_error());
}

TEST(RedisValue, AsStringAndAsInteger) {
  RedisValue status;
  status.type = Type::kStatus;
  status.str = "OK";
  EXPECT_EQ(*status.AsString(), "OK");

  RedisValue counter;
  counter.type = Type::kString;
  counter.str = "-42";
  EXPECT_EQ(*counter.AsInteger(), -42);

  RedisValue integer;
  integer.type = Type::kInteger;
  integer.integer = 7;
  EXPECT_EQ(*integer.AsInteger(), 7);
  EXPECT_EQ(integer.AsString().status().code(), absl::StatusCode::kInternal);

  RedisValue not_a_number;
  not_a_number.type = Type::kString;
  not_a_number.str = "4x";
  auto bad = not_a_number.AsInteger();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrorReason(bad.status()), "STORAGE_ERROR");

  RedisValue nil;
  EXPECT_EQ(nil.AsInteger().status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(nil.AsString().status().code(), absl::StatusCode::kInternal);
}

TEST(RedisPool, PipelineKeepsOrder) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  std::vector<std::vector<std::string>> commands;
  for (int i = 0; i < 100; ++i) {
    commands.push_back({"SET", "k" + std::to_string(i), "v" + std::to_string(i)});
    commands.push_back({"GET", "k" + std::to_string(i)});
    commands.push_back({"INCR", "counter"});
  }
  commands.push_back({"LPUSH", "k0", "x"});  // an error reply keeps its place
  commands.push_back({"GET", "k99"});

  auto replies = pool.Pipeline(commands);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), commands.size());
  for (int i = 0; i < 100; ++i) {
    const size_t at = static_cast<size_t>(3 * i);
    EXPECT_EQ((*replies)[at].str, "OK");
    EXPECT_EQ((*replies)[at + 1].str, "v" + std::to_string(i));
    EXPECT_EQ((*replies)[at + 2].integer, i + 1);
  }
  EXPECT_TRUE((*replies)[300].is_error());
  EXPECT_EQ((*replies)[301].str, "v99");
}

TEST(RedisPool, EmptyPipelineAndEmptyCommand) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  auto none = pool.Pipeline({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  // A bug in our code, not the client's request.
  auto empty = pool.Command({});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrorReason(empty.status()), "STORAGE_ERROR");
}

TEST(RedisScript, Sha1MatchesRedis) {
  EXPECT_EQ(RedisScript("").sha1(), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  RedisScript script("return redis.call('GET', KEYS[1])");
  EXPECT_EQ(script.source(), "return redis.call('GET', KEYS[1])");
  auto loaded = pool.Command({"SCRIPT", "LOAD", script.source()});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->str, script.sha1());
}

bool ScriptCached(RedisPool& pool, const RedisScript& script) {
  auto exists = pool.Command({"SCRIPT", "EXISTS", script.sha1()});
  return exists.ok() && exists->elements.size() == 1 && exists->elements[0].integer == 1;
}

TEST(RedisPool, EvalLoadsScriptOnFirstUse) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  ASSERT_TRUE(pool.Command({"SCRIPT", "FLUSH"}).ok());
  RedisScript script("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  ASSERT_FALSE(ScriptCached(pool, script));

  auto first = pool.Eval(script, {"n"}, {"5"});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->integer, 5);
  EXPECT_TRUE(ScriptCached(pool, script));

  auto second = pool.Eval(script, {"n"}, {"5"});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->integer, 10);
}

TEST(RedisPool, RecoversFromNoScript) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  RedisScript script("return {KEYS[1], ARGV[1], ARGV[2]}");
  ASSERT_TRUE(pool.Eval(script, {"k"}, {"a", "b"}).ok());

  ASSERT_TRUE(pool.Command({"SCRIPT", "FLUSH"}).ok());
  auto raw = pool.Command({"EVALSHA", script.sha1(), "0"});
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_TRUE(raw->is_error());
  EXPECT_EQ(raw->str.rfind("NOSCRIPT", 0), 0u) << raw->str;

  const std::string binary("x\0y", 3);
  auto again = pool.Eval(script, {"k"}, {"a", binary});
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->elements.size(), 3u) << again->DebugString();
  EXPECT_EQ(again->elements[0].str, "k");
  EXPECT_EQ(again->elements[1].str, "a");
  EXPECT_EQ(again->elements[2].str, binary);
  EXPECT_TRUE(ScriptCached(pool, script));
}

TEST(RedisPool, ScriptErrorIsInternalStorageErrorWithoutRawText) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  RedisScript raises("return redis.error_reply('secret-detail-42')");
  ::testing::internal::CaptureStderr();
  auto raised = pool.Eval(raises, {}, {});
  FlushLogs();  // warnings are written by the log's own thread
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(raised.status().code(), absl::StatusCode::kInternal) << raised.status();
  EXPECT_EQ(ErrorReason(raised.status()), "STORAGE_ERROR");
  EXPECT_EQ(raised.status().message(), "storage command failed");
  EXPECT_NE(log.find("secret-detail-42"), std::string::npos) << "raw text belongs in the log";

  // A failing redis.call inside the script, too.
  ASSERT_TRUE(pool.Command({"RPUSH", "list", "a"}).ok());
  RedisScript wrong_type("return redis.call('INCR', KEYS[1])");
  auto failed = pool.Eval(wrong_type, {"list"}, {});
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal) << failed.status();
  EXPECT_EQ(ErrorReason(failed.status()), "STORAGE_ERROR");
  EXPECT_EQ(failed.status().message().find("WRONGTYPE"), absl::string_view::npos);
}

TEST(RedisPool, ConcurrentIncrementsAreExact) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisPool pool(server->options());
  constexpr int kThreads = 16;
  constexpr int kIncrements = 1000;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        auto v = pool.Command({"INCR", "counter"});
        if (!v.ok() || v->type != Type::kInteger) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto total = pool.Command({"GET", "counter"});
  ASSERT_TRUE(total.ok()) << total.status();
  EXPECT_EQ(*total->AsInteger(), kThreads * kIncrements);
}

TEST(RedisPool, NeverOpensMoreThanPoolSizeConnections) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisOptions options = server->options();
  options.pool_size = 3;
  RedisPool pool(options);
  std::mutex mu;
  std::set<long long> client_ids;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        // Both on one connection: the id says which one served the INCR.
        auto replies = pool.Pipeline({{"INCR", "counter"}, {"CLIENT", "ID"}});
        if (!replies.ok() || replies->size() != 2) {
          ++failures;
          continue;
        }
        std::lock_guard<std::mutex> lock(mu);
        client_ids.insert((*replies)[1].integer);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(client_ids.size(), 1u);
  EXPECT_LE(client_ids.size(), 3u);
  auto total = pool.Command({"GET", "counter"});
  ASSERT_TRUE(total.ok()) << total.status();
  EXPECT_EQ(*total->AsInteger(), 1600);
}

TEST(RedisPool, CallerWaitsForTheOnlyConnection) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisOptions options = server->options();
  options.pool_size = 1;
  RedisPool pool(options);
  RedisPool observer(server->options());

  absl::StatusOr<std::vector<RedisValue>> blocked;
  std::thread holder([&] { blocked = pool.Pipeline({{"CLIENT", "ID"}, {"BLPOP", "q", "0"}}); });
  // Readiness, not ordering: wait until the holder is parked in BLPOP.
  bool parked = false;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(10);
       !parked && absl::Now() < deadline;) {
    auto clients = observer.Command({"CLIENT", "LIST"});
    parked = clients.ok() && clients->str.find("cmd=blpop") != std::string::npos;
  }
  ASSERT_TRUE(parked);

  absl::StatusOr<RedisValue> waiter_id;
  std::thread waiter([&] { waiter_id = pool.Command({"CLIENT", "ID"}); });
  ASSERT_TRUE(observer.Command({"RPUSH", "q", "x"}).ok());
  holder.join();
  waiter.join();

  ASSERT_TRUE(blocked.ok()) << blocked.status();
  ASSERT_EQ(blocked->size(), 2u);
  ASSERT_EQ((*blocked)[1].elements.size(), 2u) << (*blocked)[1].DebugString();
  EXPECT_EQ((*blocked)[1].elements[1].str, "x");
  ASSERT_TRUE(waiter_id.ok()) << waiter_id.status();
  EXPECT_EQ(waiter_id->integer, (*blocked)[0].integer) << "a second connection was opened";
}

TEST(RedisPool, TimeoutIsUnavailableAndConnectionIsReplaced) {
  testing::RedisServer* server = FreshServer();
  ASSERT_NE(server, nullptr);
  RedisOptions options = server->options();
  options.pool_size = 1;
  options.command_timeout = absl::Milliseconds(200);
  RedisPool pool(options);
  auto before = pool.Command({"CLIENT", "ID"});
  ASSERT_TRUE(before.ok()) << before.status();

  auto timed_out = pool.Command({"BLPOP", "never", "0"});
  ExpectUnavailable(timed_out.status());

  auto after = pool.Command({"CLIENT", "ID"});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_NE(after->integer, before->integer);
}

TEST(RedisPool, UnavailableWhileServerIsDownThenReconnects) {
  auto server = testing::RedisServer::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  RedisOptions options = (*server)->options();
  options.pool_size = 4;
  RedisPool pool(options);
  ASSERT_TRUE(pool.Command({"SET", "k", "v"}).ok());
  ASSERT_TRUE(pool.Ping().ok());

  server->reset();  // SIGTERM and wait: Redis is gone.
  ::testing::internal::CaptureStderr();
  auto down = pool.Command({"GET", "k"});
  FlushLogs();  // warnings are written by the log's own thread
  const std::string log = ::testing::internal::GetCapturedStderr();
  ExpectUnavailable(down.status());
  EXPECT_NE(log.find("redis"), std::string::npos) << "the cause belongs in the log";
  ExpectUnavailable(pool.Ping());
  ExpectUnavailable(pool.Pipeline({{"PING"}}).status());

  auto restarted = testing::RedisServer::StartOnPort(port);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_TRUE(pool.Ping().ok());
  auto set = pool.Command({"SET", "k", "v2"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->str, "OK");
}

TEST(RedisPool, IdleConnectionsSurviveAServerRestart) {
  auto server = testing::RedisServer::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  RedisPool pool((*server)->options());
  ASSERT_TRUE(pool.Ping().ok());  // leaves an idle connection to the old server

  server->reset();
  auto restarted = testing::RedisServer::StartOnPort(port);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  // The closed idle connection is noticed before use; no error reaches us.
  EXPECT_TRUE(pool.Ping().ok());
}

TEST(RedisPool, UnreachableServerIsUnavailable) {
  auto server = testing::RedisServer::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  RedisOptions options = (*server)->options();
  server->reset();
  RedisPool pool(options);
  ExpectUnavailable(pool.Command({"PING"}).status());
  RedisScript script("return 1");
  ExpectUnavailable(pool.Eval(script, {}, {}).status());
}

TEST(ParseRedisAddress, AcceptsHostAndPort) {
  auto local = ParseRedisAddress("127.0.0.1:6379");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->host, "127.0.0.1");
  EXPECT_EQ(local->port, 6379);
  EXPECT_EQ(local->pool_size, RedisOptions().pool_size);

  auto named = ParseRedisAddress("redis.internal:1");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->host, "redis.internal");
  EXPECT_EQ(named->port, 1);

  auto max = ParseRedisAddress("localhost:65535");
  ASSERT_TRUE(max.ok()) << max.status();
  EXPECT_EQ(max->port, 65535);

  auto v6 = ParseRedisAddress("[::1]:6380");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 6380);
}

TEST(ParseRedisAddress, RejectsMalformedAddresses) {
  for (const char* bad : {"", "localhost", ":6379", "host:", "host:0", "host:65536", "host:99999999",
                          "host:12ab", "host:+80", "host:-1", "host: 80", "a:b:1", "::1:6379",
                          "[::1]", "[]:6379", "[host]:6379", "my host:6379"}) {
    auto parsed = ParseRedisAddress(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << "\"" << bad << "\"";
    EXPECT_EQ(ErrorReason(parsed.status()), "INVALID_REDIS_ADDRESS") << "\"" << bad << "\"";
  }
}

}  // namespace
}  // namespace labshare
