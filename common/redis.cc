#include "common/redis.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <cstdint>
#include <chrono>
#include <climits>
#include <cstring>
#include <system_error>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/redis_internal.h"
#include "common/secret_file.h"

namespace labshare {
namespace {

constexpr char kUnavailableReason[] = "STORAGE_UNAVAILABLE";
constexpr char kUnavailableMessage[] = "storage is unavailable; retry the request";
constexpr char kStorageErrorReason[] = "STORAGE_ERROR";
constexpr char kStorageErrorMessage[] = "storage command failed";

absl::Status Unavailable() { return StorageUnavailable(); }

absl::Status StorageError() {
  return MakeError(absl::StatusCode::kInternal, kStorageErrorReason, kStorageErrorMessage);
}

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r != nullptr) freeReplyObject(r);
  }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

RedisValue Convert(const redisReply& r) {
  RedisValue v;
  switch (r.type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      v.type = r.type == REDIS_REPLY_STRING   ? RedisValue::Type::kString
               : r.type == REDIS_REPLY_STATUS ? RedisValue::Type::kStatus
                                              : RedisValue::Type::kError;
      if (r.str != nullptr) v.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::Type::kInteger;
      v.integer = r.integer;
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RedisValue::Type::kArray;
      v.elements.reserve(r.elements);
      for (size_t i = 0; i < r.elements; ++i) {
        v.elements.push_back(r.element[i] != nullptr ? Convert(*r.element[i]) : RedisValue());
      }
      break;
    default:  // REDIS_REPLY_NIL
      break;
  }
  return v;
}

// Pointer/length views for the *Argv calls; valid while `args` lives.
class ArgvRef {
 public:
  explicit ArgvRef(const std::vector<std::string>& args) {
    ptrs_.reserve(args.size());
    lens_.reserve(args.size());
    for (const std::string& a : args) {
      ptrs_.push_back(a.data());
      lens_.push_back(a.size());
    }
  }
  int argc() const { return static_cast<int>(ptrs_.size()); }
  const char** argv() { return ptrs_.data(); }
  const size_t* lens() const { return lens_.data(); }

 private:
  std::vector<const char*> ptrs_;
  std::vector<size_t> lens_;
};

// An empty argv is a bug in our code, not the client's request.
bool ValidCommand(const std::vector<std::string>& argv) {
  if (!argv.empty() && argv.size() <= static_cast<size_t>(INT_MAX)) return true;
  LogError("redis command with no or too many arguments", {{"argc", std::to_string(argv.size())}});
  return false;
}

// An idle connection has nothing to read; if poll says otherwise, the server
// closed it (restart, timeout, CLIENT KILL) and using it would fail.
bool IsStale(redisContext* c) {
  if (c->err != 0) return true;
  pollfd p{};
  p.fd = c->fd;
  p.events = POLLIN;
  return poll(&p, 1, 0) != 0;
}

// Errors Redis raises when the same call can simply be retried later. Each
// is refused before anything is written (for a script: before its first
// write; Redis checks OOM, MISCONF and READONLY only there).
// The error code is the first word (BUSYGROUP is not BUSY).
bool IsRetryableError(absl::string_view error) {
  const absl::string_view code = error.substr(0, error.find(' '));
  for (absl::string_view retryable : {"OOM", "MISCONF", "READONLY", "BUSY", "LOADING", "MASTERDOWN",
                                      "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"}) {
    if (code == retryable) return true;
  }
  return false;
}

std::string Address(const RedisOptions& o) { return absl::StrCat(o.host, ":", o.port); }

// A command the server's ACL refuses to this user (NOPERM) is a deployment
// error an operator must see: the user's command or key list is too narrow.
void LogIfDenied(const RedisOptions& o, const std::string& command, const RedisValue& error) {
  if (!absl::StartsWith(error.str, "NOPERM")) return;
  LogError("redis ACL refused a command; the service's Redis user lacks a permission "
           "(see ACL LOG and deploy/redis-acl.sh)",
           {{"address", Address(o)},
            {"user", o.user.empty() ? "default" : o.user},
            {"command", command},
            {"error", error.str}});
}

}  // namespace

// A command Redis refused for now (OOM...): a warning, and the status a
// client may retry on.
static absl::Status Refused(const std::string& command, const RedisValue& error) {
  LogWarning("redis refused a command for now", {{"command", command}, {"error", error.str}});
  return RedisErrorStatus(error);
}


absl::Status StorageUnavailable(absl::string_view cause) {
  ErrorMetadata metadata;
  if (!cause.empty()) metadata["cause"] = std::string(cause);
  return WithRetryDelay(MakeError(absl::StatusCode::kUnavailable, kUnavailableReason,
                                  kUnavailableMessage, std::move(metadata)),
                        kStorageRetryDelay);
}

absl::Status RedisErrorStatus(const RedisValue& error) {
  if (error.is_error() && IsRetryableError(error.str)) {
    return StorageUnavailable(absl::StartsWith(error.str, "OOM") ? "STORAGE_FULL" : "");
  }
  return StorageError();
}

// ---- Credentials ------------------------------------------------------------

absl::Status LoadRedisCredentials(const std::string& user, const std::string& password_file,
                                  RedisOptions* options) {
  if (user.empty() && password_file.empty()) return absl::OkStatus();
  if (password_file.empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_REDIS_CREDENTIALS",
                     absl::StrCat("--redis_user=", user,
                                  " needs --redis_password_file=FILE with that user's password "
                                  "(deploy/redis-acl.sh writes one per service)"));
  }
  LS_ASSIGN_OR_RETURN(std::string password, ReadSecretFile(password_file, "Redis password"));
  if (absl::EndsWith(password, "\n")) password.pop_back();
  if (absl::EndsWith(password, "\r")) password.pop_back();
  if (password.empty() || password.find_first_of("\r\n") != std::string::npos) {
    WipeSecret(password);
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_REDIS_CREDENTIALS",
                     absl::StrCat("Redis password file ", password_file,
                                  " must hold the password on one line"),
                     {{"file", password_file}});
  }
  WipeSecret(options->password);
  options->user = user;
  options->password = std::move(password);
  return absl::OkStatus();
}

absl::Status AuthenticateRedis(redisContext* context, const RedisOptions& options) {
  if (options.password.empty()) return absl::OkStatus();
  ReplyPtr reply;
  if (options.user.empty()) {
    reply.reset(static_cast<redisReply*>(redisCommand(context, "AUTH %b", options.password.data(),
                                                      options.password.size())));
  } else {
    reply.reset(static_cast<redisReply*>(redisCommand(context, "AUTH %b %b", options.user.data(),
                                                      options.user.size(), options.password.data(),
                                                      options.password.size())));
  }
  if (reply == nullptr || context->err != 0) {
    LogWarning("redis AUTH failed", {{"address", Address(options)},
                                     {"user", options.user},
                                     {"error", context->err != 0 ? context->errstr : "no reply"}});
    return Unavailable();
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    LogError("redis refused the credentials; check --redis_user, --redis_password_file and the "
             "server's ACL (deploy/redis-acl.sh)",
             {{"address", Address(options)},
              {"user", options.user.empty() ? "default" : options.user},
              {"error", std::string(reply->str, reply->len)}});
    return Unavailable();
  }
  return absl::OkStatus();
}

