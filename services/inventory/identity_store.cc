#include "services/inventory/identity_store.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/error.h"

namespace labshare::inventory {
namespace {

constexpr char kTag[] = "{inventory}:";
constexpr char kTokenPrefix[] = "lsr1";

// SHA-256 of a token, hex: all that is ever stored of it.
std::string TokenHash(absl::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

std::string RecordKey(absl::string_view token) { return absl::StrCat(kTag, "refresh:", TokenHash(token)); }

std::string FamilyKey(absl::string_view family) { return absl::StrCat(kTag, "refresh_family:", family); }

std::string UsedKey(absl::string_view family) { return absl::StrCat(kTag, "refresh_used:", family); }

std::string IdTokenKey(absl::string_view signed_part) {
  return absl::StrCat(kTag, "id_token_used:", TokenHash(signed_part));
}

absl::StatusOr<std::string> RandomToken(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(raw.size())) != 1) {
    return MakeError(absl::StatusCode::kInternal, "TOKEN_CRYPTO_FAILURE", "no random bytes for a refresh token");
  }
  return absl::WebSafeBase64Escape(raw);
}

// The family of a well-formed token, or "" (then it is unknown by definition).
std::string FamilyOf(absl::string_view token) {
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3 || parts[0] != kTokenPrefix || parts[1].size() != 22 || parts[2].size() != 43) return "";
  for (char c : absl::StrCat(parts[1], parts[2])) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return "";
  }
  return std::string(parts[1]);
}

std::string Seconds(absl::Duration d) { return std::to_string(std::max<int64_t>(1, absl::ToInt64Seconds(d))); }

absl::Status BadReply() {
  return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected reply from storage");
}

// The TTL of a session's keys: the refresh TTL, capped by what is left of
// the session's maximum age (at least 1 s).
std::string TtlSeconds(absl::Duration refresh_ttl, absl::Duration left) {
  return Seconds(std::min(refresh_ttl, absl::Ceil(left, absl::Seconds(1))));
}

// KEYS[1] new record, KEYS[2] family, KEYS[3] (optional) the ID token's
// use; ARGV[1] family id, ARGV[2] user, ARGV[3] ttl seconds, ARGV[4] the
// session's start (Unix ms), ARGV[5] the ID token use's ttl (ms). Returns 0
// without writing anything when the ID token was used before.
const RedisScript& StartScript() {
  static const RedisScript* const kScript = new RedisScript(R"lua(
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], 'fam', ARGV[1], 'user', ARGV[2], 'state', 'active')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
return 1
)lua");
  return *kScript;
}

// KEYS[1] presented record, KEYS[2] family, KEYS[3] new record, KEYS[4]
// the family's used tokens; ARGV[1] family id, ARGV[2] refresh ttl seconds,
// ARGV[3] the presented token's hash, ARGV[4] now (Unix ms), ARGV[5] the
// maximum session age (ms). Checks everything before writing.
//
// A session at its maximum age is over: its family, its used set and the
// presented token's record go, and every token of it is invalid from then
// on (not a reuse). A family of the
// first format ("1", no start) starts now.
//
// A used token is remembered in the family's used set (hash -> user), whose
// TTL moves with the family's on every rotation, capped by the session's
// maximum age: a token used at any point of a live session is a reuse for
// as long as that session lives, however many rotations ago it was used.
// Its own record goes at its use. (Records in state "used" are those
// written before the used set existed.)
const RedisScript& RotateScript() {
  static const RedisScript* const kScript = new RedisScript(R"lua(
local fam = redis.call('GET', KEYS[2])
local alive = fam ~= false
local now = tonumber(ARGV[4])
local started = now
if alive and fam ~= '1' then started = tonumber(fam) or now end
local left = started + tonumber(ARGV[5]) - now
if alive and left <= 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
  return {'expired', ''}
end
local ttl = math.min(tonumber(ARGV[2]), math.ceil(left / 1000))
if ttl < 1 then ttl = 1 end
local used_by = redis.call('HGET', KEYS[4], ARGV[3])
if used_by then
  if not alive then return {'invalid', ''} end
  redis.call('DEL', KEYS[2], KEYS[4])
  return {'reused', used_by}
end
local rec = redis.call('HMGET', KEYS[1], 'fam', 'user', 'state')
if not rec[1] or rec[1] ~= ARGV[1] then return {'invalid', ''} end
if not alive then return {'invalid', ''} end
if rec[3] ~= 'active' then
  redis.call('DEL', KEYS[2], KEYS[4])
  return {'reused', rec[2]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[4], ARGV[3], rec[2])
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('HSET', KEYS[3], 'fam', ARGV[1], 'user', rec[2], 'state', 'active')
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('SET', KEYS[2], string.format('%d', started), 'EX', ttl)
return {'rotated', rec[2], string.format('%d', started)}
)lua");
  return *kScript;
}

