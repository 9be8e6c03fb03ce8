#include "tests/support/redis_cluster.h"

#include "tests/support/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace labshare::testing {
namespace {

using process::ContextPtr;
using process::FileTail;
using process::FindBinary;
using process::Reap;
using process::ReplyPtr;
using process::Spawn;
using process::StopProcess;

constexpr int kPortAttempts = 20;
constexpr absl::Duration kNodeStartTimeout = absl::Seconds(15);
constexpr absl::Duration kPoll = absl::Milliseconds(20);
constexpr int kBusPortOffset = 10000;
constexpr int kSlots = 16384;
// Data ports from here; bus ports (port + 10000) stay below the kernel's
// ephemeral range (32768 by default), so outgoing connections rarely take them.
constexpr int kPortLow = 12000;
constexpr int kPortHigh = 22000;

bool PortBindable(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// A port P in [kPortLow, kPortHigh) with P and P + 10000 free right now, not
// in `taken`. Someone may still take it before redis-server binds: the
// caller retries.
absl::StatusOr<int> FreeClusterPort(const std::set<int>& taken) {
  static std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(kPortLow, kPortHigh - 1);
  for (int i = 0; i < 2000; ++i) {
    const int port = pick(rng);
    if (taken.count(port) || taken.count(port + kBusPortOffset) || taken.count(port - kBusPortOffset)) continue;
    if (PortBindable(port) && PortBindable(port + kBusPortOffset)) return port;
  }
  return absl::UnavailableError("no free port pair (P, P+10000) on 127.0.0.1");
}

absl::StatusOr<RedisValue> RawCommand(int port, const std::vector<std::string>& argv, absl::Duration timeout) {
  ContextPtr c(redisConnectWithTimeout("127.0.0.1", port, absl::ToTimeval(std::min(timeout, absl::Seconds(2)))));
  if (c == nullptr || c->err != 0) {
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port, ": ",
                                               c == nullptr ? "out of memory" : c->errstr));
  }
  if (redisSetTimeout(c.get(), absl::ToTimeval(timeout)) != REDIS_OK) {
    return absl::UnavailableError(absl::StrCat("127.0.0.1:", port, ": cannot set a timeout"));
  }
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  ReplyPtr reply(static_cast<redisReply*>(
      redisCommandArgv(c.get(), static_cast<int>(args.size()), args.data(), lens.data())));
  if (reply == nullptr) {
    return absl::UnavailableError(absl::StrCat("127.0.0.1:", port, " ", argv.empty() ? "" : argv[0], ": ",
                                               c->errstr));
  }
  return RedisValueFromReply(reply.get());
}

// One line of CLUSTER NODES.
struct NodeLine {
  std::string id;
  int port = 0;
  std::set<std::string> flags;
  std::string master_id;  // "-" for a master
  long long epoch = 0;
  std::string link;
  std::vector<std::pair<int, int>> slots;  // inclusive ranges; migration markers left out

  bool is(const std::string& flag) const { return flags.count(flag) > 0; }
  bool owns(int slot) const {
    for (const auto& [lo, hi] : slots) {
      if (slot >= lo && slot <= hi) return true;
    }
    return false;
  }
  std::string SlotText() const {
    std::vector<std::string> parts;
    for (const auto& [lo, hi] : slots) parts.push_back(lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, "-", hi));
    return absl::StrJoin(parts, ",");
  }
};

