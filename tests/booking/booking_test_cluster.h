// A small LabShare deployment of real processes for black-box booking tests:
// its own redis-server, one labshare-inventory and N labshare-booking
// replicas on that Redis, all on free loopback ports, sharing a random token
// key that the test also uses to mint tokens in-process. Services talk over
// mutual TLS with certificates from tests/support/test_pki.h; the test's
// own channels are TLS without a client certificate (a person's client).
//
// Binaries come from $LABSHARE_BIN_DIR, else <dir of this test binary>/../bin.
// Each child prints "listening on HOST:PORT" on stdout (read through a pipe
// with a bounded wait); its stderr goes to a file in a temporary directory
// that DumpLogs() prints and that is kept when the test failed. Children get
// SIGTERM if the thread that started them exits (PR_SET_PDEATHSIG): start the
// cluster from GoogleTest's main thread. Not thread-safe to start or stop;
// stubs and Mint() may be used from any thread.
#ifndef LABSHARE_TESTS_BOOKING_BOOKING_TEST_CLUSTER_H_
#define LABSHARE_TESTS_BOOKING_BOOKING_TEST_CLUSTER_H_

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/proto_util.h"
#include "common/redis.h"
#include "common/token.h"
#include "labshare/booking/v1/booking.grpc.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_tokens.h"