// ---- ParseRedisAddress ------------------------------------------------------

absl::StatusOr<RedisOptions> ParseRedisAddress(std::string_view host_port) {
  auto bad = [&] {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_REDIS_ADDRESS",
                     absl::StrCat("Redis address \"", absl::CHexEscape(absl::string_view(host_port.data(), host_port.size())),
                                  "\" must be HOST:PORT with a port in 1..65535, e.g. "
                                  "127.0.0.1:6379"));
  };
  const size_t colon = host_port.rfind(':');
  if (colon == std::string_view::npos) return bad();
  std::string_view host = host_port.substr(0, colon);
  const std::string_view port_text = host_port.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // "[::1]:6379"
    if (host.find(':') == std::string_view::npos) return bad();
  } else if (host.find_first_of(":[]") != std::string_view::npos) {
    return bad();  // an IPv6 address needs brackets
  }
  if (host.empty()) return bad();
  for (char c : host) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '\x7f') return bad();
  }
  if (port_text.empty() || port_text.size() > 5) return bad();
  int port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9') return bad();
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return bad();
  RedisOptions options;
  options.host = std::string(host);
  options.port = port;
  return options;
}

absl::StatusOr<std::vector<RedisAddress>> ParseRedisAddressList(std::string_view list) {
  std::vector<RedisAddress> out;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    std::string_view item = list.substr(start, comma == std::string_view::npos ? std::string_view::npos
                                                                               : comma - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    LS_ASSIGN_OR_RETURN(RedisOptions one, ParseRedisAddress(item));
    out.push_back(RedisAddress{std::move(one.host), one.port});
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

// CRC16-CCITT (XMODEM), the checksum of the Redis Cluster specification.
static uint16_t Crc16(std::string_view data) {
  uint16_t crc = 0;
  for (unsigned char byte : data) {
    crc ^= static_cast<uint16_t>(byte << 8);
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) != 0 ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

int RedisKeySlot(std::string_view key) {
  // Only the part between the first '{' and the next '}' counts, when that
  // part is not empty.
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return Crc16(key) & 16383;
}

// ---- RedisValue -------------------------------------------------------------

absl::StatusOr<std::string> RedisValue::AsString() const {
  if (type == Type::kString || type == Type::kStatus) return str;
  LogError("unexpected redis reply; wanted a string", {{"reply", DebugString()}});
  return StorageError();
}

absl::StatusOr<long long> RedisValue::AsInteger() const {
  if (type == Type::kInteger) return integer;
  if (type == Type::kString) {
    long long value = 0;
    const char* end = str.data() + str.size();
    auto [ptr, ec] = std::from_chars(str.data(), end, value);
    if (ec == std::errc() && ptr == end && !str.empty()) return value;
  }
  LogError("unexpected redis reply; wanted an integer", {{"reply", DebugString()}});
  return StorageError();
}

std::string RedisValue::DebugString() const {
  switch (type) {
    case Type::kNil:
      return "(nil)";
    case Type::kInteger:
      return absl::StrCat("(integer) ", integer);
    case Type::kString:
      return absl::StrCat("\"", absl::CHexEscape(str), "\"");
    case Type::kStatus:
      return absl::StrCat("(status) ", absl::CHexEscape(str));
    case Type::kError:
      return absl::StrCat("(error) ", absl::CHexEscape(str));
    case Type::kArray:
      return absl::StrCat("[", absl::StrJoin(elements, ", ",
                                             [](std::string* out, const RedisValue& e) {
                                               out->append(e.DebugString());
                                             }),
                          "]");
  }
  return "(unknown)";
}

// ---- RedisScript ------------------------------------------------------------

RedisScript::RedisScript(std::string source, Access access) : source_(std::move(source)), access_(access) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(source_.data(), source_.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1) {
    // Only on allocation failure; EVALSHA then gets NOSCRIPT and Eval falls
    // back to EVAL with the source.
    LogError("SHA1 of a Lua script failed");
    digest_len = 0;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  sha1_.reserve(2 * digest_len);
  for (unsigned int i = 0; i < digest_len; ++i) {
    sha1_.push_back(kHex[digest[i] >> 4]);
    sha1_.push_back(kHex[digest[i] & 0x0f]);
  }
}

// ---- Connections and routing (common/redis_internal.h) -----------------------

void RedisContextDeleter::operator()(redisContext* c) const {
  if (c != nullptr) redisFree(c);
}

bool RedisConnectionIsStale(redisContext* c) { return IsStale(c); }

// Nodes found not master, with the role logged: every connection attempt
// (and kept pipeline connection, every role_recheck) checks, and the warning
// is logged once per node and role until the node is master again, not once
// per connection while the sentinels catch up.
namespace {
std::mutex& NotMasterLoggedMu() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::map<std::string, std::string>& NotMasterLogged() {
  static auto* logged = new std::map<std::string, std::string>();
  return *logged;
}
}  // namespace

absl::Status CheckRedisMaster(redisContext* c, const RedisAddress& node) {
  ReplyPtr role(static_cast<redisReply*>(redisCommand(c, "ROLE")));
  if (role != nullptr && role->type == REDIS_REPLY_ARRAY && role->elements >= 1 &&
      role->element[0]->type == REDIS_REPLY_STRING &&
      absl::string_view(role->element[0]->str, role->element[0]->len) == "master") {
    std::lock_guard<std::mutex> lock(NotMasterLoggedMu());
    if (!NotMasterLogged().empty()) NotMasterLogged().erase(RedisAddressText(node));
    return absl::OkStatus();
  }
  std::string what = "no reply";
  if (role != nullptr && role->type == REDIS_REPLY_ERROR) what = std::string(role->str, role->len);
  if (role != nullptr && role->type == REDIS_REPLY_ARRAY && role->elements >= 1 &&
      role->element[0]->type == REDIS_REPLY_STRING) {
    what = std::string(role->element[0]->str, role->element[0]->len);
  }
  const std::string address = RedisAddressText(node);
  bool log = false;
  {
    std::lock_guard<std::mutex> lock(NotMasterLoggedMu());
    auto* logged = &NotMasterLogged();
    std::string& last = (*logged)[address];
    log = last != what;
    last = what;
  }
  if (log) {
    LogWarning("redis node is not (or no longer) master; asking the sentinels again",
               {{"node", address}, {"role", what}});
  }
  return Unavailable();
}

std::string RedisAddressText(const RedisAddress& a) {
  if (a.host.find(':') != std::string::npos) return absl::StrCat("[", a.host, "]:", a.port);
  return absl::StrCat(a.host, ":", a.port);
}

absl::StatusOr<RedisContextPtr> ConnectRedisNode(const RedisAddress& node, const RedisOptions& options) {
  RedisContextPtr c(redisConnectWithTimeout(node.host.c_str(), node.port, absl::ToTimeval(options.connect_timeout)));
  if (c == nullptr || c->err != 0) {
    LogWarning("redis connect failed", {{"address", RedisAddressText(node)},
                                        {"error", c != nullptr ? c->errstr : "out of memory"}});
    return Unavailable();
  }
  if (redisSetTimeout(c.get(), absl::ToTimeval(options.command_timeout)) != REDIS_OK ||
      redisEnableKeepAlive(c.get()) != REDIS_OK) {
    LogWarning("redis socket setup failed", {{"address", RedisAddressText(node)}, {"error", c->errstr}});
    return Unavailable();
  }
  // hiredis does not set close-on-exec; a forked child must not keep our
  // connections open.
  const int flags = fcntl(c->fd, F_GETFD);
  if (flags >= 0) fcntl(c->fd, F_SETFD, flags | FD_CLOEXEC);
  LS_RETURN_IF_ERROR(AuthenticateRedis(c.get(), options));
  return c;
}

absl::StatusOr<RedisContextPtr> ConnectRedisMaster(const RedisAddress& node, const RedisOptions& options,
                                                   bool master_only) {
  LS_ASSIGN_OR_RETURN(RedisContextPtr c, ConnectRedisNode(node, options));
  if (master_only) LS_RETURN_IF_ERROR(CheckRedisMaster(c.get(), node));
  return c;
}

namespace {

bool Is(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(absl::string_view(a.data(), a.size()), absl::string_view(b.data(), b.size()));
}

bool Same(const RedisAddress& a, const RedisAddress& b) { return a.host == b.host && a.port == b.port; }

bool IsKeyless(std::string_view cmd) {
  for (std::string_view k :
       {"PING", "INFO", "TIME", "SCRIPT", "CLUSTER", "WAIT", "ROLE", "SCAN", "FLUSHALL", "FLUSHDB", "CONFIG",
        "DBSIZE", "COMMAND", "ACL", "CLIENT", "SLOWLOG", "LATENCY", "SAVE", "BGSAVE", "BGREWRITEAOF",
        "LASTSAVE", "ECHO", "AUTH", "HELLO", "SELECT", "READONLY", "READWRITE", "ASKING", "MULTI", "EXEC",
        "DISCARD", "UNWATCH", "FUNCTION", "PUBLISH", "DEBUG", "SHUTDOWN", "RANDOMKEY", "KEYS"}) {
    if (Is(cmd, k)) return true;
  }
  return false;
}

}  // namespace

// RESP of one command ("*<n>\r\n" then "$<len>\r\n<bytes>\r\n" per argument)
// appended to out: a batch is formatted into one buffer and handed to
// hiredis once, instead of hiredis formatting each command and copying it
// into its output buffer again.
void FormatRedisCommand(std::string* out, const std::vector<std::string>& argv) {
  // Sized once and written in place: at about 70 commands a ListBookings
  // page, StrAppend's per-piece conversions were a tenth of the call.
  auto digits = [](size_t n) {
    size_t d = 1;
    while (n >= 10) {
      n /= 10;
      ++d;
    }
    return d;
  };
  size_t size = 3 + digits(argv.size());
  for (const auto& a : argv) size += 5 + digits(a.size()) + a.size();
  const size_t at = out->size();
  out->resize(at + size);
  char* p = out->data() + at;
  auto number = [&](char lead, size_t n) {
    *p++ = lead;
    const size_t d = digits(n);
    for (size_t i = d; i > 0; --i) {
      p[i - 1] = static_cast<char>('0' + n % 10);
      n /= 10;
    }
    p += d;
    *p++ = '\r';
    *p++ = '\n';
  };
  number('*', argv.size());
  for (const auto& a : argv) {
    number('$', a.size());
    if (!a.empty()) std::memcpy(p, a.data(), a.size());
    p += a.size();
    *p++ = '\r';
    *p++ = '\n';
  }
}

namespace {

// One round trip's replies on one connection: the command (after ASKING
// when asked to), then WAIT when asked to.
struct Exchange {
  bool ok = false;
  RedisValue reply;
  long long acked = -1;  // WAIT's answer, -1 when not sent
};

Exchange RunOn(redisContext* c, const std::vector<std::string>& argv, bool asking, int wait_replicas,
               absl::Duration wait_timeout) {
  Exchange e;
  if (asking && redisAppendCommand(c, "ASKING") != REDIS_OK) return e;
  std::string out;
  FormatRedisCommand(&out, argv);
  if (wait_replicas > 0) FormatRedisCommand(&out, RedisWaitCommand(wait_replicas, wait_timeout));
  if (redisAppendFormattedCommand(c, out.data(), out.size()) != REDIS_OK) return e;
  const int replies = (asking ? 1 : 0) + 1 + (wait_replicas > 0 ? 1 : 0);
  for (int i = 0; i < replies; ++i) {
    void* raw = nullptr;
    if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) return e;
    ReplyPtr reply(static_cast<redisReply*>(raw));
    const bool is_command = i == (asking ? 1 : 0);
    if (is_command) {
      e.reply = Convert(*reply);
    } else if (i > (asking ? 1 : 0)) {
      e.acked = reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
    }
  }
  e.ok = true;
  return e;
}

constexpr int kMaxRedirects = 16;
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(20);
constexpr absl::Duration kMaxBackoff = absl::Milliseconds(250);
// After a failed resolution, callers fail at once for this long instead of
// each waiting on unreachable sentinels or nodes in turn.
constexpr absl::Duration kResolveRetry = absl::Milliseconds(100);

}  // namespace

int RedisCommandSlot(const std::vector<std::string>& argv) {
  if (argv.empty()) return -1;
  const std::string& cmd = argv[0];
  if (Is(cmd, "EVALSHA") || Is(cmd, "EVAL") || Is(cmd, "EVALSHA_RO") || Is(cmd, "EVAL_RO") || Is(cmd, "FCALL") ||
      Is(cmd, "FCALL_RO")) {
    int keys = 0;
    if (argv.size() < 4 || !absl::SimpleAtoi(argv[2], &keys) || keys <= 0) return -1;
    return RedisKeySlot(argv[3]);
  }
  if (Is(cmd, "XREADGROUP") || Is(cmd, "XREAD")) {
    for (size_t i = 1; i + 1 < argv.size(); ++i) {
      if (Is(argv[i], "STREAMS")) return RedisKeySlot(argv[i + 1]);
    }
    return -1;
  }
  // "<command> <subcommand> <key> ...".
  if (Is(cmd, "MEMORY") || Is(cmd, "OBJECT") || Is(cmd, "XGROUP") || Is(cmd, "XINFO")) {
    return argv.size() > 2 ? RedisKeySlot(argv[2]) : -1;
  }
  if (IsKeyless(cmd) || argv.size() < 2) return -1;
  return RedisKeySlot(argv[1]);
}

bool RedisCommandIsReadOnly(std::string_view command) {
  // A static table: its lengths are known once, not measured (strlen) on
  // every call; the pipeline asks this for every command it sends.
  static constexpr std::string_view kReadOnly[] = {
      "GET", "MGET", "HGET", "HMGET", "HGETALL", "HLEN", "HEXISTS", "HKEYS", "HVALS", "HSCAN", "EXISTS", "TYPE",
      "TTL", "PTTL", "STRLEN", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX",
      "ZREVRANGEBYLEX", "ZCARD", "ZSCORE", "ZMSCORE", "ZCOUNT", "ZRANK", "ZREVRANK", "ZSCAN", "SMEMBERS",
      "SISMEMBER", "SMISMEMBER", "SCARD", "SUNION", "SINTER", "SDIFF", "SSCAN", "LRANGE", "LLEN", "LINDEX",
      "XRANGE", "XREVRANGE", "XLEN", "XINFO", "XPENDING", "XREAD", "SCAN", "PING", "INFO", "TIME",
      "ROLE", "DBSIZE", "MEMORY", "OBJECT", "EVALSHA_RO", "EVAL_RO", "CLUSTER", "WAIT", "ECHO", "KEYS"};
  for (std::string_view r : kReadOnly) {
    if (Is(command, r)) return true;
  }
  return false;
}

RedisRedirect ParseRedisRedirect(const RedisValue& reply, const RedisAddress& from) {
  RedisRedirect r;
  if (!reply.is_error()) return r;
  const absl::string_view text = reply.str;
  const absl::string_view code = text.substr(0, text.find(' '));
  if (code == "MOVED" || code == "ASK") {
    // "MOVED 3999 127.0.0.1:6381"; an empty host means the answering node's.
    std::vector<absl::string_view> parts = absl::StrSplit(text, ' ', absl::SkipEmpty());
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &r.slot) || r.slot < 0 || r.slot >= 16384) return r;
    const size_t colon = parts[2].rfind(':');
    int port = 0;
    if (colon == absl::string_view::npos || !absl::SimpleAtoi(parts[2].substr(colon + 1), &port)) return r;
    absl::string_view host = parts[2].substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    r.node.host = host.empty() ? from.host : std::string(host);
    r.node.port = port;
    r.kind = code == "MOVED" ? RedisRedirect::Kind::kMoved : RedisRedirect::Kind::kAsk;
  } else if (code == "TRYAGAIN") {
    r.kind = RedisRedirect::Kind::kTryAgain;
  } else if (code == "READONLY" || code == "MASTERDOWN" || code == "LOADING") {
    r.kind = RedisRedirect::Kind::kNotMaster;
  } else if (code == "CLUSTERDOWN") {
    r.kind = RedisRedirect::Kind::kClusterDown;
  }
  return r;
}