std::vector<NodeLine> ParseClusterNodes(const std::string& text) {
  std::vector<NodeLine> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<std::string> f = absl::StrSplit(absl::StripAsciiWhitespace(line), ' ', absl::SkipEmpty());
    if (f.size() < 8) continue;
    NodeLine n;
    n.id = f[0];
    // ip:port@cport[,hostname]
    absl::string_view addr = f[1];
    const size_t at = addr.find('@');
    if (at != absl::string_view::npos) addr = addr.substr(0, at);
    const size_t colon = addr.rfind(':');
    if (colon != absl::string_view::npos) (void)absl::SimpleAtoi(addr.substr(colon + 1), &n.port);
    for (absl::string_view fl : absl::StrSplit(f[2], ',')) n.flags.insert(std::string(fl));
    n.master_id = f[3];
    (void)absl::SimpleAtoi(f[6], &n.epoch);
    n.link = f[7];
    for (size_t i = 8; i < f.size(); ++i) {
      if (f[i].empty() || f[i][0] == '[') continue;
      const size_t dash = f[i].find('-');
      int lo = 0, hi = 0;
      if (dash == std::string::npos) {
        if (!absl::SimpleAtoi(f[i], &lo)) continue;
        hi = lo;
      } else if (!absl::SimpleAtoi(f[i].substr(0, dash), &lo) || !absl::SimpleAtoi(f[i].substr(dash + 1), &hi)) {
        continue;
      }
      n.slots.push_back({lo, hi});
    }
    std::sort(n.slots.begin(), n.slots.end());
    out.push_back(std::move(n));
  }
  return out;
}

absl::StatusOr<std::vector<NodeLine>> NodesView(int port) {
  absl::StatusOr<RedisValue> v = RawCommand(port, {"CLUSTER", "NODES"}, absl::Seconds(5));
  if (!v.ok()) return v.status();
  if (v->type != RedisValue::Type::kString) {
    return absl::InternalError(absl::StrCat("CLUSTER NODES on ", port, ": ", v->DebugString()));
  }
  return ParseClusterNodes(v->str);
}

absl::StatusOr<NodeLine> Myself(int port) {
  absl::StatusOr<std::vector<NodeLine>> view = NodesView(port);
  if (!view.ok()) return view.status();
  for (NodeLine& n : *view) {
    if (n.is("myself")) return std::move(n);
  }
  return absl::InternalError(absl::StrCat("CLUSTER NODES on ", port, " has no 'myself' line"));
}

absl::Status ExpectOk(const absl::StatusOr<RedisValue>& v, const std::string& what) {
  if (!v.ok()) return absl::Status(v.status().code(), absl::StrCat(what, ": ", v.status().message()));
  if (v->type == RedisValue::Type::kStatus && v->str == "OK") return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", v->DebugString()));
}

}  // namespace

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<RedisCluster>> RedisCluster::Start(const StartOptions& options) {
  if (options.masters < 3) return absl::InvalidArgumentError("Redis Cluster needs at least 3 masters");
  if (FindBinary("redis-server").empty() || FindBinary("redis-cli").empty()) {
    return absl::NotFoundError("redis-server and redis-cli are needed (Debian package redis-server / redis-tools)");
  }
  const absl::Time deadline = absl::Now() + options.timeout;
  std::unique_ptr<RedisCluster> c(new RedisCluster());
  c->owner_pid_ = getpid();
  const char* tmp = getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/labshare-redis-cluster-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
  }
  c->root_dir_ = pattern;
  const int total = options.masters * (1 + options.replicas_per_master);
  for (int i = 0; i < total; ++i) {
    Node node;
    node.dir = absl::StrCat(c->root_dir_, "/node-", i);
    std::error_code ec;
    std::filesystem::create_directories(node.dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("mkdir ", node.dir, ": ", ec.message()));
    c->nodes_.push_back(node);
  }
  for (int i = 0; i < total; ++i) {
    std::set<int> taken;
    for (const Node& n : c->nodes_) {
      if (n.port != 0) {
        taken.insert(n.port);
        taken.insert(n.port + kBusPortOffset);
      }
    }
    Node& node = c->nodes_[static_cast<size_t>(i)];
    std::string last_error;
    for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
      absl::StatusOr<int> port = FreeClusterPort(taken);
      if (!port.ok()) return port.status();
      node.port = *port;
      node.args = {FindBinary("redis-server"),
                   "--port", std::to_string(node.port),
                   "--bind", "127.0.0.1",
                   "--dir", node.dir,
                   "--daemonize", "no",
                   "--save", "",
                   "--cluster-enabled", "yes",
                   "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", "1000",
                   "--appendonly", "yes",
                   "--appendfsync", "always",
                   "--hash-max-listpack-value", "1024"};
      node.args.insert(node.args.end(), options.extra_args.begin(), options.extra_args.end());
      absl::Status started = c->StartNode(&node);
      if (started.ok()) break;
      last_error = std::string(started.message());
      taken.insert(node.port);
      node.port = 0;
      std::error_code ec;
      std::filesystem::remove(node.dir + "/nodes.conf", ec);
    }
    if (node.port == 0) {
      return absl::UnavailableError(absl::StrCat("node ", i, " did not start: ", last_error));
    }
  }
  for (Node& node : c->nodes_) {
    absl::StatusOr<RedisValue> id = RawCommand(node.port, {"CLUSTER", "MYID"}, absl::Seconds(5));
    if (!id.ok()) return id.status();
    absl::StatusOr<std::string> s = id->AsString();
    if (!s.ok() || s->size() != 40) {
      return absl::InternalError(absl::StrCat("CLUSTER MYID on ", node.port, ": ", id->DebugString()));
    }
    node.id = *s;
  }
  absl::Status created = c->CreateWithRedisCli(options.replicas_per_master, deadline - absl::Now());
  if (!created.ok()) return created;
  absl::Status healthy = c->WaitHealthy(std::max(deadline - absl::Now(), absl::Seconds(1)));
  if (!healthy.ok()) return healthy;
  return c;
}

