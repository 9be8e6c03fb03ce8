#include "tests/support/redis_server.h"

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

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace labshare::testing {
namespace {

using process::ContextPtr;
using process::FileTail;
using process::FindBinary;
using process::ReplyPtr;
using process::Spawn;
using process::StopProcess;

constexpr int kAttempts = 5;
constexpr absl::Duration kStartTimeout = absl::Seconds(10);
constexpr absl::Duration kPollInterval = absl::Milliseconds(5);

// The kernel picks a free port; the server may still lose it to someone else
// before it binds, which the caller handles by retrying.
absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::InternalError(absl::StrCat("bind 127.0.0.1:0: ", error));
  }
  close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

absl::StatusOr<std::string> MakeTempDir() {
  const char* tmp = getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp",
                                     "/labshare-redis-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
  }
  return pattern;
}

enum class Probe { kNotYet, kReady, kSomeoneElse };

// Ready when our process answers and has loaded its data: a PONG from the
// port alone could come from another test's server that won the race for it,
// and a restarted server answers INFO while it still loads its AOF.
Probe ProbeServer(int port, pid_t pid, const std::string& user, const std::string& password) {
  ContextPtr c(redisConnectWithTimeout("127.0.0.1", port, absl::ToTimeval(absl::Milliseconds(200))));
  if (c == nullptr || c->err != 0) return Probe::kNotYet;
  if (redisSetTimeout(c.get(), absl::ToTimeval(absl::Seconds(1))) != REDIS_OK) return Probe::kNotYet;
  if (!password.empty()) {
    ReplyPtr auth(static_cast<redisReply*>(redisCommand(c.get(), "AUTH %s %s", user.c_str(), password.c_str())));
    if (auth == nullptr || auth->type == REDIS_REPLY_ERROR) return Probe::kNotYet;
  }
  // The default sections: server (process_id) and, except on a sentinel,
  // persistence (loading).
  ReplyPtr reply(static_cast<redisReply*>(redisCommand(c.get(), "INFO")));
  if (reply == nullptr || reply->type != REDIS_REPLY_STRING) return Probe::kNotYet;
  bool ours = false;
  bool loading = false;
  for (absl::string_view line : absl::StrSplit(absl::string_view(reply->str, reply->len), "\r\n")) {
    if (absl::ConsumePrefix(&line, "loading:")) loading = line != "0";
    if (!absl::ConsumePrefix(&line, "process_id:")) continue;
    int answered = 0;
    if (!absl::SimpleAtoi(line, &answered) || answered != pid) return Probe::kSomeoneElse;
    ours = true;
  }
  if (!ours) return Probe::kSomeoneElse;
  return loading ? Probe::kNotYet : Probe::kReady;
}

// Polls until the process at pid answers on port (kReady), another process
// answers there (kSomeoneElse), the process exits (*exited) or the deadline.
Probe AwaitServer(pid_t pid, int port, const std::string& user, const std::string& password, bool* exited) {
  const absl::Time deadline = absl::Now() + kStartTimeout;
  *exited = false;
  Probe probe = Probe::kNotYet;
  while (absl::Now() < deadline) {
    const pid_t r = waitpid(pid, nullptr, WNOHANG);
    if (r == pid) {
      *exited = true;  // typically: the port was taken
      return Probe::kNotYet;
    }
    probe = ProbeServer(port, pid, user, password);
    if (probe != Probe::kNotYet) return probe;
    absl::SleepFor(kPollInterval);
  }
  return probe;
}

// The last 2000 bytes of the log.
std::string LogTail(const std::string& path) { return FileTail(path, 2000, /*cut_mark=*/""); }