namespace labshare::testing {

inline constexpr absl::Duration kChildStartTimeout = absl::Seconds(30);
inline constexpr absl::Duration kChildStopTimeout = absl::Seconds(15);
inline constexpr absl::Duration kRpcTimeout = absl::Seconds(30);

// $LABSHARE_BIN_DIR, else dirname(/proc/self/exe)/../bin.
inline std::string LabshareBinDir() {
  const char* env = getenv("LABSHARE_BIN_DIR");
  if (env != nullptr && env[0] != '\0') return env;
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "bin";
  return (self.parent_path() / ".." / "bin").lexically_normal().string();
}

// One child process: fork/exec with stdout through a pipe and stderr to a file.
class ChildProcess {
 public:
  // Starts `path args...` plus the test token flags (--jwks of TestIssuer;
  // labshare-inventory also gets its --token_signing_key_file) and waits up
  // to kChildStartTimeout for "listening on HOST:PORT".
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::string& name,
                                                             const std::string& path,
                                                             const std::vector<std::string>& args,
                                                             const std::string& log_dir) {
    if (access(path.c_str(), X_OK) != 0) {
      return absl::NotFoundError(absl::StrCat(name, ": no executable at ", path,
                                              " (set LABSHARE_BIN_DIR)"));
    }
    std::unique_ptr<ChildProcess> child(new ChildProcess(name, log_dir + "/" + name + ".stderr"));
    // Everything the child needs is built before fork: after fork in a
    // multi-threaded process only async-signal-safe calls are allowed.
    std::vector<std::string> argv_s = {path};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    for (const std::string& flag : TestTokenFlags()) argv_s.push_back(flag);
    if (absl::EndsWith(path, "/labshare-inventory")) {
      argv_s.push_back("--token_signing_key_file=" + TestSigningKeyFile());
    }
    std::vector<std::string> env_s;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) env_s.emplace_back(*e);
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);

    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
    int err = open(child->stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (err < 0) {
      close(out[0]);
      close(out[1]);
      return absl::InternalError(absl::StrCat("open ", child->stderr_path_, ": ", strerror(errno)));
    }
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      close(out[0]);
      close(out[1]);
      close(err);
      return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
    }
    if (pid == 0) {
      // dup2 clears FD_CLOEXEC on the targets; every other fd closes on exec.
      if (dup2(out[1], STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0) _exit(126);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(125);
      execve(argv[0], argv.data(), envp.data());
      static constexpr char kMsg[] = "execve failed\n";
      ssize_t ignored = write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
      (void)ignored;
      _exit(127);
    }
    close(out[1]);
    close(err);
    child->pid_ = pid;
    child->stdout_fd_ = out[0];
    absl::Status ready = child->WaitListening();
    if (!ready.ok()) return ready;
    return child;
  }

  ~ChildProcess() {
    Stop();
    if (stdout_fd_ >= 0) close(stdout_fd_);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  const std::string& name() const { return name_; }
  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }
  const std::string& stderr_path() const { return stderr_path_; }

  // "" while running; otherwise how it ended (it was not asked to stop).
  std::string ExitedEarly() {
    if (pid_ <= 0) return exit_description_;
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      exit_description_ = DescribeExit(status);
      return exit_description_;
    }
    return "";
  }

  // SIGTERM, then waits up to kChildStopTimeout (polling), then SIGKILL.
  // Returns how the process ended.
  std::string Stop() {
    Terminate();
    return WaitExit();
  }

  // Sends SIGTERM once (no-op when not running).
  void Terminate() {
    if (pid_ > 0 && !terminated_) kill(pid_, SIGTERM);
    terminated_ = true;
  }

  // After Terminate(): waits up to kChildStopTimeout, then SIGKILL.
  std::string WaitExit() {
    if (pid_ <= 0) return exit_description_;
    const absl::Time deadline = absl::Now() + kChildStopTimeout;
    int status = 0;
    while (true) {
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno != EINTR)) break;
      if (absl::Now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        exit_description_ = "did not stop within the timeout; killed";
        pid_ = -1;
        return exit_description_;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    pid_ = -1;
    exit_description_ = DescribeExit(status);
    return exit_description_;
  }

  std::string StderrTail(size_t max_bytes) const {
    std::ifstream in(stderr_path_, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string all = ss.str();
    if (all.size() > max_bytes) all = "[...]\n" + all.substr(all.size() - max_bytes);
    return all;
  }

 private:
  ChildProcess(std::string name, std::string stderr_path)
      : name_(std::move(name)), stderr_path_(std::move(stderr_path)) {}

  static std::string DescribeExit(int status) {
    if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
    return absl::StrCat("wait status ", status);
  }

  absl::Status WaitListening() {
    const absl::Time deadline = absl::Now() + kChildStartTimeout;
    std::string buffer;
    while (true) {
      size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        static constexpr char kPrefix[] = "listening on ";
        if (line.rfind(kPrefix, 0) == 0) {
          address_ = line.substr(sizeof(kPrefix) - 1);
          if (address_.find(':') == std::string::npos) {
            return absl::InternalError(absl::StrCat(name_, ": bad listening line '", line, "'"));
          }
          return absl::OkStatus();
        }
      }
      const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left_ms <= 0) {
        return absl::DeadlineExceededError(absl::StrCat(
            name_, ": no 'listening on HOST:PORT' on stdout within ",
            absl::FormatDuration(kChildStartTimeout), "; stderr:\n", StderrTail(4000)));
      }
      pollfd pfd{stdout_fd_, POLLIN, 0};
      int r = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
      if (r < 0 && errno != EINTR) return absl::InternalError(absl::StrCat("poll: ", strerror(errno)));
      if (r <= 0) continue;
      char chunk[4096];
      ssize_t n = read(stdout_fd_, chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        // EOF: the child closed stdout, almost certainly by exiting.
        std::string how = Stop();
        return absl::UnavailableError(absl::StrCat(name_, " ended before listening (", how,
                                                   "); stdout: '", buffer, "'; stderr:\n",
                                                   StderrTail(4000)));
      }
      buffer.append(chunk, static_cast<size_t>(n));
    }
  }

  std::string name_;
  std::string stderr_path_;
  pid_t pid_ = -1;
  bool terminated_ = false;
  int stdout_fd_ = -1;  // kept open so a later write to stdout cannot SIGPIPE the child
  std::string address_;
  std::string exit_description_ = "not started";
};

struct BookingTestClusterOptions {
  // Appended to redis-server's command line, e.g. {"--aclfile", FILE}.
  std::vector<std::string> redis_args;
  // When set (the default user is off): the cluster's own pool and Redis'
  // start probe authenticate as this user.
  std::string redis_user;
  std::string redis_password;
  // An external Redis deployment (a Sentinel setup, a Redis Cluster; see
  // tests/support) in place of the cluster's own redis-server: the flags
  // every child gets instead of --redis=ADDRESS, and the options of the
  // test's own pool (redis()). redis_server() is then unavailable.
  std::vector<std::string> external_redis_flags;
  RedisOptions external_redis_options;
  // Extra flags for each child, by service ("inventory", "booking").
  std::function<std::vector<std::string>(const std::string& service)> service_args;
};