absl::Status RedisReplicaAckTimeout(const RedisAddress& node, long long acked, int wanted) {
  LogWarning("redis WAIT: too few replicas confirmed a write in time; answering UNAVAILABLE",
             {{"address", RedisAddressText(node)},
              {"acked", std::to_string(acked)},
              {"wanted", std::to_string(wanted)}});
  return StorageUnavailable("REPLICA_ACK_TIMEOUT");
}

std::vector<std::string> RedisWaitCommand(int replicas, absl::Duration timeout) {
  return {"WAIT", std::to_string(replicas), std::to_string(absl::ToInt64Milliseconds(timeout))};
}

void GroupRedisCommandsByNode(RedisTopology& topology, size_t count,
                              const std::function<const std::vector<std::string>&(size_t)>& argv_of,
                              RedisTopology::Deadline deadline, std::vector<int>* slots, RedisNodeGroups* groups,
                              std::vector<size_t>* unplaced) {
  if (!topology.cluster()) {
    // One node for everything: one lookup, not one per command.
    absl::StatusOr<RedisAddress> node = topology.NodeFor(-1, deadline);
    std::vector<size_t> all(count);
    for (size_t i = 0; i < count; ++i) all[i] = i;
    if (!node.ok()) {
      unplaced->insert(unplaced->end(), all.begin(), all.end());
    } else if (count > 0) {
      groups->emplace_back(*std::move(node), std::move(all));
    }
    return;
  }
  for (size_t i = 0; i < count; ++i) {
    (*slots)[i] = RedisCommandSlot(argv_of(i));
    absl::StatusOr<RedisAddress> node = topology.NodeFor((*slots)[i], deadline);
    if (!node.ok()) {
      unplaced->push_back(i);
      continue;
    }
    auto g = std::find_if(groups->begin(), groups->end(), [&](const auto& x) { return Same(x.first, *node); });
    if (g == groups->end()) {
      groups->emplace_back(*node, std::vector<size_t>{});
      g = groups->end() - 1;
    }
    g->second.push_back(i);
  }
}