absl::Status RedisCluster::StartNode(Node* node) {
  const std::string log_path = node->dir + "/redis.log";
  absl::StatusOr<pid_t> pid = Spawn(node->args, log_path);
  if (!pid.ok()) return pid.status();
  const absl::Time deadline = absl::Now() + kNodeStartTimeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(*pid, &status, WNOHANG) == *pid) {
      return absl::UnavailableError(absl::StrCat("redis-server on port ", node->port, " exited; log:\n",
                                                 FileTail(log_path, 2000)));
    }
    absl::StatusOr<RedisValue> info = RawCommand(node->port, {"INFO", "server"}, absl::Seconds(1));
    if (info.ok() && info->type == RedisValue::Type::kString) {
      const std::string want = absl::StrCat("process_id:", *pid, "\r\n");
      if (info->str.find(want) != std::string::npos) {
        node->pid = *pid;
        return absl::OkStatus();
      }
      StopProcess(*pid);
      return absl::UnavailableError(absl::StrCat("another process answers on port ", node->port));
    }
    absl::SleepFor(kPoll);
  }
  StopProcess(*pid);
  return absl::UnavailableError(absl::StrCat("redis-server on port ", node->port, " did not answer within ",
                                             absl::FormatDuration(kNodeStartTimeout), "; log:\n",
                                             FileTail(log_path, 2000)));
}