// A child's flags plus its service certificate (mutual TLS, test_pki.h).
inline std::vector<std::string> WithTls(std::vector<std::string> args, const std::string& service) {
  for (auto& flag : TestPki::Shared().Flags(service)) args.push_back(std::move(flag));
  return args;
}

// Redis + inventory + N booking replicas, and helpers to seed inventory.
class BookingTestCluster {
 public:
  static absl::StatusOr<std::unique_ptr<BookingTestCluster>> Start(
      int booking_replicas, const BookingTestClusterOptions& cluster_options = {}) {
    auto extra = [&](const std::string& service, std::vector<std::string> args) {
      if (cluster_options.service_args) {
        for (auto& a : cluster_options.service_args(service)) args.push_back(std::move(a));
      }
      return args;
    };
    std::unique_ptr<BookingTestCluster> c(new BookingTestCluster());
    char tmpl[] = "/tmp/labshare-booking-cluster-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
    c->log_dir_ = tmpl;
    c->bin_dir_ = LabshareBinDir();

    RedisOptions options;
    std::vector<std::string> redis_flags;
    if (!cluster_options.external_redis_flags.empty()) {
      options = cluster_options.external_redis_options;
      redis_flags = cluster_options.external_redis_flags;
    } else {
      auto redis = cluster_options.redis_password.empty()
                       ? RedisServer::Start(cluster_options.redis_args)
                       : RedisServer::StartWithUser(cluster_options.redis_args, cluster_options.redis_user,
                                                    cluster_options.redis_password);
      if (!redis.ok()) return redis.status();
      c->redis_ = *std::move(redis);
      options = c->redis_->options();
      redis_flags = {"--redis=" + c->redis_->address()};
    }
    options.pool_size = 4;
    options.command_timeout = absl::Seconds(20);  // XRANGE of a few MB
    c->pool_ = std::make_unique<RedisPool>(options);
    auto with_redis = [&](std::vector<std::string> args) {
      args.insert(args.end(), redis_flags.begin(), redis_flags.end());
      return args;
    };

    auto inventory = ChildProcess::Start(
        "inventory", c->bin_dir_ + "/labshare-inventory",
        WithTls(extra("inventory", with_redis({"--listen=127.0.0.1:0"})), "inventory"), c->log_dir_);
    if (!inventory.ok()) return inventory.status();
    c->inventory_process_ = *std::move(inventory);
    c->inventory_channel_ = TlsChannel(c->inventory_process_->address());
    c->inventory_ = inventory::v1::InventoryService::NewStub(c->inventory_channel_);

    for (int i = 0; i < booking_replicas; ++i) {
      auto booking = ChildProcess::Start(
          absl::StrCat("booking-", i), c->bin_dir_ + "/labshare-booking",
          WithTls(extra("booking", with_redis({"--listen=127.0.0.1:0",
                                               "--inventory=" + c->inventory_process_->address()})),
                  "booking"),
          c->log_dir_);
      if (!booking.ok()) return booking.status();
      auto channel = TlsChannel((*booking)->address());
      c->booking_channels_.push_back(channel);
      c->booking_.push_back(booking::v1::BookingService::NewStub(channel));
      c->booking_processes_.push_back(*std::move(booking));
    }
    // The listening line comes after the bind; a connected channel is a
    // bounded, not a timed, wait.
    std::vector<std::shared_ptr<grpc::Channel>> all = c->booking_channels_;
    all.push_back(c->inventory_channel_);
    for (auto& ch : all) {
      if (!ch->WaitForConnected(absl::ToChronoTime(absl::Now() + kChildStartTimeout))) {
        return absl::UnavailableError("a child printed its address but does not accept connections");
      }
    }
    c->admin_token_ = c->Mint("admin", "", {Role::kConsortiumAdmin});
    return c;
  }

  ~BookingTestCluster() { Stop(); }
  BookingTestCluster(const BookingTestCluster&) = delete;
  BookingTestCluster& operator=(const BookingTestCluster&) = delete;

