// The Redis ACL of deploy/redis-acl.sh: a redis-server started with the
// generated users.acl refuses the default user, keeps each service's user
// out of the other services' keys and away from commands it does not run,
// and the four real service processes, each under its own user, run a flow
// (inventory seed, a booking and its cancellation, billing and usage
// consuming the events, audit verification) without one refusal (ACL LOG
// empty at the end).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/events.h"
#include "common/outbox_trim.h"
#include "common/proto_util.h"
#include "common/redis.h"
#include "common/redis_pipeline.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "tests/booking/booking_test_cluster.h"
#include "tests/support/redis_server.h"

namespace labshare {
namespace {

using testing::BookingTestCluster;
using testing::BookingTestClusterOptions;
using testing::ChildProcess;
using testing::RedisServer;

const std::vector<std::string> kServices = {"inventory", "booking", "billing", "usage", "notify"};

// Runs deploy/redis-acl.sh into a fresh temporary directory.
class AclDir {
 public:
  AclDir() {
    char tmpl[] = "/tmp/labshare-redis-acl-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return;
    dir_ = std::string(tmpl) + "/acl";
    const std::string cmd = absl::StrCat("bash ", LABSHARE_SOURCE_DIR, "/deploy/redis-acl.sh ", dir_,
                                         " > ", tmpl, "/users.txt");
    status_ = system(cmd.c_str());
    std::ifstream in(std::string(tmpl) + "/users.txt");
    for (std::string line; std::getline(in, line);) users_.push_back(line);
    root_ = tmpl;
  }
  ~AclDir() {
    std::error_code ec;
    if (!root_.empty()) std::filesystem::remove_all(root_, ec);
  }
  bool ok() const { return status_ == 0 && !dir_.empty(); }
  const std::string& dir() const { return dir_; }
  const std::vector<std::string>& users() const { return users_; }
  std::string acl_file() const { return dir_ + "/users.acl"; }
  std::string password_file(const std::string& user) const { return dir_ + "/" + user + ".password"; }
  std::string password(const std::string& user) const {
    std::ifstream in(password_file(user));
    std::string line;
    std::getline(in, line);
    return line;
  }
  RedisOptions As(const RedisServer& server, const std::string& user) const {
    RedisOptions o = server.options();
    o.user = user;
    o.password = password(user);
    o.pool_size = 2;
    return o;
  }

 private:
  std::string root_;
  std::string dir_;
  int status_ = -1;
  std::vector<std::string> users_;
};

bool Denied(const absl::StatusOr<RedisValue>& v) {
  return v.ok() && v->is_error() && absl::StartsWith(v->str, "NOPERM");
}

std::string Describe(const absl::StatusOr<RedisValue>& v) {
  return v.ok() ? v->DebugString() : v.status().ToString();
}

// The ACL LOG as "user: reason object" lines.
std::vector<std::string> AclLog(RedisPool& admin) {
  std::vector<std::string> out;
  absl::StatusOr<RedisValue> log = admin.Command({"ACL", "LOG"});
  if (!log.ok() || !log->is_array()) {
    out.push_back("ACL LOG failed: " + Describe(log));
    return out;
  }
  for (const RedisValue& entry : log->elements) {
    std::map<std::string, std::string> fields;
    for (size_t i = 0; i + 1 < entry.elements.size(); i += 2) {
      fields[entry.elements[i].str] = entry.elements[i + 1].str;
    }
    out.push_back(absl::StrCat(fields["username"], ": ", fields["reason"], " ", fields["object"],
                               " (context ", fields["context"], ")"));
  }
  return out;
}

class RedisAclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(acl_.ok()) << "deploy/redis-acl.sh failed";
    auto server = RedisServer::StartWithUser({"--aclfile", acl_.acl_file()}, "admin", acl_.password("admin"));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    admin_ = std::make_unique<RedisPool>(acl_.As(*server_, "admin"));
  }

  AclDir acl_;
  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<RedisPool> admin_;
};

