// Sign-in end to end, with real processes only: redis-server, the
// development OpenID Connect provider (deploy/oidc/server.mjs, over HTTPS
// with a certificate made here by openssl), a second provider (another
// issuer), labshare-inventory serving labshare.identity.v1, and the
// `labshare` command line. The person at the browser is played by
// deploy/oidc/approve-device.mjs (device flow) and browser-sign-in.mjs
// (authorization code + PKCE) through the provider's real pages.
//
// ID tokens the provider would never issue (expired, another audience, a
// forged signature, an impostor subject) are signed by
// tests/identity/sign-id-token.mjs with the provider's own key file.
//
// Needs node (found with `command -v node`) and `npm ci` done in deploy/oidc
// (done here once when node_modules is missing).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/http_client.h"
#include "common/redis.h"
#include "common/token.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "labshare/identity/v1/identity.grpc.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

namespace labshare::testing {
namespace {

namespace idv1 = identity::v1;
namespace inv = inventory::v1;
namespace t = labshare::type::v1;

constexpr absl::Duration kStartTimeout = absl::Seconds(60);

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& content, mode_t mode = 0600) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  fchmod(fd, mode);
  close(fd);
}

// A child process: stdout through a pipe (read line by line), stderr to a
// file. SIGTERM when the test process dies (PR_SET_PDEATHSIG).
class Proc {
 public:
  static std::unique_ptr<Proc> Start(const std::vector<std::string>& args, const std::vector<std::string>& env_extra,
                                     const std::string& stderr_path) {
    std::unique_ptr<Proc> p(new Proc());
    p->stderr_path_ = stderr_path;
    std::vector<std::string> argv_s = args, env_s;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) env_s.emplace_back(*e);
    for (const auto& e : env_extra) {
      const std::string key = e.substr(0, e.find('=') + 1);
      env_s.erase(std::remove_if(env_s.begin(), env_s.end(), [&](const std::string& x) { return absl::StartsWith(x, key); }),
                  env_s.end());
      env_s.push_back(e);
    }
    std::vector<char*> argv, envp;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return nullptr;
    const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      if (dup2(out[1], STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0) _exit(126);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(125);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    close(out[1]);
    close(err);
    p->pid_ = pid;
    p->fd_ = out[0];
    return p;
  }

  ~Proc() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      Wait(absl::Seconds(10));
    }
    if (fd_ >= 0) close(fd_);
  }

  // The first stdout line starting with `prefix` (the rest of it), or "" at
  // EOF or timeout. Earlier lines are kept in output().
  std::string ReadLine(const std::string& prefix, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      size_t nl;
      while ((nl = buffer_.find('\n')) != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        output_ += line + "\n";
        const size_t at = line.find(prefix);
        if (at != std::string::npos) return line.substr(at + prefix.size());
      }
      if (!Fill(deadline)) return "";
    }
  }

  // Waits for exit (SIGKILL after `timeout`); the exit code, or -1.
  int Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (Fill(std::min(deadline, absl::Now() + absl::Milliseconds(50)))) {
    }
    int status = 0;
    while (pid_ > 0) {
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (absl::Now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      Fill(absl::Now() + absl::Milliseconds(20));
    }
    pid_ = -1;
    while (Fill(absl::Now())) {
    }
    output_ += buffer_;
    buffer_.clear();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  const std::string& output() const { return output_; }
  std::string stderr_text() const { return Slurp(stderr_path_); }

 private:
  Proc() = default;

  // Reads what is there until `deadline`; false at EOF or timeout.
  bool Fill(absl::Time deadline) {
    if (fd_ < 0) return false;
    const int64_t ms = std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(std::min<int64_t>(ms, 1000))) <= 0) return absl::Now() < deadline;
    char chunk[4096];
    const ssize_t n = read(fd_, chunk, sizeof(chunk));
    if (n <= 0) {
      close(fd_);
      fd_ = -1;
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buffer_, output_, stderr_path_;
};

struct RunResult {
  int code = -1;
  std::string out, err;
};

std::string LogDir();

RunResult RunCmd(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
              absl::Duration timeout = absl::Seconds(120)) {
  static int n = 0;
  auto p = Proc::Start(args, env, absl::StrCat(LogDir(), "/run-", ++n, ".stderr"));
  RunResult r;
  r.code = p->Wait(timeout);
  r.out = p->output();
  r.err = p->stderr_text();
  return r;
}