absl::Status RedisCluster::CreateWithRedisCli(int replicas_per_master, absl::Duration timeout) {
  std::vector<std::string> args = {FindBinary("redis-cli"), "--cluster", "create"};
  for (const Node& n : nodes_) args.push_back(absl::StrCat("127.0.0.1:", n.port));
  args.insert(args.end(), {"--cluster-replicas", std::to_string(replicas_per_master), "--cluster-yes"});
  const std::string log_path = root_dir_ + "/redis-cli-create.log";
  absl::StatusOr<pid_t> pid = Spawn(args, log_path);
  if (!pid.ok()) return pid.status();
  int status = 0;
  if (!Reap(*pid, std::max(timeout, absl::Seconds(5)), &status)) {
    kill(*pid, SIGKILL);
    waitpid(*pid, nullptr, 0);
    return absl::DeadlineExceededError(absl::StrCat("redis-cli --cluster create did not finish; output:\n",
                                                    FileTail(log_path, 3000)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("redis-cli --cluster create failed (wait status ", status,
                                            "); output:\n", FileTail(log_path, 3000)));
  }
  return absl::OkStatus();
}

RedisCluster::~RedisCluster() {
  if (getpid() != owner_pid_) return;
  for (Node& n : nodes_) {
    if (n.pid > 0) kill(n.pid, SIGTERM);
  }
  for (Node& n : nodes_) {
    if (n.pid <= 0) continue;
    process::KillAfter(n.pid, process::kStopTimeout);
    n.pid = -1;
  }
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  if (test != nullptr && ::testing::Test::HasFailure()) {
    std::cerr << "RedisCluster: node directories and logs kept in " << root_dir_ << "\n";
    return;
  }
  std::error_code ignored;
  if (!root_dir_.empty()) std::filesystem::remove_all(root_dir_, ignored);
}

int RedisCluster::port(int node) const { return nodes_.at(static_cast<size_t>(node)).port; }
pid_t RedisCluster::pid(int node) const { return nodes_.at(static_cast<size_t>(node)).pid; }
bool RedisCluster::alive(int node) const { return pid(node) > 0; }
std::string RedisCluster::address(int node) const { return absl::StrCat("127.0.0.1:", port(node)); }
const std::string& RedisCluster::node_id(int node) const { return nodes_.at(static_cast<size_t>(node)).id; }
const std::string& RedisCluster::dir(int node) const { return nodes_.at(static_cast<size_t>(node)).dir; }

int RedisCluster::NodeOfPort(int port) const {
  for (int i = 0; i < size(); ++i) {
    if (nodes_[static_cast<size_t>(i)].port == port) return i;
  }
  return -1;
}

int RedisCluster::NodeOfAddress(const std::string& host_port) const {
  const size_t colon = host_port.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(host_port.substr(colon + 1), &port)) return -1;
  return NodeOfPort(port);
}

std::vector<RedisAddress> RedisCluster::seeds() const {
  std::vector<RedisAddress> out;
  for (const Node& n : nodes_) out.push_back(RedisAddress{"127.0.0.1", n.port});
  return out;
}

std::string RedisCluster::seed_list() const {
  std::vector<std::string> parts;
  for (const Node& n : nodes_) parts.push_back(absl::StrCat("127.0.0.1:", n.port));
  return absl::StrJoin(parts, ",");
}

std::vector<std::string> RedisCluster::ServiceFlags() const {
  return {"--redis_cluster", "--redis=" + seed_list()};
}

RedisOptions RedisCluster::options() const {
  RedisOptions o;
  o.cluster = true;
  o.cluster_seeds = seeds();
  o.host = "127.0.0.1";
  o.port = nodes_.front().port;
  return o;
}

absl::StatusOr<RedisValue> RedisCluster::NodeCommand(int node, const std::vector<std::string>& argv,
                                                     absl::Duration timeout) const {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  return RawCommand(port(node), argv, timeout);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> RedisCluster::NodeInfo(
    int node, const std::string& section) const {
  absl::StatusOr<RedisValue> v = NodeCommand(node, {"INFO", section});
  if (!v.ok()) return v.status();
  if (v->type != RedisValue::Type::kString) {
    return absl::InternalError(absl::StrCat("INFO on node ", node, ": ", v->DebugString()));
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (absl::string_view line : absl::StrSplit(v->str, "\r\n", absl::SkipEmpty())) {
    if (line.empty() || line[0] == '#') continue;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    out.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 1)));
  }
  return out;
}

std::vector<int> RedisCluster::Masters() const {
  std::vector<int> out;
  for (int i = 0; i < size(); ++i) {
    if (!alive(i)) continue;
    absl::StatusOr<NodeLine> me = Myself(port(i));
    if (me.ok() && me->is("master") && !me->slots.empty()) out.push_back(i);
  }
  return out;
}