// KEYS[1] presented record, KEYS[2] family; ARGV[1] family id. The user of
// an active token of a live family, else "". Writes nothing.
const RedisScript& ActiveUserScript() {
  static const RedisScript* const kScript = new RedisScript(R"lua(
local rec = redis.call('HMGET', KEYS[1], 'fam', 'user', 'state')
if rec[1] ~= ARGV[1] or rec[3] ~= 'active' or redis.call('EXISTS', KEYS[2]) == 0 then return '' end
return rec[2]
)lua", RedisScript::Access::kReadOnly);
  return *kScript;
}

// KEYS[1] presented record, KEYS[2] family, KEYS[3] the family's used
// tokens; ARGV[1] family id, ARGV[2] the presented token's hash. A token the
// family issued, active or used, ends it.
const RedisScript& RevokeScript() {
  static const RedisScript* const kScript = new RedisScript(R"lua(
if redis.call('HGET', KEYS[1], 'fam') == ARGV[1] or redis.call('HGET', KEYS[3], ARGV[2]) then
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
return 0
)lua");
  return *kScript;
}

}  // namespace

std::string NormalizeEmail(absl::string_view email) {
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(email));
}

void AddSignInIndexOps(const v1::User& before, const v1::User& after, absl::string_view id,
                       std::vector<IndexOp>* ops) {
  auto move = [&](const std::string& index, const std::string& old_value, const std::string& new_value) {
    if (old_value == new_value) return;
    if (!old_value.empty()) ops->push_back({index, keys::LookupMember(old_value, id), true});
    if (!new_value.empty()) ops->push_back({index, keys::LookupMember(new_value, id), false});
  };
  move(keys::UsersBySubject(), before.external_subject(), after.external_subject());
  move(keys::UsersByEmail(), NormalizeEmail(before.email()), NormalizeEmail(after.email()));
}

absl::StatusOr<std::vector<v1::User>> IdentityStore::Lookup(const std::string& index,
                                                              absl::string_view value) const {
  if (value.empty() || absl::StrContains(value, '\n')) return std::vector<v1::User>();
  // Members "<value>\n<id>": from "[value\n" up to "(value\x0b" ('\n' + 1).
  // All of them: the callers tell one from several among those still
  // carrying the value (an email's users bound to a subject are left out
  // afterwards, however many sort before the one that is not).
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"ZRANGE", index, absl::StrCat("[", value, "\n"),
                                                    absl::StrCat("(", value, "\x0b"), "BYLEX"}));
  if (!v.is_array()) return BadReply();
  std::vector<std::string> user_keys;
  for (const RedisValue& e : v.elements) user_keys.push_back(keys::User(e.str.substr(value.size() + 1)));
  LS_ASSIGN_OR_RETURN(auto users, store_->LoadMany<v1::User>(user_keys));
  std::vector<v1::User> out;
  for (auto& u : users) out.push_back(std::move(u.value));
  return out;
}

absl::StatusOr<std::vector<v1::User>> IdentityStore::UsersWithSubject(absl::string_view subject) const {
  LS_ASSIGN_OR_RETURN(auto users, Lookup(keys::UsersBySubject(), subject));
  std::vector<v1::User> out;
  for (auto& u : users) {
    if (u.external_subject() == subject) out.push_back(std::move(u));
  }
  return out;
}

absl::StatusOr<std::vector<v1::User>> IdentityStore::UsersWithEmail(absl::string_view email) const {
  const std::string normal = NormalizeEmail(email);
  LS_ASSIGN_OR_RETURN(auto users, Lookup(keys::UsersByEmail(), normal));
  std::vector<v1::User> out;
  for (auto& u : users) {
    if (NormalizeEmail(u.email()) == normal) out.push_back(std::move(u));
  }
  return out;
}

absl::Status IdentityStore::BackfillSignInIndexes() const {
  std::string after;
  while (true) {
    LS_ASSIGN_OR_RETURN(auto ids, store_->docs().IndexRange(keys::Users(), after, 200));
    if (ids.empty()) return absl::OkStatus();
    std::vector<std::string> user_keys;
    for (const auto& id : ids) user_keys.push_back(keys::User(id));
    LS_ASSIGN_OR_RETURN(auto users, store_->LoadMany<v1::User>(user_keys));
    std::vector<std::vector<std::string>> commands;
    for (const auto& u : users) {
      const std::string id(absl::StripPrefix(u.value.name(), "users/"));
      std::vector<IndexOp> ops;
      AddSignInIndexOps(v1::User(), u.value, id, &ops);
      for (const auto& op : ops) commands.push_back({"ZADD", op.key, "0", op.member});
    }
    if (!commands.empty()) {
      LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(commands));
      for (const auto& r : replies) {
        if (r.is_error()) return RedisErrorStatus(r);
      }
    }
    after = ids.back();
  }
}