std::string Which(const std::string& program) {
  for (absl::string_view dir : absl::StrSplit(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin", ':')) {
    const std::string path = absl::StrCat(dir, "/", program);
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

std::string OidcDir() { return absl::StrCat(LABSHARE_SOURCE_DIR, "/deploy/oidc"); }
std::string BinDir() {
  const char* env = getenv("LABSHARE_BIN_DIR");
  return env != nullptr && *env ? env : LABSHARE_BIN_DIR;
}

// The claims of a JWT, unverified (the test reads what inventory minted).
google::protobuf::Struct Claims(const std::string& jwt) {
  std::vector<std::string> parts = absl::StrSplit(jwt, '.');
  std::string json;
  google::protobuf::Struct s;
  if (parts.size() == 3 && absl::WebSafeBase64Unescape(parts[1], &json)) {
    (void)google::protobuf::util::JsonStringToMessage(json, &s);
  }
  return s;
}

std::string Str(const google::protobuf::Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? "" : it->second.string_value();
}

std::vector<std::string> Strs(const google::protobuf::Struct& s, const std::string& name) {
  std::vector<std::string> out;
  auto it = s.fields().find(name);
  if (it != s.fields().end()) {
    for (const auto& v : it->second.list_value().values()) out.push_back(v.string_value());
  }
  return out;
}

// ------------------------------------------------------------ the deployment

struct Deployment {
  std::string dir;
  std::string node, cert, key;
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<Proc> provider, other_provider, inventory;
  std::string issuer, other_issuer, provider_keys, inventory_address;
  std::string problem;  // why the deployment could not start
};

Deployment* env = nullptr;

std::string LogDir() { return env->dir; }

constexpr char kRedirect[] = "http://127.0.0.1:9/callback";

std::unique_ptr<Proc> StartProvider(const std::string& name, const std::string& accounts, std::string* issuer) {
  auto p = Proc::Start({env->node, OidcDir() + "/server.mjs", "--listen=127.0.0.1:0", "--accounts=" + accounts,
                        "--tls_cert=" + env->cert, "--tls_key=" + env->key,
                        "--keys=" + env->dir + "/" + name + "-keys.json",
                        absl::StrCat("--console_redirect_uri=", kRedirect)},
                       {}, env->dir + "/" + name + ".stderr");
  *issuer = p->ReadLine("listening on ", kStartTimeout);
  return p;
}

absl::Status StartDeployment() {
  char tmpl[] = "/tmp/labshare-identity-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp");
  env->dir = tmpl;
  env->node = Which("node");
  if (env->node.empty()) return absl::FailedPreconditionError("node is not on PATH");
  if (access((OidcDir() + "/node_modules/oidc-provider").c_str(), F_OK) != 0) {
    RunResult npm = RunCmd({Which("npm"), "ci", "--prefix", OidcDir(), "--no-audit", "--no-fund"}, {}, absl::Minutes(5));
    if (npm.code != 0) return absl::FailedPreconditionError("npm ci in deploy/oidc failed: " + npm.err);
  }
  // The provider's HTTPS certificate: self-signed for 127.0.0.1, its own CA.
  env->cert = env->dir + "/provider.crt";
  env->key = env->dir + "/provider.key";
  RunResult ossl = RunCmd({Which("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", env->key, "-out", env->cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"});
  if (ossl.code != 0) return absl::InternalError("openssl: " + ossl.err);

  // The demo people plus one whose email the provider has not verified.
  RunResult hash = RunCmd({env->node, OidcDir() + "/hash-password.mjs", "pw-unverified"});
  if (hash.code != 0) return absl::InternalError("hash-password.mjs: " + hash.err);
  std::string accounts = Slurp(OidcDir() + "/demo-accounts.json");
  const size_t open = accounts.find('[');
  accounts.insert(open + 1, absl::StrCat(R"({"sub": "acct-unverified", "username": "unverified", )",
                                         R"("email": "unverified@example.org", "email_verified": false, )",
                                         R"("name": "Not Verified", "password": ")",
                                         absl::StripAsciiWhitespace(hash.out), "\"},"));
  WriteFile(env->dir + "/accounts.json", accounts);

  env->provider = StartProvider("provider", env->dir + "/accounts.json", &env->issuer);
  if (env->issuer.empty()) return absl::UnavailableError("provider: " + env->provider->stderr_text());
  env->provider_keys = env->dir + "/provider-keys.json";
  env->other_provider = StartProvider("other-provider", env->dir + "/accounts.json", &env->other_issuer);
  if (env->other_issuer.empty()) return absl::UnavailableError("other provider: " + env->other_provider->stderr_text());

  auto redis = RedisServer::Start();
  if (!redis.ok()) return redis.status();
  env->redis = *std::move(redis);

  // Inventory signs with the test issuer's key, so that the tests' own
  // administrator token (tests/support/test_tokens.h) and the tokens it
  // mints verify alike.
  std::vector<std::string> args = {BinDir() + "/labshare-inventory", "--listen=127.0.0.1:0",
                                   "--redis=" + env->redis->address(), "--token_signing_key_file=" + TestSigningKeyFile(),
                                   "--oidc_issuer=" + env->issuer, "--oidc_ca_file=" + env->cert};
  for (const auto& f : TestTokenFlags()) args.push_back(f);
  env->inventory = Proc::Start(args, {}, env->dir + "/inventory.stderr");
  env->inventory_address = env->inventory->ReadLine("listening on ", kStartTimeout);
  if (env->inventory_address.empty()) return absl::UnavailableError("inventory: " + env->inventory->stderr_text());
  return absl::OkStatus();
}

// ------------------------------------------------------------ calls

std::string AdminToken() { return Mint("admin", "zju", {Role::kConsortiumAdmin}); }

std::shared_ptr<grpc::Channel> Channel() {
  return grpc::CreateChannel(env->inventory_address, grpc::InsecureChannelCredentials());
}

template <typename Stub, typename Req, typename Resp>
grpc::Status Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), const Req& req, Resp* resp,
                  const std::string& token = "", const std::string& authorization = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
  Stub stub(Channel());
  return (stub.*method)(&ctx, req, resp);
}

grpc::Status Exchange(const std::string& id_token, idv1::TokenResponse* out, const std::string& authorization = "") {
  idv1::ExchangeTokenRequest req;
  req.set_id_token(id_token);
  return Call(&idv1::IdentityService::Stub::ExchangeToken, req, out, "", authorization);
}

grpc::Status Refresh(const std::string& refresh_token, idv1::TokenResponse* out) {
  idv1::RefreshTokenRequest req;
  req.set_refresh_token(refresh_token);
  return Call(&idv1::IdentityService::Stub::RefreshToken, req, out);
}

grpc::Status Revoke(const std::string& refresh_token) {
  idv1::RevokeTokenRequest req;
  req.set_refresh_token(refresh_token);
  idv1::RevokeTokenResponse out;
  return Call(&idv1::IdentityService::Stub::RevokeToken, req, &out);
}

// The ID token of a browser sign-in (authorization code + PKCE) at `issuer`.
std::string BrowserIdToken(const std::string& login, const std::string& password, const std::string& issuer = "") {
  RunResult r = RunCmd({env->node, OidcDir() + "/browser-sign-in.mjs", "--issuer=" + (issuer.empty() ? env->issuer : issuer),
                     absl::StrCat("--redirect_uri=", kRedirect), "--login=" + login, "--password=" + password,
                     "--ca=" + env->cert});
  EXPECT_EQ(r.code, 0) << r.err;
  google::protobuf::Struct s;
  (void)google::protobuf::util::JsonStringToMessage(r.out, &s);
  return Str(s, "id_token");
}

std::string Demo(const std::string& id) { return id + "@example.org"; }
std::string DemoPassword(const std::string& id) { return "demo-" + id; }

// An ID token signed with the provider's key, with the given claims.
std::string SignedIdToken(const std::string& claims_json, bool foreign_key = false) {
  std::vector<std::string> args = {env->node, absl::StrCat(LABSHARE_SOURCE_DIR, "/tests/identity/sign-id-token.mjs"),
                                   "--keys=" + env->provider_keys, "--claims=" + claims_json};
  if (foreign_key) args.push_back("--foreign_key");
  RunResult r = RunCmd(args);
  EXPECT_EQ(r.code, 0) << r.err;
  return std::string(absl::StripAsciiWhitespace(r.out));
}

std::string IdClaims(const std::string& sub, const std::string& email, const std::string& aud, int64_t iat, int64_t exp) {
  return absl::StrCat(R"({"iss":")", env->issuer, R"(","sub":")", sub, R"(","aud":")", aud, R"(","email":")", email,
                      R"(","email_verified":true,"iat":)", iat, R"(,"exp":)", exp, "}");
}