RedisTopology::RedisTopology(RedisOptions options)
    : options_(std::move(options)), cluster_(options_.cluster), sentinel_(!options_.cluster && !options_.sentinels.empty()) {
  map_.master = RedisAddress{options_.host, options_.port};
  map_.slots.fill(-1);
  have_map_ = !routed();
  stale_ = routed();
}

absl::Status RedisTopology::Refresh(std::unique_lock<std::mutex>& lock, Deadline deadline) {
  if (!stale_) return absl::OkStatus();
  const Deadline now = std::chrono::steady_clock::now();
  const bool throttled =
      last_attempt_.has_value() && now - *last_attempt_ < absl::ToChronoNanoseconds(kResolveRetry);
  if (!resolving_ && !throttled) {
    resolving_ = true;
    last_attempt_ = now;
    Map current = map_;
    lock.unlock();
    absl::StatusOr<Map> fresh = cluster_ ? ResolveCluster(std::move(current)) : ResolveSentinel(std::move(current));
    lock.lock();
    resolving_ = false;
    if (fresh.ok()) {
      map_ = *std::move(fresh);
      have_map_ = true;
      stale_ = false;
      ++generation_;
    }
    resolved_.notify_all();
  } else if (!have_map_ && resolving_) {
    resolved_.wait_until(lock, deadline, [&] { return !resolving_; });
  }
  // A failed resolution keeps the last map: its nodes may be right yet.
  return have_map_ ? absl::OkStatus() : Unavailable();
}