TEST_F(RedisAclTest, ScriptWritesPrivatePasswordFilesAndListsItsUsers) {
  EXPECT_EQ(acl_.users(), (std::vector<std::string>{"inventory", "booking", "billing", "usage", "notify", "admin",
                                                    "probe", "replication", "sentinel"}));
  std::set<std::string> passwords;
  for (const std::string& user : acl_.users()) {
    const auto perms = std::filesystem::status(acl_.password_file(user)).permissions();
    EXPECT_EQ(perms, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write) << user;
    EXPECT_EQ(acl_.password(user).size(), 64u) << user;
    passwords.insert(acl_.password(user));
  }
  EXPECT_EQ(passwords.size(), acl_.users().size()) << "every user has its own password";
  // The ACL file holds hashes only.
  std::ifstream in(acl_.acl_file());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const std::string& pw : passwords) EXPECT_EQ(text.find(pw), std::string::npos);
  // Running it again keeps the passwords (running services keep working).
  const std::string before = acl_.password("booking");
  ASSERT_EQ(system(absl::StrCat("bash ", LABSHARE_SOURCE_DIR, "/deploy/redis-acl.sh ", acl_.dir(), " >/dev/null").c_str()), 0);
  EXPECT_EQ(acl_.password("booking"), before);
  // Refuses a missing argument.
  EXPECT_NE(system(absl::StrCat("bash ", LABSHARE_SOURCE_DIR, "/deploy/redis-acl.sh 2>/dev/null").c_str()), 0);
}

TEST_F(RedisAclTest, CredentialsComeFromAPrivateFile) {
  RedisOptions o;
  ASSERT_TRUE(LoadRedisCredentials("", "", &o).ok());
  EXPECT_TRUE(o.user.empty() && o.password.empty());
  absl::Status no_file = LoadRedisCredentials("booking", "", &o);
  EXPECT_EQ(no_file.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(no_file), "INVALID_REDIS_CREDENTIALS");
  ASSERT_TRUE(LoadRedisCredentials("booking", acl_.password_file("booking"), &o).ok());
  EXPECT_EQ(o.user, "booking");
  EXPECT_EQ(o.password, acl_.password("booking"));  // without the newline
  o.port = server_->port();
  RedisPool pool(o);
  EXPECT_TRUE(pool.Ping().ok());
  auto whoami = pool.Command({"ACL", "WHOAMI"});
  ASSERT_TRUE(whoami.ok());
  EXPECT_TRUE(Denied(whoami)) << "booking may not run ACL subcommands: " << whoami->DebugString();
  const std::string exposed = acl_.dir() + "/exposed.password";
  std::ofstream(exposed) << acl_.password("booking") << "\n";
  ASSERT_EQ(chmod(exposed.c_str(), 0644), 0);
  EXPECT_EQ(ErrorReason(LoadRedisCredentials("booking", exposed, &o)), "SECRET_FILE_EXPOSED");
  EXPECT_EQ(ErrorReason(LoadRedisCredentials("booking", acl_.dir() + "/missing", &o)), "SECRET_FILE_NOT_FOUND");
  ASSERT_EQ(chmod(exposed.c_str(), 0600), 0);
  std::ofstream(exposed, std::ios::trunc) << "two\nlines\n";
  EXPECT_EQ(ErrorReason(LoadRedisCredentials("booking", exposed, &o)), "INVALID_REDIS_CREDENTIALS");
}

