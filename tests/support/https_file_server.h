// A child process, `openssl s_server -WWW`, serving the files of a directory
// over TLS on 127.0.0.1 (a port of its own): a stand-in for an https:// key
// set or an OpenID provider's discovery document. Files are read per
// request, so a test may write them after the server started. Stop() (or the
// destructor) ends it: later requests find nothing listening.
#ifndef LABSHARE_TESTS_SUPPORT_HTTPS_FILE_SERVER_H_
#define LABSHARE_TESTS_SUPPORT_HTTPS_FILE_SERVER_H_

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace labshare::testing {

class HttpsFileServer {
 public:
  HttpsFileServer(const std::string& dir, const std::string& cert, const std::string& key) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      ::dup2(out[1], 1);
      ::dup2(out[1], 2);
      if (::chdir(dir.c_str()) != 0) _exit(127);
      ::execlp("openssl", "openssl", "s_server", "-WWW", "-accept", "127.0.0.1:0", "-cert", cert.c_str(), "-key",
               key.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    ::close(out[1]);
    std::string text;
    char buf[256];
    while (port_ == 0) {
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
      const size_t at = text.find("ACCEPT 127.0.0.1:");
      if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
        port_ = std::atoi(text.c_str() + at + 17);
      }
    }
    fd_ = out[0];
  }
  HttpsFileServer(const HttpsFileServer&) = delete;
  HttpsFileServer& operator=(const HttpsFileServer&) = delete;
  ~HttpsFileServer() { Stop(); }

  // 0 when the server did not start.
  int port() const { return port_; }

  // Ends the process and waits for it (its port is closed on return).
  void Stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_SUPPORT_HTTPS_FILE_SERVER_H_