absl::StatusOr<int> RedisCluster::MasterOfSlot(int slot) const {
  int best = -1;
  long long best_epoch = -1;
  for (int i = 0; i < size(); ++i) {
    if (!alive(i)) continue;
    absl::StatusOr<NodeLine> me = Myself(port(i));
    if (!me.ok() || !me->is("master") || !me->owns(slot)) continue;
    if (me->epoch > best_epoch) {
      best = i;
      best_epoch = me->epoch;
    }
  }
  if (best < 0) return absl::NotFoundError(absl::StrCat("no live master claims slot ", slot));
  return best;
}

std::vector<int> RedisCluster::ReplicasOf(int master) const {
  std::vector<int> out;
  for (int i = 0; i < size(); ++i) {
    if (!alive(i) || i == master) continue;
    absl::StatusOr<NodeLine> me = Myself(port(i));
    if (me.ok() && me->is("slave") && me->master_id == node_id(master)) out.push_back(i);
  }
  return out;
}

std::string RedisCluster::HealthProblem() const {
  std::set<std::string> live_ids;
  for (int i = 0; i < size(); ++i) {
    if (alive(i)) live_ids.insert(node_id(i));
  }
  std::string reference;  // the first live node's picture of the live nodes
  int reference_node = -1;
  for (int i = 0; i < size(); ++i) {
    if (!alive(i)) continue;
    absl::StatusOr<RedisValue> info = NodeCommand(i, {"CLUSTER", "INFO"});
    if (!info.ok()) return absl::StrCat("node ", i, ": ", info.status().message());
    if (info->type != RedisValue::Type::kString || info->str.find("cluster_state:ok") == std::string::npos) {
      return absl::StrCat("node ", i, " (", address(i), ") is not cluster_state:ok");
    }
    absl::StatusOr<std::vector<NodeLine>> view = NodesView(port(i));
    if (!view.ok()) return absl::StrCat("node ", i, ": ", view.status().message());
    std::map<std::string, std::string> picture;  // id -> role and slots / master
    std::vector<bool> covered(kSlots, false);
    for (const NodeLine& n : *view) {
      if (!live_ids.count(n.id)) continue;
      if (n.is("fail") || n.is("fail?") || n.is("handshake") || n.is("noaddr")) {
        return absl::StrCat("node ", i, " flags live node ", NodeOfPort(n.port), " ",
                            absl::StrJoin(n.flags, ","));
      }
      const std::string who = absl::StrCat("node ", NodeOfPort(n.port), ": ");
      if (n.is("master")) {
        picture[n.id] = who + "master " + n.SlotText();
        for (const auto& [lo, hi] : n.slots) {
          for (int s = lo; s <= hi && s < kSlots; ++s) covered[static_cast<size_t>(s)] = true;
        }
      } else {
        picture[n.id] = who + "replica of " + n.master_id;
        if (n.is("myself")) {
          absl::StatusOr<std::vector<std::pair<std::string, std::string>>> repl = NodeInfo(i, "replication");
          if (!repl.ok()) return absl::StrCat("node ", i, ": ", repl.status().message());
          bool up = false;
          for (const auto& [k, v] : *repl) up = up || (k == "master_link_status" && v == "up");
          if (!up) return absl::StrCat("replica ", i, " (", address(i), "): master link not up");
        }
      }
    }
    if (picture.size() != live_ids.size()) {
      return absl::StrCat("node ", i, " knows ", picture.size(), " of the ", live_ids.size(), " live nodes");
    }
    for (int s = 0; s < kSlots; ++s) {
      if (!covered[static_cast<size_t>(s)]) return absl::StrCat("node ", i, ": slot ", s, " has no live master");
    }
    std::string text;
    for (const auto& [id, what] : picture) absl::StrAppend(&text, what, "; ");
    if (reference_node < 0) {
      reference = text;
      reference_node = i;
    } else if (text != reference) {
      return absl::StrCat("node ", i, " sees {", text, "}, node ", reference_node, " sees {", reference, "}");
    }
  }
  return "";
}

absl::Status RedisCluster::WaitHealthy(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  std::string problem;
  while (true) {
    problem = HealthProblem();
    if (problem.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) break;
    absl::SleepFor(kPoll);
  }
  return absl::DeadlineExceededError(
      absl::StrCat("the cluster is not healthy after ", absl::FormatDuration(timeout), ": ", problem));
}