  // Stops the children (SIGTERM to all, then waits for each), then Redis.
  // Returns one line per child: how it ended and when. Idempotent.
  std::vector<std::string> Stop() {
    std::vector<std::string> report;
    // Our connections go first, so the servers have nothing to drain.
    booking_.clear();
    booking_channels_.clear();
    inventory_.reset();
    inventory_channel_.reset();
    std::vector<ChildProcess*> children;
    for (auto& p : booking_processes_) children.push_back(p.get());
    if (inventory_process_ != nullptr) children.push_back(inventory_process_.get());
    // All at once: each drains for a few seconds after SIGTERM.
    const absl::Time t0 = absl::Now();
    for (ChildProcess* p : children) p->Terminate();
    for (ChildProcess* p : children) {
      std::string how = p->WaitExit();
      report.push_back(absl::StrCat(p->name(), ": ", how, " within ",
                                    absl::FormatDuration(absl::Trunc(absl::Now() - t0, absl::Milliseconds(1))),
                                    " of SIGTERM"));
    }
    booking_processes_.clear();
    inventory_process_.reset();
    pool_.reset();
    redis_.reset();
    if (!keep_logs_ && !log_dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(log_dir_, ec);
      log_dir_.clear();
    }
    return report;
  }

  RedisPool& redis() { return *pool_; }
  const RedisServer& redis_server() const { return *redis_; }
  inventory::v1::InventoryService::Stub& inventory() { return *inventory_; }
  int booking_replicas() const { return static_cast<int>(booking_.size()); }
  booking::v1::BookingService::Stub& booking(int i) { return *booking_[static_cast<size_t>(i)]; }
  const std::string& admin_token() const { return admin_token_; }
  const std::string& log_dir() const { return log_dir_; }
  const std::string& bin_dir() const { return bin_dir_; }
  const std::string& inventory_address() const { return inventory_process_->address(); }
  // The process of booking replica i, e.g. for a kill -9 (the cluster reaps
  // it at Stop; DeadChildren() then lists it).
  pid_t booking_pid(int i) const { return booking_processes_[static_cast<size_t>(i)]->pid(); }

  // A token valid for 55 minutes on the services' (wall) clock (they
  // accept at most 1 h).
  std::string Mint(const std::string& user, const std::string& org, std::vector<Role> roles) const {
    const absl::Time now = absl::Now();
    Principal p{user, org, std::move(roles), now + absl::Minutes(55)};
    return testing::Mint(p, now - absl::Seconds(5));
  }