void CreateOrg(const std::string& id, inv::MembershipState state, const std::string& tier) {
  inv::CreateOrganizationRequest req;
  req.set_organization_id(id);
  req.mutable_organization()->set_display_name(id);
  req.mutable_organization()->set_type(inv::UNIVERSITY);
  req.mutable_organization()->set_membership_state(state);
  req.mutable_organization()->set_tier(tier);
  inv::Organization out;
  grpc::Status s = Call(&inv::InventoryService::Stub::CreateOrganization, req, &out, AdminToken());
  ASSERT_TRUE(s.ok()) << s.error_message();
}

void CreateUser(const std::string& id, const std::string& org, t::Role role, const std::string& subject,
                const std::string& email = "") {
  inv::CreateUserRequest req;
  req.set_user_id(id);
  req.mutable_user()->set_display_name(id);
  req.mutable_user()->set_email(email.empty() ? Demo(id) : email);
  req.mutable_user()->set_organization("organizations/" + org);
  req.mutable_user()->add_roles(role);
  req.mutable_user()->set_external_subject(subject);
  inv::User out;
  grpc::Status s = Call(&inv::InventoryService::Stub::CreateUser, req, &out, AdminToken());
  ASSERT_TRUE(s.ok()) << s.error_message();
}

class IdentityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    env = new Deployment();
    absl::Status s = StartDeployment();
    if (!s.ok()) {
      env->problem = s.ToString();
      return;
    }
    CreateOrg("nanocraft", inv::MEMBER, "CORE");
    CreateOrg("biotek", inv::MEMBER, "GENERAL");
    CreateOrg("ecowater", inv::MEMBER, "GENERAL");
    CreateOrg("zju", inv::MEMBER, "CORE");
    // li-wei by subject; chen-jing, sun-mei, liu-yang by verified email;
    // nobody for auditor@example.org; "unverified" only by an unverified email.
    CreateUser("li-wei", "nanocraft", t::LAB_USER, "acct-li-wei");
    CreateUser("chen-jing", "biotek", t::LAB_USER, "");
    CreateUser("sun-mei", "nanocraft", t::MEMBER_BILLING_ADMIN, "");
    CreateUser("liu-yang", "ecowater", t::LAB_USER, "");
    CreateUser("wang-fang", "zju", t::FACILITY_STAFF, "");
    CreateUser("zhao-lei", "zju", t::LAB_USER, "");
    CreateUser("unverified", "zju", t::LAB_USER, "", "unverified@example.org");
  }
  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }
  void SetUp() override {
    if (!env->problem.empty()) GTEST_FAIL() << "deployment did not start: " << env->problem;
  }
};

