#include "tests/support/redis_sentinel.h"

#include "tests/support/process.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace labshare::testing {
namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(20);

// One command to 127.0.0.1:port on a fresh connection, short timeouts.
absl::StatusOr<RedisValue> Query(int port, const std::vector<std::string>& argv) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, absl::ToTimeval(absl::Milliseconds(300)));
  if (c == nullptr || c->err != 0) {
    const std::string error = c == nullptr ? "no context" : c->errstr;
    if (c != nullptr) redisFree(c);
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port, ": ", error));
  }
  redisSetTimeout(c, absl::ToTimeval(absl::Seconds(1)));
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  void* reply = redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data());
  if (reply == nullptr) {
    const std::string error = c->errstr;
    redisFree(c);
    return absl::UnavailableError(absl::StrCat(argv[0], " on 127.0.0.1:", port, ": ", error));
  }
  RedisValue value = RedisValueFromReply(reply);
  freeReplyObject(reply);
  redisFree(c);
  return value;
}

// "k:v" lines of an INFO reply.
std::map<std::string, std::string> InfoFields(const RedisValue& info) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(info.str, "\r\n")) {
    const size_t colon = line.find(':');
    if (line.empty() || line[0] == '#' || colon == absl::string_view::npos) continue;
    out[std::string(line.substr(0, colon))] = std::string(line.substr(colon + 1));
  }
  return out;
}

// A flat [field, value, ...] array (SENTINEL master, an entry of SENTINEL
// replicas) as a map.
std::map<std::string, std::string> Pairs(const RedisValue& v) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) out[v.elements[i].str] = v.elements[i + 1].str;
  return out;
}

