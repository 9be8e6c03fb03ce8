#include "services/cli/login.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "common/http_client.h"
#include "services/cli/format.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "labshare/identity/v1/identity.grpc.pb.h"

namespace labshare::cli {
namespace {

namespace pb = google::protobuf;
namespace idv1 = labshare::identity::v1;

constexpr int kUsage = 2;
constexpr int kLocal = 3;
constexpr char kDefaultInventory[] = "127.0.0.1:50051";
constexpr char kDeviceGrant[] = "urn:ietf:params:oauth:grant-type:device_code";
// Renew the access token when fewer than this remain.
constexpr absl::Duration kRefreshMargin = absl::Seconds(60);

// Under --json, errors are one JSON object on one line on stderr, as for
// every other command of the client (format.h StatusJson, LocalErrorJson).
bool g_json_errors = false;

bool JsonFlag(const std::map<std::string, std::string>& flags) {
  const auto it = flags.find("json");
  bool json = false;
  return it != flags.end() && absl::SimpleAtob(it->second, &json) && json;
}

// The client's own failure: exit 2 (usage) or 3 (local).
[[noreturn]] void Fail(int code, const std::string& message) {
  if (g_json_errors) {
    std::cerr << LocalErrorJson(code == kUsage ? "USAGE" : "LOCAL", message, code) << "\n";
  } else {
    std::cerr << "error: " << message << "\n";
  }
  std::exit(code);
}

[[noreturn]] void FailRpc(const grpc::Status& status) {
  const int code = static_cast<int>(status.error_code());
  if (g_json_errors) {
    std::cerr << StatusJson(status, 10 + code) << "\n";
  } else {
    const std::string reason = GrpcErrorReason(status);
    std::cerr << "error: " << CodeName(code) << (reason.empty() ? "" : " " + reason) << ": " << status.error_message()
              << "\n";
  }
  std::exit(10 + code);
}

// Nobody (any longer) signed in: exit 26, as UNAUTHENTICATED from a service.
[[noreturn]] void FailNotSignedIn(const std::string& message) {
  if (g_json_errors) {
    std::cerr << StatusJson(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, message), 26) << "\n";
  } else {
    std::cerr << "error: " << message << "\n";
  }
  std::exit(26);
}

std::string ConfigDir() {
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x != nullptr && x[0] == '/') {
    return absl::StrCat(x, "/labshare");
  }
  const char* home = std::getenv("HOME");
  if (home == nullptr || home[0] == '\0') Fail(kLocal, "HOME is not set: cannot find the labshare config directory");
  return absl::StrCat(home, "/.config/labshare");
}


class Settings {
 public:
  explicit Settings(const std::map<std::string, std::string>& flags) : flags_(flags), config_(ReadConfigFile()) {}
  std::string Get(const std::string& key, const std::string& fallback = "") const {
    if (auto it = flags_.find(key); it != flags_.end()) return it->second;
    if (const char* e = std::getenv(("LABSHARE_" + absl::AsciiStrToUpper(key)).c_str()); e != nullptr && *e) return e;
    if (auto it = config_.find(key); it != config_.end()) return it->second;
    return fallback;
  }

 private:
  const std::map<std::string, std::string>& flags_;
  const std::map<std::string, std::string> config_;
};

// ------------------------------------------------------------ stored tokens

struct Credentials {
  std::string inventory;  // where they were issued (and are refreshed)
  std::string issuer;
  std::string access_token;
  absl::Time expire_time;  // by this machine's clock
  std::string refresh_token;
  absl::Time refresh_expire_time;
  std::string user, display_name, organization;
  std::vector<std::string> roles;
};

std::string Text(const pb::Struct& s, const char* name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? "" : it->second.string_value();
}

