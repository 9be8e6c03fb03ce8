// Child processes for the Redis test harnesses (redis_server.cc,
// redis_cluster.cc, redis_sentinel.cc): finding a binary, fork + exec with
// the output to a log file, reaping and stopping by pid, the tail of a log,
// and owning handles for hiredis' raw probes.
#ifndef LABSHARE_TESTS_SUPPORT_PROCESS_H_
#define LABSHARE_TESTS_SUPPORT_PROCESS_H_

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace labshare::testing::process {

inline constexpr absl::Duration kStopTimeout = absl::Seconds(10);

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

// /usr/bin/NAME, else the first NAME on PATH; "" if none is executable.
inline std::string FindBinary(const std::string& name) {
  const std::string in_usr = "/usr/bin/" + name;
  if (access(in_usr.c_str(), X_OK) == 0) return in_usr;
  const char* path = getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// fork + exec with stdout/stderr to log_path (appended). The child dies with
// the thread that started it (PR_SET_PDEATHSIG), so a crashed test leaves no
// process behind. Between fork and exec the child only makes
// async-signal-safe calls: the test process may have threads.
inline absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const std::string& log_path) {
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
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigprocmask(SIG_SETMASK, &no_signals, nullptr);  // SIGTERM must reach it
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
        dup2(log_fd, STDERR_FILENO) < 0) {
      _exit(126);
    }
    // Descriptors without close-on-exec (hiredis sockets, for one) would keep
    // the parent's connections open inside the child.
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

// True once the process exited (and was reaped, or is no child of ours);
// *status gets its wait status when reaped here.
inline bool Reap(pid_t pid, absl::Duration timeout, int* status = nullptr) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int st = 0;
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      if (status != nullptr) *status = st;
      return true;
    }
    if (r < 0 && errno != EINTR) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

// SIGKILL unless reaped within `timeout`; waits until reaped.
inline void KillAfter(pid_t pid, absl::Duration timeout) {
  if (!Reap(pid, timeout)) {
    kill(pid, SIGKILL);
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

// SIGTERM; SIGKILL after kStopTimeout; waits until reaped.
inline void StopProcess(pid_t pid) {
  kill(pid, SIGTERM);
  KillAfter(pid, kStopTimeout);
}

// The last max_bytes of a file, marked "[...]" where cut.
inline std::string FileTail(const std::string& path, size_t max_bytes, const std::string& cut_mark = "[...]") {
  std::ifstream in(path, std::ios::binary);
  std::stringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  if (text.size() > max_bytes) text = cut_mark + text.substr(text.size() - max_bytes);
  return text;
}

}  // namespace labshare::testing::process

#endif  // LABSHARE_TESTS_SUPPORT_PROCESS_H_
