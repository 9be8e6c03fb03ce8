// A real redis-server for tests: own process, own temporary directory, a free
// loopback port, no persistence (unless extra_args turn it on). Never a fixed
// port, so test binaries can run in parallel.
//
// Start() finds redis-server at /usr/bin/redis-server or on PATH. The child
// gets SIGTERM if the thread that started it exits (PR_SET_PDEATHSIG), so a
// crashed test binary leaves no server behind: start servers from a thread
// that outlives them (GoogleTest's main thread does).
#ifndef LABSHARE_TESTS_SUPPORT_REDIS_SERVER_H_
#define LABSHARE_TESTS_SUPPORT_REDIS_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/redis.h"

namespace labshare::testing {

class RedisServer {
 public:
  // A server on a free port; retried on a new port (up to 5 attempts) if it
  // does not come up. extra_args are appended to the command line, e.g.
  // {"--maxmemory", "10mb"}. UNAVAILABLE with the log tail if all attempts fail.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(
      const std::vector<std::string>& extra_args = {});
  // A server on a given port, e.g. to bring Redis back where a pool expects it
  // after the previous server on that port was destroyed.
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartOnPort(
      int port, const std::vector<std::string>& extra_args = {});
  // Like Start, for a server whose default user is off (e.g. extra_args
  // {"--aclfile", FILE}): the start probe authenticates as `user`, and
  // options() carries these credentials.
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartWithUser(
      const std::vector<std::string>& extra_args, const std::string& user,
      const std::string& password);
  // Like Start, with a configuration file: `config_text` is written to
  // DIR/redis.conf, which is passed first on the command line (as Sentinel
  // needs: `redis-server FILE --sentinel`, a file it may rewrite). The
  // command-line flags come after it and win.
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartWithConfig(
      const std::string& config_text, const std::vector<std::string>& extra_args);

  // SIGTERM, waits for exit (SIGKILL after 10 s), removes the directory.
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // kill -9: the process dies at once, with what it had not yet written to
  // disk; waits until it is reaped. The directory (AOF, RDB, config, log)
  // stays for Restart(). No-op when not running.
  void Kill9();
  // Starts redis-server again with the same command line, port and
  // directory (so it loads the AOF/RDB the previous process left), and
  // waits until it answers and has finished loading (bounded). Only after
  // Kill9() (or when the process ended); from the thread that started it.
  absl::Status Restart();
  bool running() const { return pid_ > 0; }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string address() const;  // "127.0.0.1:PORT"
  RedisOptions options() const;  // host/port (and StartWithUser's user) set, others default
  const std::string& dir() const { return dir_; }

 private:
  RedisServer(pid_t pid, int port, std::string dir);
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartImpl(
      int fixed_port, const std::vector<std::string>& extra_args, const std::string& user = "",
      const std::string& password = "", const std::string& config_text = "");

  pid_t pid_;
  pid_t owner_pid_;  // a forked copy of the test process must not stop the server
  int port_;
  std::string dir_;
  std::string user_;
  std::string password_;
  std::vector<std::string> argv_;  // the whole command line, for Restart()
};

// One server for the whole test binary, started on first call and stopped at
// exit; nullptr (and a message on stderr) if it cannot start. Tests sharing it
// should FlushAll in SetUp.
RedisServer* SharedRedisServer();

// FLUSHALL (data only; cached scripts stay). A failure is a test failure.
void FlushAll(const RedisServer& server);

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_SUPPORT_REDIS_SERVER_H_