std::optional<Credentials> LoadCredentials() {
  std::ifstream in(CredentialsPath());
  if (!in) return std::nullopt;
  std::stringstream buf;
  buf << in.rdbuf();
  pb::Struct s;
  if (!pb::util::JsonStringToMessage(buf.str(), &s).ok()) {
    Fail(kLocal, CredentialsPath() + " is damaged; run `labshare login` again");
  }
  Credentials c;
  c.inventory = Text(s, "inventory");
  c.issuer = Text(s, "issuer");
  c.access_token = Text(s, "access_token");
  c.refresh_token = Text(s, "refresh_token");
  c.user = Text(s, "user");
  c.display_name = Text(s, "display_name");
  c.organization = Text(s, "organization");
  auto number = [&](const char* name) {
    auto it = s.fields().find(name);
    return it == s.fields().end() ? 0 : static_cast<int64_t>(it->second.number_value());
  };
  c.expire_time = absl::FromUnixSeconds(number("expire_time"));
  c.refresh_expire_time = absl::FromUnixSeconds(number("refresh_expire_time"));
  if (auto it = s.fields().find("roles"); it != s.fields().end()) {
    for (const auto& v : it->second.list_value().values()) c.roles.push_back(v.string_value());
  }
  return c;
}

void EnsureConfigDir() {
  const std::string dir = ConfigDir();
  // mkdir -p with 0700 for what we create; the labshare directory itself is
  // made private whatever it was.
  std::string path;
  for (absl::string_view part : absl::StrSplit(dir, '/', absl::SkipEmpty())) {
    absl::StrAppend(&path, "/", part);
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
      Fail(kLocal, absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
    }
  }
  if (chmod(dir.c_str(), 0700) != 0) Fail(kLocal, absl::StrCat("cannot chmod 700 ", dir, ": ", std::strerror(errno)));
}

// Written to a private temporary file and renamed over the old one, so a
// reader never sees half a file and the tokens are never readable by others.
void SaveCredentials(const Credentials& c) {
  EnsureConfigDir();
  pb::Struct s;
  auto& f = *s.mutable_fields();
  f["inventory"].set_string_value(c.inventory);
  f["issuer"].set_string_value(c.issuer);
  f["access_token"].set_string_value(c.access_token);
  f["expire_time"].set_number_value(static_cast<double>(absl::ToUnixSeconds(c.expire_time)));
  f["refresh_token"].set_string_value(c.refresh_token);
  f["refresh_expire_time"].set_number_value(static_cast<double>(absl::ToUnixSeconds(c.refresh_expire_time)));
  f["user"].set_string_value(c.user);
  f["display_name"].set_string_value(c.display_name);
  f["organization"].set_string_value(c.organization);
  auto* roles = f["roles"].mutable_list_value();
  for (const auto& r : c.roles) roles->add_values()->set_string_value(r);
  std::string json;
  pb::util::JsonPrintOptions o;
  o.add_whitespace = true;
  (void)pb::util::MessageToJsonString(s, &json, o);
  const std::string path = CredentialsPath();
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) Fail(kLocal, absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  bool ok = fchmod(fd, 0600) == 0;
  size_t done = 0;
  while (ok && done < json.size()) {
    const ssize_t n = write(fd, json.data() + done, json.size() - done);
    if (n <= 0) ok = false;
    else done += static_cast<size_t>(n);
  }
  ok = fsync(fd) == 0 && ok;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    Fail(kLocal, absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
}

// An exclusive lock on credentials.json.lock for the lifetime of the object:
// two commands never refresh with the same (single-use) refresh token.
class CredentialsLock {
 public:
  CredentialsLock() {
    EnsureConfigDir();
    const std::string path = CredentialsPath() + ".lock";
    fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0 || flock(fd_, LOCK_EX) != 0) Fail(kLocal, absl::StrCat("cannot lock ", path, ": ", std::strerror(errno)));
  }
  ~CredentialsLock() { close(fd_); }
  CredentialsLock(const CredentialsLock&) = delete;
  CredentialsLock& operator=(const CredentialsLock&) = delete;

 private:
  int fd_ = -1;
};

Credentials FromResponse(const idv1::TokenResponse& r, const std::string& inventory, const std::string& issuer) {
  Credentials c;
  c.inventory = inventory;
  c.issuer = issuer;
  c.access_token = r.access_token();
  // By this machine's clock: expires_in counts from the answer.
  const absl::Time now = absl::Now();
  c.expire_time = now + absl::Seconds(r.expires_in());
  c.refresh_token = r.refresh_token();
  c.refresh_expire_time =
      now + (absl::FromUnixSeconds(r.refresh_expire_time().seconds()) - absl::FromUnixSeconds(r.expire_time().seconds())) +
      absl::Seconds(r.expires_in());
  c.user = r.user().name();
  c.display_name = r.user().display_name();
  c.organization = r.user().organization();
  for (int role : r.user().roles()) c.roles.push_back(labshare::type::v1::Role_Name(role));
  return c;
}