void RemoveDir(const std::string& dir) {
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace

RedisServer::RedisServer(pid_t pid, int port, std::string dir)
    : pid_(pid), owner_pid_(getpid()), port_(port), dir_(std::move(dir)) {}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(
    const std::vector<std::string>& extra_args) {
  return StartImpl(0, extra_args);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartOnPort(
    int port, const std::vector<std::string>& extra_args) {
  if (port <= 0 || port > 65535) return absl::InvalidArgumentError("port must be in 1..65535");
  return StartImpl(port, extra_args);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartWithUser(
    const std::vector<std::string>& extra_args, const std::string& user,
    const std::string& password) {
  return StartImpl(0, extra_args, user, password);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartWithConfig(
    const std::string& config_text, const std::vector<std::string>& extra_args) {
  if (config_text.empty()) return absl::InvalidArgumentError("StartWithConfig: empty configuration");
  return StartImpl(0, extra_args, "", "", config_text);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartImpl(
    int fixed_port, const std::vector<std::string>& extra_args, const std::string& user,
    const std::string& password, const std::string& config_text) {
  const std::string binary = FindBinary("redis-server");
  if (binary.empty()) {
    return absl::NotFoundError("redis-server is neither at /usr/bin/redis-server nor on PATH");
  }
  std::string last_error;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    int port = fixed_port;
    if (port == 0) {
      absl::StatusOr<int> free_port = FreeLoopbackPort();
      if (!free_port.ok()) return free_port.status();
      port = *free_port;
    }
    absl::StatusOr<std::string> dir = MakeTempDir();
    if (!dir.ok()) return dir.status();
    const std::string log_path = *dir + "/redis.log";
    std::vector<std::string> args = {binary};
    if (!config_text.empty()) {
      const std::string config_path = *dir + "/redis.conf";
      std::ofstream config(config_path, std::ios::trunc);
      config << config_text;
      config.close();
      if (!config) {
        RemoveDir(*dir);
        return absl::InternalError(absl::StrCat("cannot write ", config_path));
      }
      args.push_back(config_path);
    }
    const std::vector<std::string> defaults = {"--port",       std::to_string(port), "--bind", "127.0.0.1",
                                               "--save",       "",                   "--appendonly", "no",
                                               "--dir",        *dir,                 "--daemonize",  "no"};
    args.insert(args.end(), defaults.begin(), defaults.end());
    // As deployed (deploy/): booking documents in listpack hashes. Not for
    // a Sentinel (its configuration file only).
    if (config_text.empty()) args.insert(args.end(), {"--hash-max-listpack-value", "1024"});
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    absl::StatusOr<pid_t> pid = Spawn(args, log_path);
    if (!pid.ok()) {
      RemoveDir(*dir);
      return pid.status();
    }

    bool exited = false;
    const Probe probe = AwaitServer(*pid, port, user, password, &exited);
    if (probe == Probe::kReady) {
      std::unique_ptr<RedisServer> server(new RedisServer(*pid, port, *dir));
      server->user_ = user;
      server->password_ = password;
      server->argv_ = std::move(args);
      return server;
    }
    if (!exited) StopProcess(*pid);
    last_error = absl::StrCat("attempt ", attempt, " on port ", port, ": ",
                              exited                            ? "redis-server exited"
                              : probe == Probe::kSomeoneElse ? "another process answers on the port"
                                                                : "no answer within 10 s",
                              "; log:\n", LogTail(log_path));
    RemoveDir(*dir);
  }
  return absl::UnavailableError(
      absl::StrCat("redis-server did not start after ", kAttempts, " attempts; ", last_error));
}

RedisServer::~RedisServer() {
  if (getpid() != owner_pid_) return;
  if (pid_ > 0) StopProcess(pid_);
  RemoveDir(dir_);
}

void RedisServer::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

absl::Status RedisServer::Restart() {
  if (pid_ > 0) {
    if (waitpid(pid_, nullptr, WNOHANG) != pid_) {
      return absl::FailedPreconditionError(absl::StrCat("redis-server ", pid_, " on port ", port_, " still runs"));
    }
    pid_ = -1;
  }
  if (argv_.empty()) return absl::FailedPreconditionError("no command line to restart with");
  const std::string log_path = dir_ + "/redis.log";
  absl::StatusOr<pid_t> pid = Spawn(argv_, log_path);
  if (!pid.ok()) return pid.status();
  bool exited = false;
  const Probe probe = AwaitServer(*pid, port_, user_, password_, &exited);
  if (probe == Probe::kReady) {
    pid_ = *pid;
    return absl::OkStatus();
  }
  if (!exited) StopProcess(*pid);
  return absl::UnavailableError(absl::StrCat("redis-server did not come back on port ", port_, ": ",
                                             exited                            ? "it exited"
                                             : probe == Probe::kSomeoneElse ? "another process answers on the port"
                                                                               : "no answer within 10 s",
                                             "; log:\n", LogTail(log_path)));
}

std::string RedisServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

RedisOptions RedisServer::options() const {
  RedisOptions options;
  options.host = "127.0.0.1";
  options.port = port_;
  options.user = user_;
  options.password = password_;
  return options;
}

RedisServer* SharedRedisServer() {
  // A function-local static: started on first use, stopped by its destructor
  // when the test binary exits.
  static const std::unique_ptr<RedisServer> server = [] {
    absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start();
    if (!started.ok()) {
      std::cerr << "SharedRedisServer: " << started.status() << std::endl;
      return std::unique_ptr<RedisServer>();
    }
    return std::move(started).value();
  }();
  return server.get();
}

void FlushAll(const RedisServer& server) {
  RedisPool pool(server.options());
  absl::StatusOr<RedisValue> reply = pool.Command({"FLUSHALL"});
  if (!reply.ok()) {
    ADD_FAILURE() << "FLUSHALL on " << server.address() << ": " << reply.status();
  } else if (reply->type != RedisValue::Type::kStatus) {
    ADD_FAILURE() << "FLUSHALL on " << server.address() << ": " << reply->DebugString();
  }
}

}  // namespace labshare::testing