absl::StatusOr<RedisAddress> RedisTopology::NodeFor(int slot, Deadline deadline) {
  if (!routed()) return map_.master;
  std::unique_lock<std::mutex> lock(mu_);
  LS_RETURN_IF_ERROR(Refresh(lock, deadline));
  if (!cluster_) return map_.master;
  if (slot < 0 || slot >= 16384) {
    if (map_.nodes.empty()) return Unavailable();
    return map_.nodes.front();
  }
  const int i = map_.slots[static_cast<size_t>(slot)];
  if (i < 0) {
    stale_ = true;  // resolved again, at most every 100 ms
    return Unavailable();
  }
  return map_.nodes[static_cast<size_t>(i)];
}

absl::StatusOr<std::vector<std::pair<int, RedisAddress>>> RedisTopology::Masters(Deadline deadline) {
  std::vector<std::pair<int, RedisAddress>> out;
  std::unique_lock<std::mutex> lock(mu_);
  LS_RETURN_IF_ERROR(Refresh(lock, deadline));
  if (!cluster_) {
    out.emplace_back(0, map_.master);
    return out;
  }
  std::vector<int> first(map_.nodes.size(), -1);
  for (int slot = 0; slot < 16384; ++slot) {
    const int i = map_.slots[static_cast<size_t>(slot)];
    if (i >= 0 && first[static_cast<size_t>(i)] < 0) first[static_cast<size_t>(i)] = slot;
  }
  for (size_t i = 0; i < map_.nodes.size(); ++i) {
    if (first[i] >= 0) out.emplace_back(first[i], map_.nodes[i]);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

uint64_t RedisTopology::generation() {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

std::vector<RedisAddress> RedisTopology::KnownMasters() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!have_map_) return {};
  if (!cluster_) return {map_.master};
  std::vector<bool> serving(map_.nodes.size(), false);
  for (int16_t i : map_.slots) {
    if (i >= 0) serving[static_cast<size_t>(i)] = true;
  }
  std::vector<RedisAddress> out;
  for (size_t i = 0; i < map_.nodes.size(); ++i) {
    if (serving[i]) out.push_back(map_.nodes[i]);
  }
  return out;
}

void RedisTopology::Invalidate() {
  if (!routed()) return;
  std::lock_guard<std::mutex> lock(mu_);
  stale_ = true;
}

void RedisTopology::Moved(int slot, const RedisAddress& node) {
  if (!cluster_ || slot < 0 || slot >= 16384) return;
  std::lock_guard<std::mutex> lock(mu_);
  size_t i = 0;
  while (i < map_.nodes.size() && !Same(map_.nodes[i], node)) ++i;
  if (i == map_.nodes.size()) map_.nodes.push_back(node);
  map_.slots[static_cast<size_t>(slot)] = static_cast<int16_t>(i);
  // The specification's advice: a MOVED means the map changed; read it
  // again (this slot already points to the right node meanwhile).
  stale_ = true;
}

absl::StatusOr<RedisTopology::Map> RedisTopology::ResolveSentinel(Map current) const {
  // Sentinels run without this service's ACL user.
  RedisOptions plain = options_;
  plain.user.clear();
  WipeSecret(plain.password);
  plain.password.clear();
  const size_t n = options_.sentinels.size();
  for (size_t k = 0; k < n; ++k) {
    const size_t idx = (current.next_sentinel + k) % n;
    const RedisAddress& sentinel = options_.sentinels[idx];
    auto c = ConnectRedisNode(sentinel, plain);
    if (!c.ok()) continue;
    ReplyPtr reply(static_cast<redisReply*>(
        redisCommand(c->get(), "SENTINEL get-master-addr-by-name %s", options_.sentinel_master.c_str())));
    if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_STRING) {
      LogWarning("redis sentinel does not know the master",
                 {{"sentinel", RedisAddressText(sentinel)}, {"master_name", options_.sentinel_master}});
      continue;
    }
    RedisAddress master{std::string(reply->element[0]->str, reply->element[0]->len), 0};
    if (!absl::SimpleAtoi(absl::string_view(reply->element[1]->str, reply->element[1]->len), &master.port)) continue;
    // A sentinel may be behind: believe only a node that says it is master.
    if (!ConnectRedisMaster(master, options_, true).ok()) continue;
    if (!Same(master, current.master)) {
      LogInfo("redis master found through sentinel",
              {{"sentinel", RedisAddressText(sentinel)}, {"master", RedisAddressText(master)}});
    }
    current.master = std::move(master);
    current.next_sentinel = idx;
    return current;
  }
  LogWarning("no sentinel named a reachable master", {{"master_name", options_.sentinel_master}});
  return Unavailable();
}

absl::StatusOr<RedisTopology::Map> RedisTopology::ResolveCluster(Map current) const {
  // Seeds first: a node of the old map may be the one that died.
  std::vector<RedisAddress> candidates = {RedisAddress{options_.host, options_.port}};
  for (const auto& seed : options_.cluster_seeds) candidates.push_back(seed);
  for (const auto& node : current.nodes) candidates.push_back(node);
  std::vector<RedisAddress> tried;
  for (const RedisAddress& node : candidates) {
    if (std::any_of(tried.begin(), tried.end(), [&](const RedisAddress& t) { return Same(t, node); })) continue;
    tried.push_back(node);
    auto c = ConnectRedisNode(node, options_);
    if (!c.ok()) continue;
    ReplyPtr reply(static_cast<redisReply*>(redisCommand(c->get(), "CLUSTER SLOTS")));
    if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY) continue;
    Map fresh;
    fresh.master = current.master;
    fresh.slots.fill(-1);
    size_t assigned = 0;
    for (size_t e = 0; e < reply->elements; ++e) {
      const redisReply* range = reply->element[e];
      if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || range->element[0]->type != REDIS_REPLY_INTEGER ||
          range->element[1]->type != REDIS_REPLY_INTEGER || range->element[2]->type != REDIS_REPLY_ARRAY ||
          range->element[2]->elements < 2 || range->element[2]->element[0]->type != REDIS_REPLY_STRING ||
          range->element[2]->element[1]->type != REDIS_REPLY_INTEGER) {
        continue;
      }
      const long long first = range->element[0]->integer;
      const long long last = range->element[1]->integer;
      if (first < 0 || last >= 16384 || first > last) continue;
      const redisReply* m = range->element[2];
      RedisAddress master{std::string(m->element[0]->str, m->element[0]->len), static_cast<int>(m->element[1]->integer)};
      if (master.host.empty()) master.host = node.host;  // the answering node's own address
      if (master.host == "?") continue;                   // unknown endpoint
      size_t i = 0;
      while (i < fresh.nodes.size() && !Same(fresh.nodes[i], master)) ++i;
      if (i == fresh.nodes.size()) fresh.nodes.push_back(master);
      for (long long slot = first; slot <= last; ++slot) fresh.slots[static_cast<size_t>(slot)] = static_cast<int16_t>(i);
      assigned += static_cast<size_t>(last - first + 1);
    }
    if (assigned == 0) continue;
    if (fresh.nodes.size() != current.nodes.size() ||
        !std::equal(fresh.nodes.begin(), fresh.nodes.end(), current.nodes.begin(), Same)) {
      std::vector<std::string> names;
      for (const auto& a : fresh.nodes) names.push_back(RedisAddressText(a));
      LogInfo("redis cluster map read", {{"from", RedisAddressText(node)},
                                         {"masters", absl::StrJoin(names, ",")},
                                         {"slots", std::to_string(assigned)}});
    }
    return fresh;
  }
  LogWarning("redis cluster: no known node answered CLUSTER SLOTS");
  return Unavailable();
}

