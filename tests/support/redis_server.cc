#include "tests/support/redis_server.h"

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

constexpr int kAttempts = 5;
constexpr absl::Duration kStartTimeout = absl::Seconds(10);
constexpr absl::Duration kStopTimeout = absl::Seconds(10);
constexpr absl::Duration kPollInterval = absl::Milliseconds(5);

struct ContextDeleter {
  void operator()(redisContext* c) const {
    if (c != nullptr) redisFree(c);
  }
};
struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r != nullptr) freeReplyObject(r);
  }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

std::string FindRedisServer() {
  constexpr char kDefault[] = "/usr/bin/redis-server";
  if (access(kDefault, X_OK) == 0) return kDefault;
  const char* path = getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/redis-server");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

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

// fork + exec with stdout/stderr to log_path. Between fork and exec the child
// only makes async-signal-safe calls: the test process may have threads.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log_path, ": ", std::strerror(errno)));
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("open /dev/null: ", std::strerror(errno)));
  }
  rlimit limit{};
  const int max_fd = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 65536
                         ? static_cast<int>(limit.rlim_cur)
                         : 65536;
  sigset_t no_signals;
  sigemptyset(&no_signals);
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) {
    const std::string error = std::strerror(errno);
    close(log_fd);
    close(null_fd);
    return absl::InternalError(absl::StrCat("fork: ", error));
  }
  if (pid == 0) {
    // Dies with the thread that started it, so a crashed test leaves no server.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigprocmask(SIG_SETMASK, &no_signals, nullptr);  // SIGTERM must reach it
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
        dup2(log_fd, STDERR_FILENO) < 0) {
      _exit(126);
    }
    // Descriptors without close-on-exec (hiredis sockets, for one) would keep
    // the parent's connections open inside the server.
    if (close_range(3, ~0U, 0) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) close(fd);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  close(null_fd);
  return pid;
}

// True once the process exited (and was reaped).
bool Reap(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const pid_t r = waitpid(pid, nullptr, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (r < 0 && errno != EINTR) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(kPollInterval);
  }
}

void Stop(pid_t pid) {
  kill(pid, SIGTERM);
  if (!Reap(pid, kStopTimeout)) {
    kill(pid, SIGKILL);
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
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

std::string LogTail(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  constexpr size_t kTail = 2000;
  if (text.size() > kTail) text = text.substr(text.size() - kTail);
  return text;
}

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
  const std::string binary = FindRedisServer();
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
    if (!exited) Stop(*pid);
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
  if (pid_ > 0) Stop(pid_);
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
  if (!exited) Stop(*pid);
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