// Replicas the master at `port` reports online (INFO replication), or -1
// when it is no master.
int OnlineReplicas(int port, std::string* why) {
  auto info = Query(port, {"INFO", "replication"});
  if (!info.ok() || info->type != RedisValue::Type::kString) {
    *why = absl::StrCat("INFO replication on ", port, ": ", info.ok() ? info->DebugString() : info.status().ToString());
    return -1;
  }
  auto fields = InfoFields(*info);
  if (fields["role"] != "master") {
    *why = absl::StrCat("127.0.0.1:", port, " has role ", fields["role"]);
    return -1;
  }
  int online = 0;
  for (const auto& [k, v] : fields) {
    if (absl::StartsWith(k, "slave") && absl::StrContains(v, "state=online")) ++online;
  }
  return online;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisSentinelSetup>> RedisSentinelSetup::Start(const RedisSentinelOptions& options) {
  if (options.replicas < 1 || options.sentinels < 1 || options.quorum < 1 || options.quorum > options.sentinels) {
    return absl::InvalidArgumentError("RedisSentinelSetup: at least one replica and sentinel, quorum 1..sentinels");
  }
  std::unique_ptr<RedisSentinelSetup> s(new RedisSentinelSetup(options));
  std::vector<std::string> node_args = {"--appendonly",
                                        "yes",
                                        "--appendfsync",
                                        options.appendfsync,
                                        "--min-replicas-to-write",
                                        std::to_string(options.min_replicas_to_write),
                                        "--min-replicas-max-lag",
                                        std::to_string(options.min_replicas_max_lag_seconds),
                                        // Replicas sync at once, not after the default 5 s.
                                        "--repl-diskless-sync-delay",
                                        "0"};
  node_args.insert(node_args.end(), options.node_args.begin(), options.node_args.end());

  auto master = RedisServer::Start(node_args);
  if (!master.ok()) return master.status();
  const int master_port = (*master)->port();
  s->nodes_.push_back(*std::move(master));
  for (int i = 0; i < options.replicas; ++i) {
    std::vector<std::string> args = node_args;
    args.insert(args.end(), {"--replicaof", "127.0.0.1", std::to_string(master_port)});
    auto replica = RedisServer::Start(args);
    if (!replica.ok()) return replica.status();
    s->nodes_.push_back(*std::move(replica));
  }

  const std::string config = absl::StrCat(
      "sentinel monitor ", options.master_name, " 127.0.0.1 ", master_port, " ", options.quorum, "\n",
      "sentinel down-after-milliseconds ", options.master_name, " ", absl::ToInt64Milliseconds(options.down_after),
      "\n", "sentinel failover-timeout ", options.master_name, " ",
      absl::ToInt64Milliseconds(options.failover_timeout), "\n", "sentinel parallel-syncs ", options.master_name,
      " ", options.replicas, "\n");
  for (int i = 0; i < options.sentinels; ++i) {
    auto sentinel = RedisServer::StartWithConfig(config, {"--sentinel"});
    if (!sentinel.ok()) return sentinel.status();
    s->sentinels_.push_back(*std::move(sentinel));
  }
  absl::Status settled = s->WaitSettled(0);
  if (!settled.ok()) return settled;
  return s;
}

RedisSentinelSetup::~RedisSentinelSetup() {
  sentinels_.clear();  // no failover while the data nodes stop
  nodes_.clear();
}

absl::Status RedisSentinelSetup::WaitSettled(int master_index) {
  int master_port = nodes_[static_cast<size_t>(master_index)]->port();
  const int want_replicas = options_.replicas;
  const absl::Time deadline = absl::Now() + options_.timeout;
  std::string why;
  while (true) {
    why.clear();
    // On a loaded machine the sentinels may fail over once more by
    // themselves (a master too slow for down-after-milliseconds): follow
    // the node all of them name, as clients do.
    {
      const std::vector<std::string> named = AskSentinels();
      const bool agree = !named.empty() && std::all_of(named.begin(), named.end(),
                                                        [&](const std::string& a) { return a == named.front(); });
      const size_t colon = named.empty() ? std::string::npos : named.front().rfind(':');
      int port = 0;
      if (agree && colon != std::string::npos && absl::SimpleAtoi(named.front().substr(colon + 1), &port) &&
          port != master_port) {
        const int index = NodeByPort(port);
        if (index >= 0 && nodes_[static_cast<size_t>(index)]->running()) {
          master_port = port;
          master_ = index;
        }
      }
    }
    const int online = OnlineReplicas(master_port, &why);
    if (online >= 0 && online < want_replicas) {
      why = absl::StrCat("master 127.0.0.1:", master_port, " has ", online, " of ", want_replicas,
                         " replicas online");
    }
    for (size_t i = 0; why.empty() && i < sentinels_.size(); ++i) {
      const int port = sentinels_[i]->port();
      auto m = Query(port, {"SENTINEL", "MASTER", options_.master_name});
      if (!m.ok() || !m->is_array()) {
        why = absl::StrCat("sentinel ", port, ": SENTINEL MASTER: ", m.ok() ? m->DebugString() : m.status().ToString());
        break;
      }
      auto f = Pairs(*m);
      int num_slaves = 0, others = 0;
      (void)absl::SimpleAtoi(f["num-slaves"], &num_slaves);
      (void)absl::SimpleAtoi(f["num-other-sentinels"], &others);
      if (f["port"] != std::to_string(master_port) || f["flags"] != "master" || num_slaves < want_replicas ||
          others != static_cast<int>(sentinels_.size()) - 1) {
        why = absl::StrCat("sentinel ", port, " sees master port ", f["port"], " flags ", f["flags"], ", ",
                           num_slaves, " replicas, ", others, " other sentinels");
        break;
      }
      auto r = Query(port, {"SENTINEL", "REPLICAS", options_.master_name});
      if (!r.ok() || !r->is_array()) {
        why = absl::StrCat("sentinel ", port, ": SENTINEL REPLICAS failed");
        break;
      }
      int up = 0;
      for (const RedisValue& e : r->elements) {
        auto rf = Pairs(e);
        if (rf["flags"] == "slave" && rf["master-link-status"] == "ok") ++up;
      }
      if (up < want_replicas) why = absl::StrCat("sentinel ", port, " sees ", up, " replicas up");
    }
    if (why.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("Sentinel setup not settled within ",
                                                      absl::FormatDuration(options_.timeout), ": ", why, "\n",
                                                      SentinelLogs(3000)));
    }
    absl::SleepFor(kPoll);
  }
}