// ---- RedisPool --------------------------------------------------------------

namespace {

// The connections to one node: at most `capacity` open, each used by one
// caller at a time.
class NodePool {
 public:
  // master_only (Sentinel): every new connection is checked with ROLE.
  NodePool(RedisAddress address, const RedisOptions& options, bool master_only = false)
      : address_(std::move(address)),
        options_(options),
        master_only_(master_only),
        capacity_(static_cast<size_t>(options.pool_size > 0 ? options.pool_size : 1)) {}

  const RedisAddress& address() const { return address_; }
  // A connection, waiting for a free one until `deadline`; *unreachable
  // (when given) is set when connecting failed.
  absl::StatusOr<RedisContextPtr> Acquire(RedisTopology::Deadline deadline, bool* unreachable = nullptr);
  void Release(RedisContextPtr context, bool healthy);

 private:
  const RedisAddress address_;
  const RedisOptions& options_;
  const bool master_only_;
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable slot_freed_;
  std::vector<RedisContextPtr> idle_;  // guarded by mu_
  size_t open_ = 0;                    // guarded by mu_; idle + leased + being connected
};

// One connection leased to one caller; returned to the pool, or dropped if it
// failed, when the lease ends.
class Lease {
 public:
  Lease(NodePool* pool, RedisContextPtr context) : pool_(pool), context_(std::move(context)) {}
  ~Lease() { pool_->Release(std::move(context_), !broken_); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  redisContext* get() const { return context_.get(); }

  // hiredis contexts are unusable after an error: drop this one.
  absl::Status Fail(std::string_view command) {
    broken_ = true;
    LogWarning("redis I/O failed; dropping the connection",
               {{"address", RedisAddressText(pool_->address())},
                {"command", std::string(command)},
                {"error", context_->err != 0 ? context_->errstr : "no reply"}});
    return Unavailable();
  }

 private:
  NodePool* pool_;
  RedisContextPtr context_;
  bool broken_ = false;
};

absl::StatusOr<RedisContextPtr> NodePool::Acquire(RedisTopology::Deadline deadline, bool* unreachable) {
  std::vector<RedisContextPtr> stale;  // closed after the lock is released
  {
    std::unique_lock<std::mutex> lock(mu_);
    bool timed_out = false;
    while (true) {
      while (!idle_.empty()) {
        RedisContextPtr c = std::move(idle_.back());
        idle_.pop_back();
        if (!IsStale(c.get())) return c;
        stale.push_back(std::move(c));
        --open_;
        slot_freed_.notify_all();
      }
      if (open_ < capacity_) {
        ++open_;  // reserve the slot; connect without holding the lock
        break;
      }
      if (timed_out) {
        LogWarning("redis pool exhausted", {{"address", RedisAddressText(address_)},
                                            {"pool_size", std::to_string(capacity_)}});
        return Unavailable();
      }
      timed_out = slot_freed_.wait_until(lock, deadline) == std::cv_status::timeout;
    }
  }
  absl::StatusOr<RedisContextPtr> c = ConnectRedisMaster(address_, options_, master_only_);
  if (!c.ok()) {
    Release(nullptr, false);
    if (unreachable != nullptr) *unreachable = true;
  }
  return c;
}

void NodePool::Release(RedisContextPtr context, bool healthy) {
  RedisContextPtr dropped;  // closed after the lock is released
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (healthy && context != nullptr && context->err == 0) {
      idle_.push_back(std::move(context));
    } else {
      dropped = std::move(context);
      --open_;
    }
  }
  slot_freed_.notify_one();
}

}  // namespace

class RedisPool::Impl {
 public:
  explicit Impl(const RedisOptions& options)
      : options_(options),
        topology_(options),
        single_(std::make_shared<NodePool>(RedisAddress{options.host, options.port}, options)) {}

  // The pool of `node` (standalone: the one pool).
  std::shared_ptr<NodePool> Node(const RedisAddress& node);
  // RunRedisCommand with this pool's connections.
  absl::StatusOr<RedisValue> Run(const std::vector<std::string>& argv, int slot, RedisTopology::Deadline deadline,
                                 const RedisAddress* fixed = nullptr);
  // SCAN over every master of a cluster behind one cursor
  // "<lowest slot of the master>-<its cursor>", masters in slot order.
  absl::StatusOr<RedisValue> Scan(const std::vector<std::string>& argv);
  // Several commands, grouped by node; replies in order.
  absl::StatusOr<std::vector<RedisValue>> Pipeline(const std::vector<std::vector<std::string>>& commands);

  const RedisOptions& options_;
  RedisTopology topology_;

 private:
  const std::shared_ptr<NodePool> single_;
  std::mutex mu_;
  std::vector<std::shared_ptr<NodePool>> nodes_;  // guarded by mu_
};

std::shared_ptr<NodePool> RedisPool::Impl::Node(const RedisAddress& node) {
  if (!topology_.routed()) return single_;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& p : nodes_) {
    if (p->address().host == node.host && p->address().port == node.port) return p;
  }
  nodes_.push_back(std::make_shared<NodePool>(node, options_, topology_.sentinel()));
  return nodes_.back();
}