// ------------------------------------------------------------ device flow through the CLI

TEST_F(IdentityTest, LabshareLoginDeviceFlowStoresInventoryIdentityPrivately) {
  const std::string home = env->dir + "/home-li";
  ASSERT_EQ(mkdir(home.c_str(), 0755), 0);
  // The provider and the CA come from the config file, as a user sets them once.
  WriteFile(home + "/config", absl::StrCat("issuer = ", env->issuer, "\noidc_ca_file = ", env->cert, "\n"), 0644);
  const std::vector<std::string> cli_env = {"HOME=" + home, "XDG_CONFIG_HOME=" + home + "/xdg",
                                            "LABSHARE_CONFIG=" + home + "/config"};
  auto login = Proc::Start({BinDir() + "/labshare", "login", "--inventory=" + env->inventory_address}, cli_env,
                           env->dir + "/login.stderr");
  const std::string code = login->ReadLine("shows the code: ", absl::Seconds(30));
  ASSERT_FALSE(code.empty()) << login->output() << login->stderr_text();
  RunResult approve = RunCmd({env->node, OidcDir() + "/approve-device.mjs", "--issuer=" + env->issuer,
                           "--user_code=" + code, "--login=" + Demo("li-wei"), "--password=" + DemoPassword("li-wei"),
                           "--ca=" + env->cert});
  ASSERT_EQ(approve.code, 0) << approve.err;
  ASSERT_EQ(login->Wait(absl::Seconds(60)), 0) << login->output() << login->stderr_text();
  EXPECT_TRUE(absl::StrContains(login->output(), "users/li-wei")) << login->output();

  const std::string dir = home + "/xdg/labshare";
  const std::string file = dir + "/credentials.json";
  struct stat st {};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  google::protobuf::Struct creds;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(Slurp(file), &creds).ok());
  const auto claims = Claims(Str(creds, "access_token"));
  // Inventory's records, not the provider's claims.
  EXPECT_EQ(Str(claims, "sub"), "li-wei");
  EXPECT_EQ(Str(claims, "org"), "nanocraft");
  EXPECT_EQ(Strs(claims, "roles"), std::vector<std::string>{"lab_user"});
  EXPECT_EQ(Str(claims, "iss"), "labshare");
  const double lifetime = claims.fields().at("exp").number_value() - claims.fields().at("iat").number_value();
  EXPECT_EQ(lifetime, 15 * 60);

  // Later calls carry the stored token.
  RunResult get = RunCmd({BinDir() + "/labshare", "--inventory=" + env->inventory_address, "inventory", "GetUser",
                       "users/li-wei", "--json"},
                      cli_env);
  EXPECT_EQ(get.code, 0) << get.err;
  EXPECT_TRUE(absl::StrContains(get.out, "\"acct-li-wei\"")) << get.out;

  // Fewer than 60 s left: the next command refreshes first (and rotates).
  const std::string first_refresh = Str(creds, "refresh_token");
  (*creds.mutable_fields())["expire_time"].set_number_value(static_cast<double>(absl::ToUnixSeconds(absl::Now()) + 30));
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(creds, &json).ok());
  WriteFile(file, json);
  RunResult who = RunCmd({BinDir() + "/labshare", "whoami", "--json"}, cli_env);
  ASSERT_EQ(who.code, 0) << who.err;
  EXPECT_TRUE(absl::StrContains(who.out, "users/li-wei")) << who.out;
  google::protobuf::Struct after;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(Slurp(file), &after).ok());
  EXPECT_NE(Str(after, "refresh_token"), first_refresh);
  EXPECT_NE(Str(after, "access_token"), Str(creds, "access_token"));
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // logout revokes the session at inventory and deletes the file.
  const std::string refresh = Str(after, "refresh_token");
  RunResult logout = RunCmd({BinDir() + "/labshare", "logout"}, cli_env);
  EXPECT_EQ(logout.code, 0) << logout.err;
  EXPECT_NE(access(file.c_str(), F_OK), 0);
  idv1::TokenResponse resp;
  grpc::Status s = Refresh(refresh, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_REFRESH_TOKEN");
  RunResult again = RunCmd({BinDir() + "/labshare", "whoami"}, cli_env);
  EXPECT_EQ(again.code, 26) << again.out;
}