TEST_F(RedisAclTest, DefaultUserIsOff) {
  RedisOptions anonymous = server_->options();
  anonymous.user.clear();
  anonymous.password.clear();
  RedisPool pool(anonymous);
  absl::StatusOr<RedisValue> ping = pool.Command({"PING"});
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_TRUE(ping->is_error() && absl::StartsWith(ping->str, "NOAUTH")) << ping->DebugString();
  absl::StatusOr<RedisValue> auth = pool.Command({"AUTH", "default", "anything"});
  ASSERT_TRUE(auth.ok());
  EXPECT_TRUE(auth->is_error()) << auth->DebugString();
  // A pool with a wrong password cannot connect at all: UNAVAILABLE.
  RedisOptions wrong = acl_.As(*server_, "inventory");
  wrong.password = acl_.password("booking");
  RedisPool bad(wrong);
  EXPECT_EQ(bad.Ping().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(bad.Command({"GET", "{inventory}:x"}).status().code(), absl::StatusCode::kUnavailable);
  // The probe user can PING and nothing else.
  RedisPool probe(acl_.As(*server_, "probe"));
  EXPECT_TRUE(probe.Ping().ok());
  EXPECT_TRUE(Denied(probe.Command({"GET", "{inventory}:x"})));
  EXPECT_TRUE(Denied(probe.Command({"INFO"})));
}

// ACL DRYRUN (Redis 7): "OK" when `user` may run `cmd`, the reason otherwise.
std::string DryRun(RedisPool& admin, const std::string& user, std::vector<std::string> cmd) {
  cmd.insert(cmd.begin(), {"ACL", "DRYRUN", user});
  absl::StatusOr<RedisValue> v = admin.Command(cmd);
  return v.ok() ? v->str : v.status().ToString();
}

// The commands the Redis client sends by itself (Sentinel, WAIT, Redis
// Cluster), and the users replicas and Sentinel connect as: exactly what
// the Redis documentation lists for them, nothing else.
TEST_F(RedisAclTest, ClientTopologyCommandsAndTheReplicationAndSentinelUsers) {
  for (const std::string& service : kServices) {
    SCOPED_TRACE(service);
    for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
             {"ROLE"}, {"WAIT", "1", "1000"}, {"CLUSTER", "SLOTS"}, {"ASKING"}}) {
      EXPECT_EQ(DryRun(*admin_, service, cmd), "OK") << absl::StrJoin(cmd, " ");
    }
    for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
             {"CLUSTER", "NODES"}, {"CLUSTER", "FAILOVER"}, {"READONLY"}, {"INFO"}, {"PSYNC", "?", "-1"}}) {
      EXPECT_NE(DryRun(*admin_, service, cmd), "OK") << absl::StrJoin(cmd, " ");
    }
    // Really sent: a single server answers ROLE and WAIT, and refuses
    // CLUSTER SLOTS for not being a cluster, not for the ACL.
    RedisPool pool(acl_.As(*server_, service));
    auto role = pool.Command({"ROLE"});
    ASSERT_TRUE(role.ok() && role->is_array() && !role->elements.empty()) << Describe(role);
    EXPECT_EQ(role->elements[0].str, "master");
    auto wait = pool.Command({"WAIT", "0", "0"});
    ASSERT_TRUE(wait.ok()) << wait.status();
    EXPECT_EQ(wait->integer, 0);
    auto slots = pool.Command({"CLUSTER", "SLOTS"});
    ASSERT_TRUE(slots.ok()) << slots.status();
    EXPECT_FALSE(Denied(slots)) << Describe(slots);
  }
  // The probe user: PING and ROLE (a starting node asks its peers).
  EXPECT_EQ(DryRun(*admin_, "probe", {"ROLE"}), "OK");
  EXPECT_NE(DryRun(*admin_, "probe", {"INFO"}), "OK");
  // Replicas: PSYNC, REPLCONF, PING.
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"PSYNC", "?", "-1"}, {"REPLCONF", "listening-port", "6380"}, {"PING"}}) {
    EXPECT_EQ(DryRun(*admin_, "replication", cmd), "OK") << absl::StrJoin(cmd, " ");
  }
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"GET", "{billing}:acct:x"}, {"INFO"}, {"SYNC"}, {"CONFIG", "GET", "*"}, {"REPLICAOF", "NO", "ONE"}}) {
    EXPECT_NE(DryRun(*admin_, "replication", cmd), "OK") << absl::StrJoin(cmd, " ");
  }
  // Sentinel: the Redis documentation's "ACL for Sentinel" list, its hello
  // channel only.
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"PING"}, {"INFO"}, {"ROLE"}, {"MULTI"}, {"EXEC"}, {"SLAVEOF", "NO", "ONE"}, {"REPLICAOF", "NO", "ONE"},
           {"CONFIG", "REWRITE"}, {"CLIENT", "SETNAME", "sentinel-x"}, {"CLIENT", "KILL", "TYPE", "normal"},
           {"SCRIPT", "KILL"}, {"SUBSCRIBE", "__sentinel__:hello"}, {"PUBLISH", "__sentinel__:hello", "x"}}) {
    EXPECT_EQ(DryRun(*admin_, "sentinel", cmd), "OK") << absl::StrJoin(cmd, " ");
  }
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"GET", "{billing}:acct:x"}, {"CONFIG", "SET", "appendfsync", "no"}, {"CONFIG", "GET", "*"},
           {"SUBSCRIBE", "other"}, {"PUBLISH", "other", "x"}, {"FLUSHALL"}, {"ACL", "LIST"}, {"PSYNC", "?", "-1"}}) {
    EXPECT_NE(DryRun(*admin_, "sentinel", cmd), "OK") << absl::StrJoin(cmd, " ");
  }
}