// ------------------------------------------------------------ calls

// The channel to inventory: TLS as for every other call of the client
// (tls_ca / tls_cert / tls_key from the flags, LABSHARE_TLS_*, the config
// file); plaintext only to loopback (common/channel.h).
std::unique_ptr<idv1::IdentityService::Stub> IdentityStub(const std::string& address, const Settings& s) {
  auto channel = labshare::MakeChannelWithFiles(
      address, labshare::TlsFiles{s.Get("tls_cert"), s.Get("tls_key"), s.Get("tls_ca")});
  if (!channel.ok()) Fail(kLocal, std::string(channel.status().message()));
  return idv1::IdentityService::NewStub(*channel);
}

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
}

absl::StatusOr<pb::Struct> JsonObject(const HttpResponse& r, const std::string& what) {
  pb::Struct s;
  if (!pb::util::JsonStringToMessage(r.body, &s).ok()) {
    return absl::UnavailableError(absl::StrCat(what, " answered HTTP ", r.status, " without JSON"));
  }
  return s;
}

double Number(const pb::Struct& s, const char* name, double fallback) {
  auto it = s.fields().find(name);
  return it == s.fields().end() || it->second.kind_case() != pb::Value::kNumberValue ? fallback
                                                                                     : it->second.number_value();
}

// The device authorization grant up to the provider's ID token.
std::string DeviceFlow(const std::string& issuer, const std::string& client_id, const HttpOptions& http) {
  const std::string discovery_url = absl::StrCat(absl::StripSuffix(issuer, "/"), "/.well-known/openid-configuration");
  auto discovery = HttpGet(discovery_url, http);
  if (!discovery.ok()) Fail(kLocal, absl::StrCat("cannot reach the sign-in provider: ", discovery.status().message()));
  auto doc = JsonObject(*discovery, discovery_url);
  if (!doc.ok() || discovery->status != 200) Fail(kLocal, absl::StrCat(discovery_url, " is no OpenID Connect discovery document"));
  if (Text(*doc, "issuer") != issuer) {
    Fail(kLocal, absl::StrCat("the provider calls itself \"", Text(*doc, "issuer"), "\", not \"", issuer,
                              "\"; set issuer to exactly that"));
  }
  const std::string device_endpoint = Text(*doc, "device_authorization_endpoint");
  const std::string token_endpoint = Text(*doc, "token_endpoint");
  if (device_endpoint.empty() || token_endpoint.empty()) {
    Fail(kLocal, "the provider offers no device authorization grant (RFC 8628); ask its administrators");
  }
  auto start = HttpPostForm(device_endpoint, {{"client_id", client_id}, {"scope", "openid email profile"}}, http);
  if (!start.ok()) Fail(kLocal, std::string(start.status().message()));
  auto device = JsonObject(*start, device_endpoint);
  if (!device.ok() || start->status != 200) {
    Fail(kLocal, absl::StrCat("the provider refused to start a device sign-in: ",
                              device.ok() ? Text(*device, "error") + " " + Text(*device, "error_description")
                                          : start->body.substr(0, 200)));
  }
  const std::string device_code = Text(*device, "device_code");
  const std::string user_code = Text(*device, "user_code");
  const std::string uri = Text(*device, "verification_uri");
  std::string complete = Text(*device, "verification_uri_complete");
  std::cout << "To sign in, open this address in a browser:\n  " << (complete.empty() ? uri : complete) << "\n"
            << "and check that it shows the code: " << user_code << "\n"
            << "(or open " << uri << " and type the code)\n"
            << "Waiting for you to sign in..." << std::endl;
  absl::Duration interval = absl::Seconds(Number(*device, "interval", 5));
  const absl::Time deadline = absl::Now() + absl::Seconds(Number(*device, "expires_in", 600));
  while (true) {
    absl::SleepFor(interval);
    if (absl::Now() > deadline) Fail(kLocal, "the code expired before the sign-in finished; run labshare login again");
    auto polled = HttpPostForm(token_endpoint,
                               {{"grant_type", kDeviceGrant}, {"device_code", device_code}, {"client_id", client_id}},
                               http);
    if (!polled.ok()) continue;  // a passing network problem: try again at the next interval
    auto answer = JsonObject(*polled, token_endpoint);
    if (!answer.ok()) continue;
    if (polled->status == 200) {
      const std::string id_token = Text(*answer, "id_token");
      if (id_token.empty()) Fail(kLocal, "the provider answered without an ID token (is the scope openid allowed?)");
      return id_token;
    }
    const std::string error = Text(*answer, "error");
    if (error == "authorization_pending") continue;
    if (error == "slow_down") {
      interval += absl::Seconds(5);  // RFC 8628, section 3.5
      continue;
    }
    if (error == "access_denied") Fail(kLocal, "the sign-in was declined in the browser");
    if (error == "expired_token") Fail(kLocal, "the code expired before the sign-in finished; run labshare login again");
    Fail(kLocal, absl::StrCat("the provider refused the sign-in: ", error, " ", Text(*answer, "error_description")));
  }
}