TEST_F(IdentityTest, ApproveDeviceRefusesAWrongPasswordAndAnUnknownCode) {
  HttpOptions http;
  http.ca_file = env->cert;
  auto start = HttpPostForm(env->issuer + "/device/auth", {{"client_id", "labshare-cli"}, {"scope", "openid email"}}, http);
  ASSERT_TRUE(start.ok()) << start.status();
  google::protobuf::Struct device;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(start->body, &device).ok()) << start->body;
  RunResult wrong = RunCmd({env->node, OidcDir() + "/approve-device.mjs", "--issuer=" + env->issuer,
                            "--user_code=" + Str(device, "user_code"), "--login=" + Demo("li-wei"),
                            "--password=not-" + DemoPassword("li-wei"), "--ca=" + env->cert});
  EXPECT_EQ(wrong.code, 1);
  EXPECT_TRUE(absl::StrContains(wrong.err, "Wrong email, username or password")) << wrong.err;
  // Nothing was approved: the device still waits.
  auto poll = HttpPostForm(env->issuer + "/token",
                           {{"grant_type", "urn:ietf:params:oauth:grant-type:device_code"},
                            {"device_code", Str(device, "device_code")}, {"client_id", "labshare-cli"}},
                           http);
  ASSERT_TRUE(poll.ok()) << poll.status();
  EXPECT_TRUE(absl::StrContains(poll->body, "authorization_pending")) << poll->body;

  RunResult unknown = RunCmd({env->node, OidcDir() + "/approve-device.mjs", "--issuer=" + env->issuer,
                              "--user_code=BCDF-GHJK", "--login=" + Demo("li-wei"),
                              "--password=" + DemoPassword("li-wei"), "--ca=" + env->cert});
  EXPECT_EQ(unknown.code, 1);
}