TEST_F(RedisAclTest, ConnectionsAuthenticateAgainAfterTheServerDroppedThem) {
  RedisPool pool(acl_.As(*server_, "inventory"));
  ASSERT_TRUE(pool.Command({"SET", "{inventory}:k", "v"}).ok());
  RedisPipeline pipeline(acl_.As(*server_, "booking"), 1, 16);
  static const RedisScript* script = new RedisScript("return redis.call('GET', KEYS[1])");
  auto eval = [&](const std::string& key) {
    absl::Notification done;
    absl::StatusOr<RedisValue> out;
    pipeline.Eval(*script, {key}, {}, [&](absl::StatusOr<RedisValue> v) {
      out = std::move(v);
      done.Notify();
    });
    done.WaitForNotification();
    return out;
  };
  ASSERT_TRUE(admin_->Command({"SET", "{bk:1}:k", "b"}).ok());
  auto first = eval("{bk:1}:k");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->str, "b");
  EXPECT_FALSE(eval("{billing}:k").ok()) << "the pipeline's user is booking";
  // The server drops every connection of both users (as after a restart).
  for (const char* user : {"inventory", "booking"}) {
    auto killed = admin_->Command({"CLIENT", "KILL", "USER", user});
    ASSERT_TRUE(killed.ok() && killed->integer >= 1) << Describe(killed);
  }
  // The pool replaces the dead connection and authenticates the new one.
  auto again = pool.Command({"GET", "{inventory}:k"});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->str, "v");
  // The pipeline's next batch fails on the dead connection at most once, then
  // reconnects as booking.
  absl::StatusOr<RedisValue> after = eval("{bk:1}:k");
  if (!after.ok()) after = eval("{bk:1}:k");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->str, "b");
  auto clients = admin_->Command({"CLIENT", "LIST"});
  ASSERT_TRUE(clients.ok());
  EXPECT_EQ(clients->str.find("user=default "), std::string::npos) << clients->str;
}