absl::Status RedisCluster::Kill9(int node) {
  Node& n = nodes_.at(static_cast<size_t>(node));
  if (n.pid <= 0) return absl::FailedPreconditionError(absl::StrCat("node ", node, " is not running"));
  absl::StatusOr<NodeLine> me = Myself(n.port);
  n.slot_at_kill = me.ok() && me->is("master") && !me->slots.empty() ? me->slots.front().first : -1;
  if (kill(n.pid, SIGKILL) != 0) return absl::InternalError(absl::StrCat("kill: ", std::strerror(errno)));
  while (waitpid(n.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  n.pid = -1;
  return absl::OkStatus();
}

absl::StatusOr<int> RedisCluster::WaitForFailover(int dead_master, absl::Duration timeout) {
  if (alive(dead_master)) return absl::FailedPreconditionError("the master is still running");
  const absl::Time deadline = absl::Now() + timeout;
  const int slot_at_kill = nodes_.at(static_cast<size_t>(dead_master)).slot_at_kill;
  if (slot_at_kill < 0) return absl::FailedPreconditionError("the node owned no slot when it was killed");
  std::string problem;
  while (true) {
    // A live master that some live node's view records as having taken over
    // is enough to name; health then says everybody agrees.
    problem = HealthProblem();
    if (problem.empty()) {
      // Its slots, as they were when it was killed, now have a live master.
      absl::StatusOr<int> successor = MasterOfSlot(slot_at_kill);
      if (successor.ok() && *successor != dead_master) return *successor;
      problem = absl::StrCat("healthy, but slot ", slot_at_kill, ": ", successor.status().message());
    }
    if (absl::Now() >= deadline) break;
    absl::SleepFor(kPoll);
  }
  return absl::DeadlineExceededError(absl::StrCat("no failover of node ", dead_master, " within ",
                                                  absl::FormatDuration(timeout), ": ", problem));
}

absl::Status RedisCluster::Restart(int node) {
  Node& n = nodes_.at(static_cast<size_t>(node));
  if (n.pid > 0) return absl::FailedPreconditionError(absl::StrCat("node ", node, " is running"));
  return StartNode(&n);
}

// ---- Slot migration --------------------------------------------------------

absl::Status RedisCluster::BeginMigration(int slot, int from, int to) {
  const std::string s = std::to_string(slot);
  absl::Status st = ExpectOk(NodeCommand(to, {"CLUSTER", "SETSLOT", s, "IMPORTING", node_id(from)}),
                             absl::StrCat("CLUSTER SETSLOT ", s, " IMPORTING on node ", to));
  if (!st.ok()) return st;
  return ExpectOk(NodeCommand(from, {"CLUSTER", "SETSLOT", s, "MIGRATING", node_id(to)}),
                  absl::StrCat("CLUSTER SETSLOT ", s, " MIGRATING on node ", from));
}

absl::StatusOr<int> RedisCluster::MigrateKeys(int slot, int from, int to, int max_keys, int batch) {
  if (batch < 1) batch = 1;
  int moved = 0;
  while (moved < max_keys) {
    const int want = std::min(batch, max_keys - moved);
    absl::StatusOr<RedisValue> keys =
        NodeCommand(from, {"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), std::to_string(want)});
    if (!keys.ok()) return keys.status();
    if (!keys->is_array()) {
      return absl::InternalError(absl::StrCat("CLUSTER GETKEYSINSLOT on node ", from, ": ", keys->DebugString()));
    }
    if (keys->elements.empty()) break;
    std::vector<std::string> argv = {"MIGRATE", "127.0.0.1", std::to_string(port(to)), "", "0", "10000", "KEYS"};
    for (const RedisValue& k : keys->elements) argv.push_back(k.str);
    absl::StatusOr<RedisValue> r = NodeCommand(from, argv, absl::Seconds(15));
    if (!r.ok()) return r.status();
    if (r->type != RedisValue::Type::kStatus || (r->str != "OK" && r->str != "NOKEY")) {
      return absl::InternalError(absl::StrCat("MIGRATE of ", keys->elements.size(), " keys of slot ", slot,
                                              " from node ", from, " to node ", to, ": ", r->DebugString()));
    }
    moved += static_cast<int>(keys->elements.size());
  }
  return moved;
}

absl::Status RedisCluster::MigrateKeysNamed(int slot, int from, int to, const std::vector<std::string>& keys) {
  std::vector<std::string> argv = {"MIGRATE", "127.0.0.1", std::to_string(port(to)), "", "0", "10000", "KEYS"};
  for (const std::string& k : keys) {
    if (RedisKeySlot(k) != slot) return absl::InvalidArgumentError(absl::StrCat("key '", k, "' is not in slot ", slot));
    argv.push_back(k);
  }
  if (keys.empty()) return absl::OkStatus();
  // MIGRATE moves the keys that exist and answers NOKEY when none does.
  absl::StatusOr<RedisValue> r = NodeCommand(from, argv, absl::Seconds(15));
  if (!r.ok()) return r.status();
  if (r->type != RedisValue::Type::kStatus || (r->str != "OK" && r->str != "NOKEY")) {
    return absl::InternalError(absl::StrCat("MIGRATE of ", keys.size(), " named keys of slot ", slot, ": ",
                                            r->DebugString()));
  }
  return absl::OkStatus();
}

absl::Status RedisCluster::FinishMigration(int slot, int from, int to, absl::Duration timeout) {
  const std::string s = std::to_string(slot);
  std::vector<int> order = {to, from};
  for (int m : Masters()) {
    if (m != to && m != from) order.push_back(m);
  }
  for (int node : order) {
    absl::Status st = ExpectOk(NodeCommand(node, {"CLUSTER", "SETSLOT", s, "NODE", node_id(to)}),
                               absl::StrCat("CLUSTER SETSLOT ", s, " NODE on node ", node));
    if (!st.ok()) return st;
  }
  const absl::Time deadline = absl::Now() + timeout;
  std::string problem;
  while (true) {
    problem.clear();
    for (int i = 0; i < size() && problem.empty(); ++i) {
      if (!alive(i)) continue;
      absl::StatusOr<std::vector<NodeLine>> view = NodesView(port(i));
      if (!view.ok()) {
        problem = std::string(view.status().message());
        break;
      }
      bool seen = false;
      for (const NodeLine& n : *view) {
        if (n.id == node_id(to) && n.owns(slot)) seen = true;
      }
      if (!seen) problem = absl::StrCat("node ", i, " does not yet see node ", to, " owning slot ", slot);
    }
    if (problem.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) break;
    absl::SleepFor(kPoll);
  }
  return absl::DeadlineExceededError(problem);
}

absl::StatusOr<int> RedisCluster::MigrateSlot(int slot, int from, int to, const MigrationHooks& hooks, int batch) {
  if (from == to) return absl::InvalidArgumentError("MigrateSlot: from == to");
  absl::Status st = BeginMigration(slot, from, to);
  if (!st.ok()) return st;
  if (hooks.after_begin) hooks.after_begin();
  int moved = 0;
  while (true) {
    absl::StatusOr<int> n = MigrateKeys(slot, from, to, batch, batch);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    moved += *n;
    if (hooks.after_batch) hooks.after_batch(moved);
  }
  if (hooks.before_finish) hooks.before_finish();
  // Nothing can appear on the source meanwhile (a new key is ASKed to the
  // target), but a hook may have moved keys itself: check once more.
  absl::StatusOr<int> late = MigrateKeys(slot, from, to, INT_MAX, batch);
  if (!late.ok()) return late.status();
  moved += *late;
  st = FinishMigration(slot, from, to);
  if (!st.ok()) return st;
  return moved;
}

absl::StatusOr<long long> RedisCluster::ErrorCount(int node, const std::string& code) const {
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> info = NodeInfo(node, "errorstats");
  if (!info.ok()) return info.status();
  for (const auto& [k, v] : *info) {
    if (k != "errorstat_" + code) continue;
    absl::string_view count = v;
    long long n = 0;
    if (!absl::ConsumePrefix(&count, "count=") || !absl::SimpleAtoi(count, &n)) {
      return absl::InternalError(absl::StrCat("INFO errorstats on node ", node, ": ", k, ":", v));
    }
    return n;
  }
  return 0;
}

absl::Status RedisCluster::WaitReplicasCaughtUp(int master, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  std::string problem;
  while (true) {
    problem.clear();
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> info = NodeInfo(master, "replication");
    if (!info.ok()) return info.status();
    std::string offset;
    std::vector<std::string> replicas;
    for (const auto& [k, v] : *info) {
      if (k == "master_repl_offset") offset = v;
      if (absl::StartsWith(k, "slave") && k.size() > 5 && absl::ascii_isdigit(static_cast<unsigned char>(k[5]))) {
        replicas.push_back(v);
      }
    }
    if (replicas.empty()) problem = "no replica connected";
    for (const std::string& r : replicas) {
      if (r.find(",offset=" + offset + ",") == std::string::npos) problem = absl::StrCat("master at ", offset, ", ", r);
    }
    if (problem.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return absl::DeadlineExceededError(absl::StrCat("replicas of node ", master, " behind: ", problem));
}

absl::Status RedisCluster::FlushAll() const {
  for (int m : Masters()) {
    absl::Status st = ExpectOk(NodeCommand(m, {"FLUSHALL"}, absl::Seconds(30)), absl::StrCat("FLUSHALL on node ", m));
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<long long> RedisCluster::CountKeysInSlot(int node, int slot) const {
  absl::StatusOr<RedisValue> v = NodeCommand(node, {"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)});
  if (!v.ok()) return v.status();
  if (v->type != RedisValue::Type::kInteger) {
    return absl::InternalError(absl::StrCat("CLUSTER COUNTKEYSINSLOT on node ", node, ": ", v->DebugString()));
  }
  return v->integer;
}

absl::StatusOr<std::string> RedisCluster::RedisCliCheck() const {
  int node = -1;
  for (int i = 0; i < size() && node < 0; ++i) {
    if (alive(i)) node = i;
  }
  if (node < 0) return absl::FailedPreconditionError("no live node");
  const std::string log_path = absl::StrCat(root_dir_, "/redis-cli-check-", absl::ToUnixNanos(absl::Now()), ".log");
  absl::StatusOr<pid_t> pid = Spawn({FindBinary("redis-cli"), "--cluster", "check", address(node)}, log_path);
  if (!pid.ok()) return pid.status();
  int status = 0;
  if (!Reap(*pid, absl::Seconds(30), &status)) {
    kill(*pid, SIGKILL);
    waitpid(*pid, nullptr, 0);
    return absl::DeadlineExceededError("redis-cli --cluster check did not finish");
  }
  std::string out = FileTail(log_path, 100000);
  std::error_code ignored;
  std::filesystem::remove(log_path, ignored);
  const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0 && out.find("[ERR]") == std::string::npos &&
                     out.find("[WARNING]") == std::string::npos &&
                     out.find("All 16384 slots covered") != std::string::npos;
  if (!clean) return absl::InternalError(absl::StrCat("redis-cli --cluster check (wait status ", status, "):\n", out));
  return out;
}

std::string RedisCluster::LogTail(int node, size_t max_bytes) const {
  return FileTail(dir(node) + "/redis.log", max_bytes);
}

std::string KeyTagForSlot(int slot, const std::string& prefix) {
  for (int n = 0;; ++n) {
    std::string tag = absl::StrCat(prefix, n);
    if (RedisKeySlot(tag) == slot) return "{" + tag + "}";
  }
}

}  // namespace labshare::testing