absl::StatusOr<std::string> IdentityStore::StartSession(absl::string_view user_id,
                                                      const SessionLimits& limits) const {
  return Start(user_id, limits, nullptr);
}

absl::StatusOr<std::string> IdentityStore::StartSession(absl::string_view user_id, const SessionLimits& limits,
                                                      const IdTokenUse& id_token) const {
  return Start(user_id, limits, &id_token);
}

absl::StatusOr<std::string> IdentityStore::Start(absl::string_view user_id, const SessionLimits& limits,
                                               const IdTokenUse* id_token) const {
  LS_ASSIGN_OR_RETURN(std::string family, RandomToken(16));
  LS_ASSIGN_OR_RETURN(std::string secret, RandomToken(32));
  std::string token = absl::StrCat(kTokenPrefix, ".", family, ".", secret);
  std::vector<std::string> keys = {RecordKey(token), FamilyKey(family)};
  std::vector<std::string> args = {family, std::string(user_id), TtlSeconds(limits.refresh_ttl, limits.max_age),
                                   std::to_string(absl::ToUnixMillis(limits.now))};
  if (id_token != nullptr) {
    keys.push_back(IdTokenKey(id_token->signed_part));
    args.push_back(std::to_string(std::max<int64_t>(1000, absl::ToInt64Milliseconds(absl::Ceil(
                                                                id_token->ttl, absl::Milliseconds(1))))));
  }
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(StartScript(), keys, args));
  if (v.is_error()) return RedisErrorStatus(v);
  if (v.type != RedisValue::Type::kInteger) return BadReply();
  if (v.integer == 0) return std::string();
  return token;
}

absl::StatusOr<bool> IdentityStore::IdTokenUsed(absl::string_view signed_part) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"EXISTS", IdTokenKey(signed_part)}));
  if (v.is_error()) return RedisErrorStatus(v);
  if (v.type != RedisValue::Type::kInteger) return BadReply();
  return v.integer != 0;
}

absl::StatusOr<IdentityStore::Rotation> IdentityStore::Rotate(absl::string_view refresh_token,
                                                             const SessionLimits& limits) const {
  Rotation out;
  const std::string family = FamilyOf(refresh_token);
  if (family.empty()) return out;  // kInvalid
  LS_ASSIGN_OR_RETURN(std::string secret, RandomToken(32));
  std::string next = absl::StrCat(kTokenPrefix, ".", family, ".", secret);
  LS_ASSIGN_OR_RETURN(RedisValue v,
                      pool_->Eval(RotateScript(),
                                  {RecordKey(refresh_token), FamilyKey(family), RecordKey(next), UsedKey(family)},
                                  {family, Seconds(limits.refresh_ttl), TokenHash(refresh_token),
                                   std::to_string(absl::ToUnixMillis(limits.now)),
                                   std::to_string(absl::ToInt64Milliseconds(limits.max_age))}));
  if (v.is_error()) return RedisErrorStatus(v);
  if (!v.is_array() || v.elements.size() < 2) return BadReply();
  const std::string& kind = v.elements[0].str;
  out.user_id = v.elements[1].str;
  if (kind == "rotated") {
    int64_t started_ms = 0;
    if (v.elements.size() != 3 || !absl::SimpleAtoi(v.elements[2].str, &started_ms)) return BadReply();
    out.kind = Rotation::Kind::kRotated;
    out.new_token = std::move(next);
    out.session_start = absl::FromUnixMillis(started_ms);
  } else if (kind == "reused") {
    out.kind = Rotation::Kind::kReused;
  } else if (kind == "expired") {
    out.kind = Rotation::Kind::kExpired;
  }
  return out;
}

absl::StatusOr<std::string> IdentityStore::ActiveTokenUser(absl::string_view refresh_token) const {
  const std::string family = FamilyOf(refresh_token);
  if (family.empty()) return std::string();
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(ActiveUserScript(), {RecordKey(refresh_token), FamilyKey(family)},
                                                {family}));
  if (v.is_error()) return RedisErrorStatus(v);
  if (v.type != RedisValue::Type::kString) return BadReply();
  return v.str;
}

absl::Status IdentityStore::RevokeSession(absl::string_view refresh_token) const {
  const std::string family = FamilyOf(refresh_token);
  if (family.empty()) return absl::OkStatus();
  LS_ASSIGN_OR_RETURN(RedisValue v,
                      pool_->Eval(RevokeScript(), {RecordKey(refresh_token), FamilyKey(family), UsedKey(family)},
                                  {family, TokenHash(refresh_token)}));
  if (v.is_error()) return RedisErrorStatus(v);
  return absl::OkStatus();
}

}  // namespace labshare::inventory