TEST_F(RedisAclTest, EachServiceSeesOnlyItsOwnKeysAndCommands) {
  // One key of each kind in each service's hash tags, written by admin.
  const std::map<std::string, std::vector<std::string>> keys = {
      {"inventory", {"{inventory}:doc:organizations/a", "{inventory}:outbox"}},
      {"booking", {"{booking}:project:p", "{bk:3}:booking:b", "{bk:ids}:b", "{booking}:outbox", "{bk:3}:outbox"}},
      {"billing", {"{billing}:acct:x", "{billing}:outbox"}},
      {"usage", {"{usage}:audit:head", "{au:7}:audit:head", "{usage}:outbox"}},
      {"notify", {"{notify}:mail:msg:m", "{notify}:outbox"}},
  };
  for (const auto& [service, list] : keys) {
    for (const std::string& key : list) {
      if (absl::EndsWith(key, ":outbox")) {
        ASSERT_TRUE(admin_->Command({"XADD", key, "*", "type", "t", "payload", "secret"}).ok());
      } else {
        ASSERT_TRUE(admin_->Command({"HSET", key, "f", "secret"}).ok());
      }
    }
  }
  // Outboxes a service consumes with its consumer group (redis-acl.sh).
  const std::map<std::string, std::set<std::string>> consumes = {
      {"inventory", {}},
      {"booking", {"{inventory}:outbox"}},
      {"billing", {"{bk:3}:outbox"}},
      {"usage", {"{inventory}:outbox", "{booking}:outbox", "{bk:3}:outbox", "{billing}:outbox", "{notify}:outbox"}},
      {"notify", {"{inventory}:outbox", "{booking}:outbox", "{bk:3}:outbox", "{billing}:outbox", "{usage}:outbox"}},
  };
  for (const std::string& service : kServices) {
    SCOPED_TRACE(service);
    RedisPool pool(acl_.As(*server_, service));
    ASSERT_TRUE(pool.Ready().ok()) << "readiness probe (PING + EVAL) must work for " << service;
    // Its own keys: readable and writable.
    for (const std::string& key : keys.at(service)) {
      if (absl::EndsWith(key, ":outbox")) {
        EXPECT_FALSE(pool.Command({"XADD", key, "*", "type", "t", "payload", "p"})->is_error()) << key;
        // Its outbox maintenance: the retention step (TIME, XINFO GROUPS,
        // XPENDING, XRANGE, XTRIM in Lua) and the lag figures.
        ASSERT_FALSE(admin_->Command({"XGROUP", "CREATE", key, "acl-test", "0"})->is_error()) << key;
        auto trimmed = OutboxTrimmer(&pool, absl::Milliseconds(1)).Trim(key);
        EXPECT_TRUE(trimmed.ok() && trimmed->skipped.empty())
            << key << ": " << (trimmed.ok() ? trimmed->skipped : trimmed.status().ToString());
        EXPECT_TRUE(ReadStreamLag(&pool, key).ok()) << key;
        if (service == "booking" && key == "{bk:3}:outbox") {
          // Its own consumer group on its partitions' outboxes: each
          // check-out's qualification use (services/booking/session_uses.h).
          EXPECT_FALSE(pool.Command({"XGROUP", "CREATE", key, "booking-uses", "0", "MKSTREAM"})->is_error());
          auto read = pool.Command({"XREADGROUP", "GROUP", "booking-uses", "c", "COUNT", "10", "STREAMS", key, ">"});
          ASSERT_TRUE(read.ok() && read->is_array() && !read->elements.empty()) << Describe(read);
          const std::string id = read->elements[0].elements[1].elements[0].elements[0].str;
          // The consumer library's claim step (common/events.cc): XPENDING
          // and XCLAIM, no XAUTOCLAIM.
          EXPECT_FALSE(pool.Command({"XPENDING", key, "booking-uses", "IDLE", "0", "-", "+", "10"})->is_error());
          EXPECT_FALSE(pool.Command({"XCLAIM", key, "booking-uses", "c", "0", id})->is_error());
          EXPECT_FALSE(pool.Command({"XACK", key, "booking-uses", id})->is_error());
        }
      } else {
        auto v = pool.Command({"HGET", key, "f"});
        ASSERT_TRUE(v.ok());
        EXPECT_EQ(v->str, "secret") << key;
      }
    }
    // Every other service's keys: no read, no write, whatever the command.
    for (const auto& [other, list] : keys) {
      if (other == service) continue;
      for (const std::string& key : list) {
        SCOPED_TRACE(key);
        for (const std::vector<std::string>& cmd :
             std::vector<std::vector<std::string>>{{"GET", key},
                                                   {"HGETALL", key},
                                                   {"HGET", key, "f"},
                                                   {"HMGET", key, "f"},
                                                   {"TYPE", key},
                                                   {"XADD", key, "*", "k", "v"},
                                                   {"HSET", key, "f", "overwritten"}}) {
          EXPECT_TRUE(Denied(pool.Command(cmd))) << cmd[0] << ": " << Describe(pool.Command(cmd));
        }
        // A script cannot reach it either.
        EXPECT_TRUE(pool.Command({"EVAL", "return redis.call('HGETALL', KEYS[1])", "1", key})->is_error());
        EXPECT_TRUE(pool.Command({"EVAL", "return redis.call('TYPE', ARGV[1])", "0", key})->is_error());
        if (consumes.at(service).count(key) == 0) {
          EXPECT_TRUE(Denied(pool.Command({"XREADGROUP", "GROUP", "g", "c", "STREAMS", key, ">"})));
        } else {
          // A consumed outbox: the consumer-group commands only.
          EXPECT_FALSE(pool.Command({"XGROUP", "CREATE", key, service, "0", "MKSTREAM"})->is_error());
          auto read = pool.Command({"XREADGROUP", "GROUP", service, "c", "COUNT", "10", "STREAMS", key, ">"});
          EXPECT_TRUE(read.ok() && read->is_array()) << Describe(read);
          EXPECT_TRUE(Denied(pool.Command({"XRANGE", key, "-", "+"})));
          EXPECT_TRUE(Denied(pool.Command({"DEL", key})));
          EXPECT_TRUE(Denied(pool.Command({"XGROUP", "DESTROY", key, service})));
          EXPECT_TRUE(Denied(pool.Command({"XTRIM", key, "MAXLEN", "0"})));
        }
      }
    }
    // Commands no service runs.
    for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
             {"FLUSHALL"}, {"FLUSHDB"}, {"KEYS", "*"}, {"CONFIG", "GET", "*"}, {"CONFIG", "SET", "save", ""},
             {"ACL", "LIST"}, {"ACL", "SETUSER", service, "+@all"}, {"INFO"}, {"SAVE"}, {"SWAPDB", "0", "1"},
             {"SCRIPT", "FLUSH"}, {"CLIENT", "LIST"}, {"MONITOR"}, {"SUBSCRIBE", "x"}, {"RENAME", "a", "b"},
             {"MIGRATE", "127.0.0.1", "1", "k", "0", "1"}, {"REPLICAOF", "127.0.0.1", "1"}, {"MODULE", "LIST"},
             {"FUNCTION", "LIST"}}) {
      EXPECT_TRUE(Denied(pool.Command(cmd))) << absl::StrJoin(cmd, " ") << ": " << Describe(pool.Command(cmd));
    }
    // The consumer library as this user, on every outbox it consumes
    // (common/events.h): the Lua step that claims due pending entries
    // (XPENDING, XCLAIM), parking (XPENDING, TIME, XADD to
    // <stream>:parked:<group>, XACK in one Lua step) and the metrics
    // (TIME, XPENDING, XLEN of the parking stream).
    static const std::map<std::string, std::string> kGroup = {
        {"booking", "booking"}, {"billing", "billing"}, {"usage", "usage"}, {"notify", "notify-mail"}};
    if (kGroup.count(service) != 0) {
      std::set<std::string> streams = consumes.at(service);
      if (service == "usage" || service == "notify") streams.insert("{" + service + "}:outbox");
      for (const std::string& stream : streams) {
        SCOPED_TRACE("consumer on " + stream);
        ConsumerOptions o;
        o.stream = stream;
        o.group = kGroup.at(service);
        o.consumer = "acl-test";
        o.block = absl::ZeroDuration();
        o.reclaim_idle = absl::ZeroDuration();
        o.retry_initial = absl::ZeroDuration();
        EventConsumer consumer(&pool, o);
        ASSERT_TRUE(consumer.EnsureGroup().ok());
        int calls = 0;
        auto handler = [&](const StreamEvent&) {
          return ++calls == 1 ? absl::UnavailableError("once")
                              : PermanentEventFailure(absl::DataLossError("unreadable"));
        };
        auto first = consumer.PollOnce(handler);
        EXPECT_TRUE(first.ok()) << first.status();
        auto second = consumer.PollOnce(handler);  // the failed one again (claimed), parked
        EXPECT_TRUE(second.ok()) << second.status();
        EXPECT_GE(calls, 2);
        EXPECT_EQ(consumer.parked_entries(), calls - 1);
        auto pending = admin_->Command({"XPENDING", stream, o.group});
        EXPECT_EQ(pending->elements[0].integer, 0);
        EXPECT_EQ(admin_->Command({"XLEN", ParkingStream(stream, o.group)})->integer, calls - 1);
        const std::string metrics = RenderConsumerMetrics(&pool, {&consumer});
        EXPECT_NE(metrics.find("labshare_consumer_scrape_errors 0\n"), std::string::npos) << metrics;
      }
    }
    // SCAN lists key names of every service: only booking has it (its
    // index migrations, see redis-acl.sh).
    auto scan = pool.Command({"SCAN", "0", "COUNT", "1000"});
    EXPECT_EQ(Denied(scan), service != "booking") << Describe(scan);
  }
  // The admin user (operators, demo tools) can do everything.
  EXPECT_EQ(admin_->Command({"HGET", "{billing}:acct:x", "f"})->str, "secret");
  // Nothing above got through: every value is still there.
  for (const auto& [service, list] : keys) {
    for (const std::string& key : list) {
      if (absl::EndsWith(key, ":outbox")) continue;
      EXPECT_EQ(admin_->Command({"HGET", key, "f"})->str, "secret") << key;
    }
  }
}