absl::StatusOr<RedisValue> RunRedisCommand(RedisTopology& topology, const RedisOptions& options,
                                           RedisConnections& connections, const std::vector<std::string>& argv,
                                           int slot, RedisTopology::Deadline deadline, const RedisAddress* fixed) {
  const bool routed = topology.routed();
  const int wait = options.wait_replicas > 0 && !RedisCommandIsReadOnly(argv[0]) ? options.wait_replicas : 0;
  absl::Duration backoff = kFirstBackoff;
  // Waits before another try of a call that did not run; false when the
  // time is up or nothing else can be tried.
  auto pause = [&] {
    if (!routed || fixed != nullptr) return false;
    if (std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(backoff) >= deadline) return false;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, kMaxBackoff);
    return true;
  };
  std::optional<RedisAddress> ask;
  for (int redirects = 0; redirects <= kMaxRedirects;) {
    RedisAddress node;
    if (ask.has_value()) {
      node = *ask;
    } else if (fixed != nullptr) {
      node = *fixed;
    } else {
      absl::StatusOr<RedisAddress> found = topology.NodeFor(slot, deadline);
      if (!found.ok()) {
        if (pause()) continue;
        return found.status();
      }
      node = *std::move(found);
    }
    bool unreachable = false;
    absl::StatusOr<redisContext*> c = connections.Get(node, deadline, &unreachable);
    if (!c.ok()) {
      if (!unreachable) return c.status();  // every connection busy until the deadline
      // Nothing was sent: safe to try again where the map now points.
      topology.Invalidate();
      ask.reset();
      if (pause()) continue;
      return c.status();
    }
    if (std::chrono::steady_clock::now() >= deadline && redirects > 0) {
      connections.Put(node, *c, true);
      break;  // out of time after redirections
    }
    Exchange e = RunOn(*c, argv, ask.has_value(), wait, options.wait_timeout);
    if (!e.ok) {
      // The command may or may not have run: the caller decides.
      LogWarning("redis I/O failed; dropping the connection",
                 {{"address", RedisAddressText(node)},
                  {"command", argv[0]},
                  {"error", (*c)->err != 0 ? (*c)->errstr : "no reply"}});
      connections.Put(node, *c, false);
      topology.Invalidate();
      return Unavailable();
    }
    connections.Put(node, *c, true);
    if (routed) {
      const RedisRedirect r = ParseRedisRedirect(e.reply, node);
      switch (r.kind) {
        case RedisRedirect::Kind::kMoved:
          topology.Moved(r.slot, r.node);
          ask.reset();
          ++redirects;
          continue;
        case RedisRedirect::Kind::kAsk:
          ask = r.node;
          ++redirects;
          continue;
        case RedisRedirect::Kind::kNotMaster:
        case RedisRedirect::Kind::kClusterDown:
          topology.Invalidate();
          [[fallthrough]];
        case RedisRedirect::Kind::kTryAgain:
          ask.reset();
          if (pause()) continue;
          return std::move(e.reply);  // the caller turns it into UNAVAILABLE
        case RedisRedirect::Kind::kNone:
          break;
      }
    }
    if (wait > 0 && !e.reply.is_error() && e.acked < wait) return RedisReplicaAckTimeout(node, e.acked, wait);
    return std::move(e.reply);
  }
  LogWarning("redis cluster: too many redirections, or out of time after them",
             {{"command", argv[0]}, {"slot", std::to_string(slot)}});
  return Unavailable();
}

namespace {
// RedisPool's connections: leases from the node's pool.
class PoolConnections final : public RedisConnections {
 public:
  explicit PoolConnections(std::function<std::shared_ptr<NodePool>(const RedisAddress&)> node)
      : node_(std::move(node)) {}
  ~PoolConnections() override {
    for (auto& [pool, c] : leased_) pool->Release(std::move(c), true);
  }
  absl::StatusOr<redisContext*> Get(const RedisAddress& node, RedisTopology::Deadline deadline,
                                   bool* unreachable) override {
    std::shared_ptr<NodePool> pool = node_(node);
    LS_ASSIGN_OR_RETURN(RedisContextPtr c, pool->Acquire(deadline, unreachable));
    redisContext* raw = c.get();
    leased_.emplace_back(std::move(pool), std::move(c));
    return raw;
  }
  void Put(const RedisAddress&, redisContext* connection, bool healthy) override {
    for (auto it = leased_.begin(); it != leased_.end(); ++it) {
      if (it->second.get() != connection) continue;
      it->first->Release(std::move(it->second), healthy);
      leased_.erase(it);
      return;
    }
  }

 private:
  std::function<std::shared_ptr<NodePool>(const RedisAddress&)> node_;
  std::vector<std::pair<std::shared_ptr<NodePool>, RedisContextPtr>> leased_;
};
}  // namespace

absl::StatusOr<RedisValue> RedisPool::Impl::Run(const std::vector<std::string>& argv, int slot,
                                                RedisTopology::Deadline deadline, const RedisAddress* fixed) {
  PoolConnections connections([this](const RedisAddress& node) { return Node(node); });
  return RunRedisCommand(topology_, options_, connections, argv, slot, deadline, fixed);
}

absl::StatusOr<RedisValue> RedisPool::Impl::Scan(const std::vector<std::string>& argv) {
  if (argv.size() < 2) return StorageError();
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.command_timeout);
  LS_ASSIGN_OR_RETURN(auto masters, topology_.Masters(deadline));
  // Masters are named by the lowest slot they serve, so a cursor stays
  // meaningful when a replica takes over the same slots.
  int first_slot = 0;
  std::string cursor = "0";
  if (argv[1] != "0") {
    const size_t dash = argv[1].find('-');
    if (dash == std::string::npos || !absl::SimpleAtoi(argv[1].substr(0, dash), &first_slot)) {
      LogError("SCAN cursor not from this client", {{"cursor", argv[1]}});
      return StorageError();
    }
    cursor = argv[1].substr(dash + 1);
  }
  RedisValue out;
  out.type = RedisValue::Type::kArray;
  out.elements.resize(2);
  out.elements[0].type = RedisValue::Type::kString;
  out.elements[1].type = RedisValue::Type::kArray;
  // The master that starts at first_slot; after a resharding, the first one
  // at or past it (its own cursor then starts over).
  size_t index = 0;
  while (index < masters.size() && masters[index].first < first_slot) ++index;
  if (index < masters.size() && masters[index].first != first_slot) cursor = "0";
  if (index >= masters.size()) {
    out.elements[0].str = "0";
    return out;
  }
  std::vector<std::string> one = argv;
  one[1] = cursor;
  LS_ASSIGN_OR_RETURN(RedisValue reply, Run(one, -1, deadline, &masters[index].second));
  if (reply.is_error() || !reply.is_array() || reply.elements.size() != 2) return reply;
  const std::string next = reply.elements[0].str;
  if (next == "0") {
    out.elements[0].str = index + 1 < masters.size() ? absl::StrCat(masters[index + 1].first, "-0") : "0";
  } else {
    out.elements[0].str = absl::StrCat(masters[index].first, "-", next);
  }
  out.elements[1] = std::move(reply.elements[1]);
  return out;
}