// ------------------------------------------------------------ browser flow

TEST_F(IdentityTest, BrowserCodeFlowWithPkceMatchesByVerifiedEmail) {
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(BrowserIdToken(Demo("chen-jing"), DemoPassword("chen-jing")), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.user().name(), "users/chen-jing");
  EXPECT_EQ(resp.user().organization(), "organizations/biotek");
  EXPECT_EQ(resp.token_type(), "Bearer");
  EXPECT_EQ(resp.expires_in(), 15 * 60);
  const auto claims = Claims(resp.access_token());
  EXPECT_EQ(Str(claims, "sub"), "chen-jing");
  EXPECT_EQ(Str(claims, "org"), "biotek");
  // The token opens inventory.
  inv::GetUserRequest get;
  get.set_name("users/chen-jing");
  inv::User user;
  s = Call(&inv::InventoryService::Stub::GetUser, get, &user, resp.access_token());
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(IdentityTest, ProviderRefusesTheCodeFlowWithoutPkce) {
  RunResult r = RunCmd({env->node, OidcDir() + "/browser-sign-in.mjs", "--issuer=" + env->issuer,
                     absl::StrCat("--redirect_uri=", kRedirect), "--login=" + Demo("chen-jing"),
                     "--password=" + DemoPassword("chen-jing"), "--ca=" + env->cert, "--pkce=none"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "PKCE")) << r.err;
}

TEST_F(IdentityTest, ExchangeIgnoresAnyBearerHeader) {
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(BrowserIdToken(Demo("li-wei"), DemoPassword("li-wei")), &resp, "Bearer not-a-token");
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.user().name(), "users/li-wei");
}

// ------------------------------------------------------------ tokens LabShare must refuse