void PrintWho(const Credentials& c, bool json) {
  if (json) {
    pb::Struct s;
    auto& f = *s.mutable_fields();
    f["user"].set_string_value(c.user);
    f["display_name"].set_string_value(c.display_name);
    f["organization"].set_string_value(c.organization);
    auto* roles = f["roles"].mutable_list_value();
    for (const auto& r : c.roles) roles->add_values()->set_string_value(r);
    f["issuer"].set_string_value(c.issuer);
    f["expire_time"].set_string_value(absl::FormatTime(absl::RFC3339_sec, c.expire_time, absl::UTCTimeZone()));
    std::string out;
    pb::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    o.add_whitespace = true;
    (void)pb::util::MessageToJsonString(s, &out, o);
    std::cout << out;
    return;
  }
  std::cout << "user: " << c.user << (c.display_name.empty() ? "" : " (" + c.display_name + ")") << "\n"
            << "organization: " << (c.organization.empty() ? "-" : c.organization) << "\n"
            << "roles: " << absl::StrJoin(c.roles, ", ") << "\n"
            << "signed in at: " << c.issuer << "\n";
}

// Renews `c` through RefreshToken when fewer than kRefreshMargin remain.
// Caller holds the CredentialsLock and has loaded `c` under it. The channel
// to inventory takes the command's TLS settings.
void RefreshIfNeeded(Credentials& c, const Settings& settings) {
  if (absl::Now() + kRefreshMargin < c.expire_time) return;
  if (c.refresh_token.empty()) FailNotSignedIn("the stored sign-in has expired; run labshare login");
  auto stub = IdentityStub(c.inventory.empty() ? kDefaultInventory : c.inventory, settings);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  idv1::RefreshTokenRequest req;
  req.set_refresh_token(c.refresh_token);
  idv1::TokenResponse resp;
  grpc::Status st = stub->RefreshToken(&ctx, req, &resp);
  if (!st.ok()) {
    if (st.error_code() == grpc::StatusCode::UNAUTHENTICATED || st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      // The session is over: forget it, so the next command says "not signed in".
      unlink(CredentialsPath().c_str());
    }
    FailRpc(st);
  }
  c = FromResponse(resp, c.inventory, c.issuer);
  SaveCredentials(c);
}

int Login(const Settings& settings) {
  const std::string issuer = settings.Get("issuer");
  if (issuer.empty()) {
    Fail(kUsage, "no sign-in provider: give --issuer=URL or put \"issuer = URL\" in ~/.config/labshare/config");
  }
  HttpOptions http;
  http.ca_file = settings.Get("oidc_ca_file");
  const std::string id_token = DeviceFlow(issuer, settings.Get("client_id", "labshare-cli"), http);
  const std::string inventory = settings.Get("inventory", kDefaultInventory);
  auto stub = IdentityStub(inventory, settings);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  idv1::ExchangeTokenRequest req;
  req.set_id_token(id_token);
  idv1::TokenResponse resp;
  grpc::Status st = stub->ExchangeToken(&ctx, req, &resp);
  if (!st.ok()) FailRpc(st);
  CredentialsLock lock;
  const Credentials c = FromResponse(resp, inventory, issuer);
  SaveCredentials(c);
  std::cout << "Signed in." << "\n";
  PrintWho(c, false);
  return 0;
}

