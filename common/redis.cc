#include "common/redis.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <poll.h>

#include <charconv>
#include <cstdint>
#include <chrono>
#include <climits>
#include <system_error>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/log.h"
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

namespace {

}  // namespace

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

RedisScript::RedisScript(std::string source) : source_(std::move(source)) {
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

// ---- RedisPool --------------------------------------------------------------

namespace {
struct ContextDeleter {
  void operator()(redisContext* c) const {
    if (c != nullptr) redisFree(c);
  }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;
}  // namespace

// The connections to one server: at most `capacity` open, each used by one
// caller at a time.
class RedisPool::Impl {
 public:
  explicit Impl(const RedisOptions& options)
      : options_(options), capacity_(static_cast<size_t>(options.pool_size > 0 ? options.pool_size : 1)) {}

  class Lease;
  absl::StatusOr<ContextPtr> Acquire();
  void Release(ContextPtr context, bool healthy);
  absl::StatusOr<ContextPtr> Connect() const;

  const RedisOptions& options_;
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable slot_freed_;
  std::vector<ContextPtr> idle_;  // guarded by mu_
  size_t open_ = 0;               // guarded by mu_; idle + leased + being connected
};

// One connection leased to one caller; returned to the pool, or dropped if it
// failed, when the lease ends.
class RedisPool::Impl::Lease {
 public:
  Lease(Impl* pool, ContextPtr context) : pool_(pool), context_(std::move(context)) {}
  ~Lease() { pool_->Release(std::move(context_), !broken_); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  redisContext* get() const { return context_.get(); }

  // hiredis contexts are unusable after an error: drop this one.
  absl::Status Fail(std::string_view command) {
    broken_ = true;
    LogWarning("redis I/O failed; dropping the connection",
               {{"address", Address(pool_->options_)},
                {"command", std::string(command)},
                {"error", context_->err != 0 ? context_->errstr : "no reply"}});
    return Unavailable();
  }

 private:
  Impl* pool_;
  ContextPtr context_;
  bool broken_ = false;
};

RedisValue RedisValueFromReply(const void* reply) {
  return Convert(*static_cast<const redisReply*>(reply));
}

RedisPool::RedisPool(RedisOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {}

RedisPool::~RedisPool() = default;

absl::StatusOr<ContextPtr> RedisPool::Impl::Connect() const {
  ContextPtr c(redisConnectWithTimeout(options_.host.c_str(), options_.port,
                                       absl::ToTimeval(options_.connect_timeout)));
  if (c == nullptr || c->err != 0) {
    LogWarning("redis connect failed", {{"address", Address(options_)},
                                        {"error", c != nullptr ? c->errstr : "out of memory"}});
    return Unavailable();
  }
  if (redisSetTimeout(c.get(), absl::ToTimeval(options_.command_timeout)) != REDIS_OK ||
      redisEnableKeepAlive(c.get()) != REDIS_OK) {
    LogWarning("redis socket setup failed", {{"address", Address(options_)}, {"error", c->errstr}});
    return Unavailable();
  }
  // hiredis does not set close-on-exec; a forked child must not keep our
  // connections open.
  const int flags = fcntl(c->fd, F_GETFD);
  if (flags >= 0) fcntl(c->fd, F_SETFD, flags | FD_CLOEXEC);
  LS_RETURN_IF_ERROR(AuthenticateRedis(c.get(), options_));
  return c;
}

absl::StatusOr<ContextPtr> RedisPool::Impl::Acquire() {
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.command_timeout);
  std::vector<ContextPtr> stale;  // closed after the lock is released
  {
    std::unique_lock<std::mutex> lock(mu_);
    bool timed_out = false;
    while (true) {
      while (!idle_.empty()) {
        ContextPtr c = std::move(idle_.back());
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
        LogWarning("redis pool exhausted", {{"address", Address(options_)},
                                            {"pool_size", std::to_string(capacity_)}});
        return Unavailable();
      }
      timed_out = slot_freed_.wait_until(lock, deadline) == std::cv_status::timeout;
    }
  }
  absl::StatusOr<ContextPtr> c = Connect();
  if (!c.ok()) Release(nullptr, false);
  return c;
}

void RedisPool::Impl::Release(ContextPtr context, bool healthy) {
  ContextPtr dropped;  // closed after the lock is released
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

absl::StatusOr<RedisValue> RedisPool::Command(const std::vector<std::string>& argv) {
  if (!ValidCommand(argv)) return StorageError();
  LS_ASSIGN_OR_RETURN(ContextPtr context, impl_->Acquire());
  Impl::Lease lease(impl_.get(), std::move(context));
  ArgvRef ref(argv);
  ReplyPtr reply(
      static_cast<redisReply*>(redisCommandArgv(lease.get(), ref.argc(), ref.argv(), ref.lens())));
  if (reply == nullptr || lease.get()->err != 0) return lease.Fail(argv[0]);
  RedisValue value = Convert(*reply);
  if (value.is_error() && IsRetryableError(value.str)) return Refused(argv[0], value);
  if (value.is_error()) LogIfDenied(options_, argv[0], value);
  return value;
}

absl::StatusOr<std::vector<RedisValue>> RedisPool::Pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  std::vector<RedisValue> out;
  if (commands.empty()) return out;
  for (const auto& argv : commands) {
    if (!ValidCommand(argv)) return StorageError();
  }
  LS_ASSIGN_OR_RETURN(ContextPtr context, impl_->Acquire());
  Impl::Lease lease(impl_.get(), std::move(context));
  for (const auto& argv : commands) {
    ArgvRef ref(argv);
    if (redisAppendCommandArgv(lease.get(), ref.argc(), ref.argv(), ref.lens()) != REDIS_OK) {
      return lease.Fail(argv[0]);
    }
  }
  out.reserve(commands.size());
  for (const auto& argv : commands) {
    void* raw = nullptr;
    const int rc = redisGetReply(lease.get(), &raw);
    ReplyPtr reply(static_cast<redisReply*>(raw));
    if (rc != REDIS_OK || reply == nullptr) return lease.Fail(argv[0]);
    out.push_back(Convert(*reply));
  }
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