TEST_F(IdentityTest, IdTokenOfAnotherIssuerIsUnauthenticated) {
  const std::string other = BrowserIdToken(Demo("li-wei"), DemoPassword("li-wei"), env->other_issuer);
  ASSERT_FALSE(other.empty());
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(other, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_TOKEN");
}

TEST_F(IdentityTest, IdTokenForAnotherAudienceIsUnauthenticated) {
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(SignedIdToken(IdClaims("acct-li-wei", Demo("li-wei"), "some-other-app", now, now + 600)), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_TOKEN");
  // The same claims for labshare-cli pass: only the audience was wrong.
  s = Exchange(SignedIdToken(IdClaims("acct-li-wei", Demo("li-wei"), "labshare-cli", now, now + 600)), &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(IdentityTest, ExpiredIdTokenIsUnauthenticated) {
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  idv1::TokenResponse resp;
  grpc::Status s =
      Exchange(SignedIdToken(IdClaims("acct-li-wei", Demo("li-wei"), "labshare-cli", now - 900, now - 300)), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "TOKEN_EXPIRED");
}

TEST_F(IdentityTest, ForgedSignatureIsUnauthenticated) {
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(
      SignedIdToken(IdClaims("acct-li-wei", Demo("li-wei"), "labshare-cli", now, now + 600), /*foreign_key=*/true), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_TOKEN");
  s = Exchange("not.a.jwt", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  s = Exchange("", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
}

// ------------------------------------------------------------ who gets a token

TEST_F(IdentityTest, UnknownPersonIsNotRegistered) {
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(BrowserIdToken(Demo("auditor"), DemoPassword("auditor")), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "USER_NOT_REGISTERED");
}

TEST_F(IdentityTest, UnverifiedEmailSignsNobodyIn) {
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(BrowserIdToken("unverified@example.org", "pw-unverified"), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "USER_NOT_REGISTERED");
}

TEST_F(IdentityTest, EmailNeverTakesOverAUserBoundToASubject) {
  // Another account at the provider with li-wei's (verified) email.
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(SignedIdToken(IdClaims("acct-impostor", Demo("li-wei"), "labshare-cli", now, now + 600)), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "USER_NOT_REGISTERED");
}

TEST_F(IdentityTest, SuspendedUserAndOrganisationGetNoTokenAtSignInOrRefresh) {
  idv1::TokenResponse sun, liu;
  ASSERT_TRUE(Exchange(BrowserIdToken(Demo("sun-mei"), DemoPassword("sun-mei")), &sun).ok());
  ASSERT_TRUE(Exchange(BrowserIdToken(Demo("liu-yang"), DemoPassword("liu-yang")), &liu).ok());

  inv::UpdateUserRequest disable;
  disable.mutable_user()->set_name("users/sun-mei");
  disable.mutable_user()->set_disabled(true);
  disable.mutable_update_mask()->add_paths("disabled");
  inv::User user;
  ASSERT_TRUE(Call(&inv::InventoryService::Stub::UpdateUser, disable, &user, AdminToken()).ok());
  inv::ChangeMembershipRequest suspend;
  suspend.set_name("organizations/ecowater");
  suspend.set_membership_state(inv::SUSPENDED);
  suspend.set_reason("unpaid invoices");
  inv::Organization org;
  ASSERT_TRUE(Call(&inv::InventoryService::Stub::ChangeMembership, suspend, &org, AdminToken()).ok());

  idv1::TokenResponse resp;
  grpc::Status s = Exchange(BrowserIdToken(Demo("sun-mei"), DemoPassword("sun-mei")), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "USER_DISABLED");
  s = Exchange(BrowserIdToken(Demo("liu-yang"), DemoPassword("liu-yang")), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SUSPENDED");

  s = Refresh(sun.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "USER_DISABLED");
  s = Refresh(liu.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SUSPENDED");
  // The sessions ended with the refusal: reinstating does not revive them.
  suspend.set_membership_state(inv::MEMBER);
  suspend.set_tier("GENERAL");
  suspend.set_reason("paid");
  ASSERT_TRUE(Call(&inv::InventoryService::Stub::ChangeMembership, suspend, &org, AdminToken()).ok());
  s = Refresh(liu.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_REFRESH_TOKEN");
  EXPECT_TRUE(Exchange(BrowserIdToken(Demo("liu-yang"), DemoPassword("liu-yang")), &resp).ok());
}

// An email shared by more users than a lookup page once held: the one user
// not bound to a subject is found however many bound ones sort before it.
TEST_F(IdentityTest, EmailFindsTheOneUnboundUserBehindManyBoundOnes) {
  const std::string shared = "shared-desk@example.org";
  for (int i = 0; i < 9; ++i) CreateUser(absl::StrCat("a-desk-", i), "zju", t::LAB_USER, absl::StrCat("acct-desk-", i), shared);
  CreateUser("z-desk", "zju", t::LAB_USER, "", shared);
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  idv1::TokenResponse resp;
  grpc::Status s = Exchange(SignedIdToken(IdClaims("acct-new-desk", shared, "labshare-cli", now, now + 600)), &resp);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
  EXPECT_EQ(Str(Claims(resp.access_token()), "sub"), "z-desk");
}

// ------------------------------------------------------------ refresh and sign-out

TEST_F(IdentityTest, RefreshRotatesRereadsRolesAndReuseRevokesTheSession) {
  idv1::TokenResponse first;
  ASSERT_TRUE(Exchange(BrowserIdToken(Demo("wang-fang"), DemoPassword("wang-fang")), &first).ok());
  EXPECT_EQ(Strs(Claims(first.access_token()), "roles"), std::vector<std::string>{"facility_staff"});

  // A role granted in inventory shows in the next refreshed token.
  inv::UpdateUserRequest grant;
  grant.mutable_user()->set_name("users/wang-fang");
  grant.mutable_user()->add_roles(t::FACILITY_STAFF);
  grant.mutable_user()->add_roles(t::LAB_USER);
  grant.mutable_update_mask()->add_paths("roles");
  inv::User user;
  ASSERT_TRUE(Call(&inv::InventoryService::Stub::UpdateUser, grant, &user, AdminToken()).ok());

  idv1::TokenResponse second;
  grpc::Status s = Refresh(first.refresh_token(), &second);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(second.refresh_token(), first.refresh_token());
  EXPECT_EQ(Strs(Claims(second.access_token()), "roles"), (std::vector<std::string>{"facility_staff", "lab_user"}));

  // The first refresh token again: someone copied it. The whole session ends.
  idv1::TokenResponse resp;
  s = Refresh(first.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "REFRESH_TOKEN_REUSED");
  s = Refresh(second.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_REFRESH_TOKEN");
}

// identity.proto RefreshToken: "Presenting a refresh token that was already
// used revokes its whole session". A -> B, B -> C, then A after whatever was
// kept of A's own record lapsed (it had a TTL from its use that later
// rotations did not extend, and A then answered INVALID_REFRESH_TOKEN while
// C lived on): REFRESH_TOKEN_REUSED, and C no longer works.
TEST_F(IdentityTest, ATokenUsedTwoRotationsAgoStillRevokesTheSession) {
  RedisPool pool(env->redis->options());
  auto records = [&pool]() {
    std::set<std::string> out;
    auto keys = pool.Command({"KEYS", "{inventory}:refresh:*"});
    EXPECT_TRUE(keys.ok()) << keys.status();
    if (keys.ok()) {
      for (const auto& k : keys->elements) out.insert(k.str);
    }
    return out;
  };
  const std::set<std::string> before = records();
  idv1::TokenResponse a;
  ASSERT_TRUE(Exchange(BrowserIdToken(Demo("wang-fang"), DemoPassword("wang-fang")), &a).ok());
  std::vector<std::string> a_record;
  for (const auto& k : records()) {
    if (before.count(k) == 0) a_record.push_back(k);
  }
  ASSERT_EQ(a_record.size(), 1u);
  idv1::TokenResponse b, c;
  ASSERT_TRUE(Refresh(a.refresh_token(), &b).ok());
  ASSERT_TRUE(Refresh(b.refresh_token(), &c).ok());
  ASSERT_TRUE(pool.Command({"DEL", a_record[0]}).ok());

  idv1::TokenResponse resp;
  grpc::Status s = Refresh(a.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "REFRESH_TOKEN_REUSED");
  s = Refresh(c.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_REFRESH_TOKEN");
}

TEST_F(IdentityTest, RevokeEndsTheSessionAndIsIdempotent) {
  idv1::TokenResponse first;
  ASSERT_TRUE(Exchange(BrowserIdToken(Demo("zhao-lei"), DemoPassword("zhao-lei")), &first).ok());
  idv1::TokenResponse second;
  ASSERT_TRUE(Refresh(first.refresh_token(), &second).ok());
  EXPECT_TRUE(Revoke(second.refresh_token()).ok());
  idv1::TokenResponse resp;
  grpc::Status s = Refresh(second.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_REFRESH_TOKEN");
  EXPECT_TRUE(Revoke(second.refresh_token()).ok());
  EXPECT_TRUE(Revoke("lsr1.unknown").ok());
  s = Revoke("");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  s = Refresh("made-up", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_REFRESH_TOKEN");
}

// RefreshToken reads the person before it uses the token up: a refresh that
// cannot read them (here their record is unreadable; in service, Redis
// unreachable: UNAVAILABLE, which the client retries) leaves the token
// unused, and the same token works once the person can be read again
// (it used to answer REFRESH_TOKEN_REUSED and end the session).
TEST_F(IdentityTest, ARefreshThatCannotReadThePersonLeavesTheTokenUnused) {
  idv1::TokenResponse first;
  ASSERT_TRUE(Exchange(BrowserIdToken(Demo("chen-jing"), DemoPassword("chen-jing")), &first).ok());
  RedisPool pool(env->redis->options());
  const std::string key = "{inventory}:user:chen-jing";
  auto dump = pool.Command({"DUMP", key});
  ASSERT_TRUE(dump.ok() && dump->type == RedisValue::Type::kString) << dump.status();
  ASSERT_TRUE(pool.Command({"SET", key, "not a user record"}).ok());
  idv1::TokenResponse resp;
  grpc::Status s = Refresh(first.refresh_token(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), "STORAGE_ERROR");
  ASSERT_TRUE(pool.Command({"DEL", key}).ok());
  ASSERT_TRUE(pool.Command({"RESTORE", key, "0", dump->str}).ok());
  s = Refresh(first.refresh_token(), &resp);
  ASSERT_TRUE(s.ok()) << GrpcErrorReason(s) << " " << s.error_message();
  EXPECT_NE(resp.refresh_token(), first.refresh_token());
  EXPECT_EQ(Str(Claims(resp.access_token()), "sub"), "chen-jing");
}

}  // namespace
}  // namespace labshare::testing