  // A context with the admin token and a deadline.
  std::unique_ptr<grpc::ClientContext> AdminContext() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + admin_token_);
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    return ctx;
  }

  // Children that ended on their own, each with how; empty if all run.
  std::vector<std::string> DeadChildren() {
    std::vector<std::string> dead;
    auto check = [&](ChildProcess* p) {
      std::string how = p->ExitedEarly();
      if (!how.empty()) dead.push_back(absl::StrCat(p->name(), ": ", how));
    };
    if (inventory_process_ != nullptr) check(inventory_process_.get());
    for (auto& p : booking_processes_) check(p.get());
    return dead;
  }

  // Tails of every child's stderr; also keeps the log directory on disk.
  std::string DumpLogs(size_t tail_bytes) {
    keep_logs_ = true;
    std::string out = absl::StrCat("child logs kept in ", log_dir_, "\n");
    auto dump = [&](const ChildProcess* p) {
      absl::StrAppend(&out, "----- ", p->name(), " (", p->address(), ") stderr tail -----\n",
                      p->StderrTail(tail_bytes), "\n");
    };
    if (inventory_process_ != nullptr) dump(inventory_process_.get());
    for (const auto& p : booking_processes_) dump(p.get());
    return out;
  }

  // ------------------------------------------------------------ inventory seed

  absl::Status CreateMemberOrganization(const std::string& id, const std::string& tier) {
    inventory::v1::CreateOrganizationRequest r;
    r.set_organization_id(id);
    r.mutable_organization()->set_display_name(id);
    r.mutable_organization()->set_type(inventory::v1::UNIVERSITY);
    r.mutable_organization()->set_membership_state(inventory::v1::MEMBER);
    r.mutable_organization()->set_tier(tier);
    inventory::v1::Organization out;
    return Check("CreateOrganization", inventory_->CreateOrganization(AdminContext().get(), r, &out));
  }

  absl::Status CreateFacility(const std::string& id, const std::string& owner_org) {
    inventory::v1::CreateFacilityRequest r;
    r.set_facility_id(id);
    r.mutable_facility()->set_display_name(id);
    r.mutable_facility()->set_owner_organization("organizations/" + owner_org);
    r.mutable_facility()->mutable_access_policy()->set_allow_members(true);
    inventory::v1::Facility out;
    return Check("CreateFacility", inventory_->CreateFacility(AdminContext().get(), r, &out));
  }

  // One ON_SITE offering: blocks 1 min .. 24 h, horizons 3650 days, no notice,
  // no qualification, the given buffer; plus a MEMBER PER_HOUR rate line of
  // 500.00 CNY. `adjust`, when given, changes both before they are sent
  // (e.g. fees and a late-cancellation notice, another price).
  absl::Status CreateInstrument(
      const std::string& id, const std::string& facility, const std::string& owner_org, absl::Duration buffer,
      const std::function<void(inventory::v1::Instrument*, inventory::v1::Rate*)>& adjust = nullptr) {
    inventory::v1::CreateInstrumentRequest r;
    r.set_instrument_id(id);
    auto* in = r.mutable_instrument();
    in->set_display_name(id);
    in->set_owner_organization("organizations/" + owner_org);
    in->set_facility("facilities/" + facility);
    in->set_category("electron-microscopy");
    in->mutable_original_value()->set_currency_code("CNY");
    in->mutable_original_value()->set_amount_minor(100000000);
    in->set_daily_available_hours(24);
    auto* m = in->add_modes();
    m->set_mode(type::v1::ON_SITE);
    auto* sr = m->mutable_slot_rules();
    *sr->mutable_min_block() = ToProto(absl::Minutes(1));
    *sr->mutable_max_block() = ToProto(absl::Hours(24));
    *sr->mutable_member_horizon() = ToProto(absl::Hours(24 * 3650));
    *sr->mutable_non_member_horizon() = ToProto(absl::Hours(24 * 3650));
    *sr->mutable_min_notice() = ToProto(absl::ZeroDuration());
    *sr->mutable_buffer() = ToProto(buffer);
    sr->set_billing_basis(inventory::v1::ACTUAL_TIME);
    *sr->mutable_billing_unit() = ToProto(absl::Minutes(15));
    sr->set_qualification_validity_days(0);
    inventory::v1::CreateRateRequest rate;
    rate.set_parent("instruments/" + id);
    rate.mutable_rate()->set_mode(type::v1::ON_SITE);
    rate.mutable_rate()->set_payer_class(type::v1::MEMBER);
    rate.mutable_rate()->set_unit(inventory::v1::PER_HOUR);
    rate.mutable_rate()->mutable_price()->set_currency_code("CNY");
    rate.mutable_rate()->mutable_price()->set_amount_minor(50000);
    if (adjust) adjust(in, rate.mutable_rate());
    inventory::v1::Instrument out;
    absl::Status s = Check("CreateInstrument", inventory_->CreateInstrument(AdminContext().get(), r, &out));
    if (!s.ok()) return s;
    inventory::v1::Rate rate_out;
    return Check("CreateRate", inventory_->CreateRate(AdminContext().get(), rate, &rate_out));
  }

  absl::Status CreateLabUser(const std::string& id, const std::string& org) {
    inventory::v1::CreateUserRequest r;
    r.set_user_id(id);
    r.mutable_user()->set_display_name(id);
    r.mutable_user()->set_organization("organizations/" + org);
    r.mutable_user()->add_roles(type::v1::LAB_USER);
    inventory::v1::User out;
    return Check("CreateUser", inventory_->CreateUser(AdminContext().get(), r, &out));
  }

 private:
  BookingTestCluster() = default;

  static absl::Status Check(const char* what, const grpc::Status& s) {
    if (s.ok()) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat(what, ": ", GrpcErrorReason(s), " ", s.error_message()));
  }

  std::string log_dir_;
  bool keep_logs_ = false;
  std::string bin_dir_;
  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<ChildProcess> inventory_process_;
  std::shared_ptr<grpc::Channel> inventory_channel_;
  std::unique_ptr<inventory::v1::InventoryService::Stub> inventory_;
  std::vector<std::unique_ptr<ChildProcess>> booking_processes_;
  std::vector<std::shared_ptr<grpc::Channel>> booking_channels_;
  std::vector<std::unique_ptr<booking::v1::BookingService::Stub>> booking_;
  std::string admin_token_;
};

}  // namespace labshare::testing

#endif  // LABSHARE_TESTS_BOOKING_BOOKING_TEST_CLUSTER_H_