absl::StatusOr<std::vector<RedisValue>> RedisPool::Impl::Pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  const bool routed = topology_.routed();
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.command_timeout);
  std::vector<RedisValue> out(commands.size());
  std::vector<int> slots(commands.size(), -1);
  // Commands by node, in order; a node's commands go in one round trip.
  RedisNodeGroups groups;
  std::vector<size_t> again;  // to run one by one (redirected, node unreachable)
  GroupRedisCommandsByNode(
      topology_, commands.size(), [&](size_t i) -> const std::vector<std::string>& { return commands[i]; },
      deadline, &slots, &groups, &again);
  if (!routed && !again.empty()) return Unavailable();
  for (const auto& [node, indexes] : groups) {
    std::shared_ptr<NodePool> pool = Node(node);
    bool unreachable = false;
    absl::StatusOr<RedisContextPtr> context = pool->Acquire(deadline, &unreachable);
    if (!context.ok()) {
      if (!routed || !unreachable) return context.status();
      topology_.Invalidate();
      again.insert(again.end(), indexes.begin(), indexes.end());
      continue;
    }
    Lease lease(pool.get(), *std::move(context));
    bool writes = false;
    for (size_t i : indexes) {
      ArgvRef ref(commands[i]);
      if (redisAppendCommandArgv(lease.get(), ref.argc(), ref.argv(), ref.lens()) != REDIS_OK) {
        topology_.Invalidate();
        return lease.Fail(commands[i][0]);
      }
      writes = writes || !RedisCommandIsReadOnly(commands[i][0]);
    }
    const int wait = options_.wait_replicas > 0 && writes ? options_.wait_replicas : 0;
    if (wait > 0) {
      const std::vector<std::string> wait_command = RedisWaitCommand(wait, options_.wait_timeout);
      ArgvRef ref(wait_command);
      if (redisAppendCommandArgv(lease.get(), ref.argc(), ref.argv(), ref.lens()) != REDIS_OK) {
        return lease.Fail("WAIT");
      }
    }
    bool wrote = false;  // a write of this group that Redis carried out
    for (size_t i : indexes) {
      void* raw = nullptr;
      const int rc = redisGetReply(lease.get(), &raw);
      ReplyPtr reply(static_cast<redisReply*>(raw));
      if (rc != REDIS_OK || reply == nullptr) {
        topology_.Invalidate();
        return lease.Fail(commands[i][0]);
      }
      out[i] = Convert(*reply);
      if (routed) {
        const RedisRedirect r = ParseRedisRedirect(out[i], node);
        if (r.kind == RedisRedirect::Kind::kMoved) topology_.Moved(r.slot, r.node);
        if (r.kind != RedisRedirect::Kind::kNone) {
          again.push_back(i);
          continue;
        }
      }
      wrote = wrote || (!out[i].is_error() && !RedisCommandIsReadOnly(commands[i][0]));
    }
    if (wait > 0) {
      void* raw = nullptr;
      const int rc = redisGetReply(lease.get(), &raw);
      ReplyPtr reply(static_cast<redisReply*>(raw));
      if (rc != REDIS_OK || reply == nullptr) return lease.Fail("WAIT");
      const long long acked = reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
      if (wrote && acked < wait) return RedisReplicaAckTimeout(node, acked, wait);
    }
  }
  std::sort(again.begin(), again.end());
  for (size_t i : again) {
    LS_ASSIGN_OR_RETURN(out[i], Run(commands[i], slots[i], deadline));
  }
  return out;
}

RedisValue RedisValueFromReply(const void* reply) {
  return Convert(*static_cast<const redisReply*>(reply));
}

RedisPool::RedisPool(RedisOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {}

RedisPool::~RedisPool() = default;

absl::StatusOr<RedisValue> RedisPool::Command(const std::vector<std::string>& argv) {
  if (!ValidCommand(argv)) return StorageError();
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.command_timeout);
  absl::StatusOr<RedisValue> result =
      impl_->topology_.cluster() && Is(argv[0], "SCAN")
          ? impl_->Scan(argv)
          : impl_->Run(argv, impl_->topology_.cluster() ? RedisCommandSlot(argv) : -1, deadline);
  LS_ASSIGN_OR_RETURN(RedisValue value, std::move(result));
  if (value.is_error() && IsRetryableError(value.str)) return Refused(argv[0], value);
  if (value.is_error()) LogIfDenied(options_, argv[0], value);
  return value;
}

absl::StatusOr<std::vector<RedisValue>> RedisPool::Pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  if (commands.empty()) return std::vector<RedisValue>();
  for (const auto& argv : commands) {
    if (!ValidCommand(argv)) return StorageError();
  }
  LS_ASSIGN_OR_RETURN(std::vector<RedisValue> out, impl_->Pipeline(commands));
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].is_error() && IsRetryableError(out[i].str)) return Refused(commands[i][0], out[i]);
    if (out[i].is_error()) LogIfDenied(options_, commands[i][0], out[i]);
  }
  return out;
}

absl::StatusOr<RedisValue> RedisPool::Eval(const RedisScript& script,
                                           const std::vector<std::string>& keys,
                                           const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(script.sha1());
  argv.push_back(std::to_string(keys.size()));
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  return EvalArgv(script, std::move(argv));
}

absl::StatusOr<RedisValue> RedisPool::Eval(const RedisScript& script, std::vector<std::string>&& keys,
                                           std::vector<std::string>&& args) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(script.sha1());
  argv.push_back(std::to_string(keys.size()));
  argv.insert(argv.end(), std::make_move_iterator(keys.begin()), std::make_move_iterator(keys.end()));
  argv.insert(argv.end(), std::make_move_iterator(args.begin()), std::make_move_iterator(args.end()));
  return EvalArgv(script, std::move(argv));
}

absl::StatusOr<RedisValue> RedisPool::EvalArgv(const RedisScript& script, std::vector<std::string> argv) {
  LS_ASSIGN_OR_RETURN(RedisValue value, Command(argv));
  if (value.is_error() && absl::StartsWith(value.str, "NOSCRIPT")) {
    // First use on this server, or after SCRIPT FLUSH / a restart. EVAL runs
    // and caches it in one round trip, immune to a FLUSH in between.
    argv[0] = "EVAL";
    argv[1] = script.source();
    LS_ASSIGN_OR_RETURN(value, Command(argv));
  }
  if (value.is_error()) {
    LogError("redis script failed", {{"address", Address(options_)},
                                     {"script_sha1", script.sha1()},
                                     {"error", value.str}});
    return RedisErrorStatus(value);
  }
  return value;
}

absl::Status RedisPool::Ping() {
  LS_ASSIGN_OR_RETURN(RedisValue value, Command({"PING"}));
  if (value.type == RedisValue::Type::kStatus && value.str == "PONG") return absl::OkStatus();
  LogWarning("redis PING did not answer PONG",
             {{"address", Address(options_)}, {"reply", value.DebugString()}});
  return Unavailable();
}

absl::Status RedisPool::Ready() {
  LS_RETURN_IF_ERROR(Ping());
  // No flags: Redis treats the script as one that may write. EVAL (not
  // Eval): a refusal is the answer here, not an error worth a log line.
  // Command turns a refusal into UNAVAILABLE; any other error reply means a
  // Redis before 7.0 that cannot compile the shebang: PING is all we can tell.
  return Command({"EVAL", "#!lua\nreturn 1\n", "0"}).status();
}

}  // namespace labshare