int Logout(const Settings& settings) {
  CredentialsLock lock;
  auto c = LoadCredentials();
  if (!c) {
    std::cout << "Not signed in." << "\n";
    return 0;
  }
  grpc::Status st;
  if (!c->refresh_token.empty()) {
    auto stub = IdentityStub(c->inventory.empty() ? kDefaultInventory : c->inventory, settings);
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    idv1::RevokeTokenRequest req;
    req.set_refresh_token(c->refresh_token);
    idv1::RevokeTokenResponse resp;
    st = stub->RevokeToken(&ctx, req, &resp);
  }
  if (unlink(CredentialsPath().c_str()) != 0 && errno != ENOENT) {
    Fail(kLocal, absl::StrCat("cannot delete ", CredentialsPath(), ": ", std::strerror(errno)));
  }
  if (!st.ok()) {
    const std::string note = absl::StrCat("The stored tokens are deleted, but the session could not be revoked at ",
                                          c->inventory, "; it ends by itself when its refresh token expires.");
    if (g_json_errors) {  // one JSON object: the note goes into its message
      FailRpc(grpc::Status(st.error_code(), absl::StrCat(note, " ", st.error_message()), st.error_details()));
    }
    std::cerr << note << "\n";
    FailRpc(st);
  }
  std::cout << "Signed out " << c->user << "." << "\n";
  return 0;
}

int WhoAmI(bool json, const Settings& settings) {
  CredentialsLock lock;
  auto c = LoadCredentials();
  if (!c) FailNotSignedIn("not signed in; run labshare login");
  RefreshIfNeeded(*c, settings);
  PrintWho(*c, json);
  return 0;
}

}  // namespace

std::map<std::string, std::string> ReadConfigFile() {
  std::map<std::string, std::string> out;
  std::string path;
  if (const char* c = std::getenv("LABSHARE_CONFIG")) {
    path = c;
  } else if (const char* home = std::getenv("HOME")) {
    path = std::string(home) + "/.config/labshare/config";
  }
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l[0] == '#') continue;
    std::vector<std::string> kv = absl::StrSplit(l, absl::MaxSplits('=', 1));
    if (kv.size() != 2) Fail(kLocal, "config " + path + ": expected key = value, got: " + std::string(l));
    out[std::string(absl::StripAsciiWhitespace(kv[0]))] = std::string(absl::StripAsciiWhitespace(kv[1]));
  }
  return out;
}

std::string CredentialsPath() { return ConfigDir() + "/credentials.json"; }

bool IsAccountCommand(const std::string& word) {
  return word == "login" || word == "logout" || word == "whoami" || word == "token";
}

int RunAccountCommand(const std::string& command, const std::map<std::string, std::string>& flags) {
  g_json_errors = JsonFlag(flags);
  static const std::set<std::string> kKnown = {"issuer",   "client_id", "oidc_ca_file", "inventory", "json",
                                               "timeout",  "tls_ca",    "tls_cert",     "tls_key"};
  for (const auto& [key, value] : flags) {
    if (key == "token" || key == "token_file") {
      Fail(kUsage, absl::StrCat("labshare ", command, ": --", key,
                                " does not apply: the account commands use the sign-in stored by labshare login"));
    }
    if (!kKnown.count(key)) Fail(kUsage, absl::StrCat("labshare ", command, ": unknown flag --", key));
  }
  if (auto it = flags.find("json"); it != flags.end()) {
    bool json = false;
    if (!absl::SimpleAtob(it->second, &json)) Fail(kUsage, "--json: true or false");
  }
  const Settings settings(flags);
  if (command == "login") return Login(settings);
  if (command == "logout") return Logout(settings);
  if (command == "token") {
    // For scripts calling the HTTP API: the access token, renewed first
    // when fewer than 60 s remain.
    const std::string token = StoredAccessToken(flags);
    if (token.empty()) Fail(kLocal, "labshare token: nobody is signed in; run `labshare login` first");
    std::printf("%s\n", token.c_str());
    return 0;
  }
  return WhoAmI(g_json_errors, settings);
}

std::string StoredAccessToken(const std::map<std::string, std::string>& flags) {
  g_json_errors = JsonFlag(flags);
  if (access(CredentialsPath().c_str(), F_OK) != 0) return "";
  CredentialsLock lock;
  auto c = LoadCredentials();
  if (!c) return "";
  RefreshIfNeeded(*c, Settings(flags));
  return c->access_token;
}

}  // namespace labshare::cli