std::string RedisSentinelSetup::SentinelAddresses() const {
  std::vector<std::string> out;
  for (const auto& s : sentinels_) out.push_back(s->address());
  return absl::StrJoin(out, ",");
}

std::vector<std::string> RedisSentinelSetup::ServiceFlags() const {
  return {"--redis_sentinels=" + SentinelAddresses(), "--redis_sentinel_master=" + options_.master_name,
          absl::StrCat("--redis_wait_replicas=", options_.wait_replicas)};
}

RedisOptions RedisSentinelSetup::options() const {
  RedisOptions o;
  for (const auto& s : sentinels_) o.sentinels.push_back(RedisAddress{"127.0.0.1", s->port()});
  o.sentinel_master = options_.master_name;
  o.wait_replicas = options_.wait_replicas;
  return o;
}

std::vector<std::string> RedisSentinelSetup::AskSentinels() const {
  std::vector<std::string> out;
  for (const auto& s : sentinels_) {
    auto v = Query(s->port(), {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", options_.master_name});
    if (!v.ok()) {
      out.push_back(v.status().ToString());
    } else if (!v->is_array() || v->elements.size() != 2) {
      out.push_back(v->DebugString());
    } else {
      out.push_back(absl::StrCat(v->elements[0].str, ":", v->elements[1].str));
    }
  }
  return out;
}

int RedisSentinelSetup::Kill9Master() {
  RedisServer& m = master();
  killed_port_ = m.port();
  m.Kill9();
  return killed_port_;
}

int RedisSentinelSetup::NodeByPort(int port) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->port() == port) return static_cast<int>(i);
  }
  return -1;
}

absl::StatusOr<RedisServer*> RedisSentinelSetup::WaitForNewMaster() {
  const absl::Time deadline = absl::Now() + options_.timeout;
  std::string why;
  while (true) {
    why.clear();
    std::string agreed;
    for (const std::string& a : AskSentinels()) {
      if (agreed.empty()) agreed = a;
      if (a != agreed) why = absl::StrCat("sentinels disagree: ", absl::StrJoin(AskSentinels(), ", "));
    }
    int port = 0;
    const size_t colon = agreed.rfind(':');
    if (why.empty() && (colon == std::string::npos || !absl::SimpleAtoi(agreed.substr(colon + 1), &port))) {
      why = absl::StrCat("sentinels answer ", agreed);
    }
    if (why.empty() && port == killed_port_) why = "sentinels still name the killed master";
    const int index = why.empty() ? NodeByPort(port) : -1;
    if (why.empty() && index < 0) why = absl::StrCat("sentinels name an unknown node ", agreed);
    if (why.empty() && !nodes_[static_cast<size_t>(index)]->running()) why = "sentinels name a dead node";
    if (why.empty()) {
      const int online = OnlineReplicas(port, &why);
      if (online >= 0 && online < options_.min_replicas_to_write) {
        why = absl::StrCat("new master ", agreed, " has ", online, " replicas online");
      }
    }
    if (why.empty()) {
      master_ = index;
      return nodes_[static_cast<size_t>(index)].get();
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no new master within ", absl::FormatDuration(options_.timeout),
                                                      ": ", why, "\n", SentinelLogs(3000)));
    }
    absl::SleepFor(kPoll);
  }
}

absl::Status RedisSentinelSetup::RestartKilled() {
  for (auto& node : nodes_) {
    if (node->running()) continue;
    absl::Status s = node->Restart();
    if (!s.ok()) return s;
  }
  return WaitSettled(master_);
}

std::string RedisSentinelSetup::SentinelLogs(size_t tail_bytes) const {
  std::string out;
  for (const auto& s : sentinels_) {
    absl::StrAppend(&out, "----- sentinel ", s->address(), " -----\n", process::FileTail(s->dir() + "/redis.log", tail_bytes, "[...]\n"), "\n");
  }
  return out;
}

}  // namespace labshare::testing