// Polls until every consumer group on `stream` has read and acknowledged
// everything in it.
bool Drained(RedisPool& admin, const std::string& stream, std::string* why) {
  auto info = admin.Command({"XINFO", "STREAM", stream});
  if (!info.ok() || !info->is_array()) {
    *why = stream + ": " + Describe(info);
    return false;
  }
  std::string last;
  for (size_t i = 0; i + 1 < info->elements.size(); i += 2) {
    if (info->elements[i].str == "last-generated-id") last = info->elements[i + 1].str;
  }
  auto groups = admin.Command({"XINFO", "GROUPS", stream});
  if (!groups.ok() || !groups->is_array()) {
    *why = stream + ": " + Describe(groups);
    return false;
  }
  for (const RedisValue& g : groups->elements) {
    std::map<std::string, RedisValue> f;
    for (size_t i = 0; i + 1 < g.elements.size(); i += 2) f[g.elements[i].str] = g.elements[i + 1];
    if (f["last-delivered-id"].str != last || f["pending"].integer != 0) {
      *why = absl::StrCat(stream, " group ", f["name"].str, ": delivered ", f["last-delivered-id"].str, " of ",
                          last, ", pending ", f["pending"].integer);
      return false;
    }
  }
  return true;
}

TEST_F(RedisAclTest, RealServicesRunUnderTheirUsersWithoutARefusal) {
  // This test starts its own cluster on a Redis with the ACL.
  admin_.reset();
  server_.reset();
  BookingTestClusterOptions options;
  options.redis_args = {"--aclfile", acl_.acl_file()};
  options.redis_user = "admin";
  options.redis_password = acl_.password("admin");
  auto user_flags = [this](const std::string& service) {
    return std::vector<std::string>{"--redis_user=" + service,
                                    "--redis_password_file=" + acl_.password_file(service)};
  };
  options.service_args = user_flags;
  auto started = BookingTestCluster::Start(1, options);
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<BookingTestCluster> cluster = *std::move(started);
  std::vector<std::unique_ptr<ChildProcess>> more;
  for (const std::string& service : {std::string("billing"), std::string("usage"), std::string("notify")}) {
    std::vector<std::string> args = {"--listen=127.0.0.1:0", "--redis=" + cluster->redis_server().address()};
    if (service == "billing" || service == "notify") args.push_back("--inventory=" + cluster->inventory_address());
    if (service == "usage") {
      const std::string key = acl_.dir() + "/audit.pem";
      ASSERT_EQ(system(absl::StrCat("openssl genpkey -algorithm ed25519 -out '", key, "' && chmod 600 '", key, "'")
                           .c_str()),
                0);
      args.push_back("--audit_signing_key_file=" + key);
    }
    for (auto& f : user_flags(service)) args.push_back(f);
    auto child = ChildProcess::Start(service, cluster->bin_dir() + "/labshare-" + service, testing::WithTls(args, service),
                                     cluster->log_dir());
    ASSERT_TRUE(child.ok()) << child.status();
    more.push_back(*std::move(child));
  }
  RedisPool& admin = cluster->redis();
  // Usage refuses to start without its audit signing key (exit code 2).
  auto unsigned_usage = ChildProcess::Start(
      "usage-without-key", cluster->bin_dir() + "/labshare-usage",
      {"--listen=127.0.0.1:0", "--redis=" + cluster->redis_server().address(), "--redis_user=usage",
       "--redis_password_file=" + acl_.password_file("usage")},
      cluster->log_dir());
  ASSERT_FALSE(unsigned_usage.ok());
  EXPECT_TRUE(absl::StrContains(unsigned_usage.status().message(), "exited with code 2") &&
              absl::StrContains(unsigned_usage.status().message(), "--audit_signing_key_file"))
      << unsigned_usage.status();

  // Inventory, then a booking and its cancellation.
  ASSERT_TRUE(cluster->CreateMemberOrganization("org-a", "CORE").ok());
  ASSERT_TRUE(cluster->CreateFacility("fac-a", "org-a").ok());
  ASSERT_TRUE(cluster->CreateInstrument("tem-1", "fac-a", "org-a", absl::ZeroDuration()).ok());
  ASSERT_TRUE(cluster->CreateLabUser("li-wei", "org-a").ok());
  booking::v1::CreateBookingRequest create;
  create.mutable_booking()->set_instrument("instruments/tem-1");
  create.mutable_booking()->set_mode(type::v1::ON_SITE);
  create.mutable_booking()->set_user("users/li-wei");
  const absl::Time start = absl::FromUnixSeconds((absl::ToUnixSeconds(absl::Now()) / 3600 + 24) * 3600);
  *create.mutable_booking()->mutable_reserved_interval()->mutable_start_time() = ToProto(start);
  *create.mutable_booking()->mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(2));
  create.set_request_id("acl-create-1");
  booking::v1::Booking booked;
  grpc::Status s = cluster->booking(0).CreateBooking(cluster->AdminContext().get(), create, &booked);
  ASSERT_TRUE(s.ok()) << s.error_message();
  booking::v1::ListBookingsRequest list;
  list.set_instrument("instruments/tem-1");
  booking::v1::ListBookingsResponse listed;
  s = cluster->booking(0).ListBookings(cluster->AdminContext().get(), list, &listed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(listed.bookings_size(), 1);
  booking::v1::CancelBookingRequest cancel;
  cancel.set_name(booked.name());
  cancel.set_reason("plans changed");
  cancel.set_request_id("acl-cancel-1");
  booking::v1::Booking cancelled;
  s = cluster->booking(0).CancelBooking(cluster->AdminContext().get(), cancel, &cancelled);
  ASSERT_TRUE(s.ok()) << s.error_message();

  // Billing, usage and notify consume every outbox (bounded wait).
  std::vector<std::string> streams = {"{inventory}:outbox", "{booking}:outbox", "{billing}:outbox", "{usage}:outbox",
                                      "{notify}:outbox"};
  for (int p = 0; p < 16; ++p) streams.push_back(absl::StrCat("{bk:", p, "}:outbox"));
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::string why;
  while (true) {
    bool all = true;
    for (const std::string& stream : streams) {
      if (!Drained(admin, stream, &why)) {
        all = false;
        break;
      }
    }
    if (all) break;
    ASSERT_LT(absl::Now(), deadline) << "events not consumed: " << why << "\n" << cluster->DumpLogs(4000);
    absl::SleepFor(absl::Milliseconds(50));
  }

  // The usage service reads and verifies its audit chain under its user.
  auto channel = testing::TlsChannel(more[1]->address());
  auto usage = usage::v1::UsageService::NewStub(channel);
  usage::v1::VerifyAuditChainRequest verify;
  verify.set_request_id("acl-verify-1");
  usage::v1::VerifyAuditChainResponse verified;
  s = usage->VerifyAuditChain(cluster->AdminContext().get(), verify, &verified);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(verified.result(), usage::v1::VERIFIED);
  EXPECT_GE(verified.entries_checked(), 6);  // org, facility, instrument, rate, user, booking...
  usage::v1::ListAuditEntriesRequest entries;
  entries.set_resource(booked.name());
  usage::v1::ListAuditEntriesResponse found;
  s = usage->ListAuditEntries(cluster->AdminContext().get(), entries, &found);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(found.entries_size(), 2);  // created, cancelled

  for (auto& child : more) EXPECT_EQ(child->ExitedEarly(), "") << child->name();
  EXPECT_TRUE(cluster->DeadChildren().empty()) << absl::StrJoin(cluster->DeadChildren(), "; ");
  // Not one command was refused to any service.
  const std::vector<std::string> refusals = AclLog(admin);
  EXPECT_TRUE(refusals.empty()) << absl::StrJoin(refusals, "\n");
  // Each service connected as its own user.
  auto clients = admin.Command({"CLIENT", "LIST"});
  ASSERT_TRUE(clients.ok());
  for (const std::string& service : kServices) {
    EXPECT_NE(clients->str.find("user=" + service + " "), std::string::npos) << service;
  }
  EXPECT_EQ(clients->str.find("user=default "), std::string::npos);
  if (HasFailure()) std::cerr << cluster->DumpLogs(8000);
  for (auto& child : more) child->Stop();
}

}  // namespace
}  // namespace labshare
