#include "common/doc_store.h"

#include "absl/strings/str_cat.h"
#include "common/error.h"
#include "common/lua_guards.h"

namespace labshare {
namespace {

// Every check (idempotency, versions, key types) comes before the first
// write: Redis does not roll a script back.
// KEYS: idempotency (or placeholder), outbox (or placeholder), documents,
//       index keys, list keys, guarded keys, incremented hashes, documents
//       keeping their first answer.
// ARGV: has_idem, fingerprint, response, ttl, n_writes, n_index, n_append,
//       has_event, event_type, event_payload, n_guards, n_more_events, then
//       per write (expected, data), per index op (op: '-' remove, '+' add at
//       score 0, '+<score>' add at that integer score; member), per append
//       (value), per guard (expected, 'v' version, 'n' zset members or
//       'c<min score>' zset members of that score or more), per
//       further event (type, payload), n_increments, per increment (field,
//       delta).
const RedisScript& CommitScript() {
  static const RedisScript* script = new RedisScript(std::string(kLuaGuards) + R"lua(
local has_idem = ARGV[1] == '1'
if has_idem then
  local rec = redis.call('HMGET', KEYS[1], 'f', 'r')
  if rec[1] then
    if rec[1] == ARGV[2] then return {'REPLAY', rec[2]} end
    return {'REUSED'}
  end
end
local nw, ni, na = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ng, ne = tonumber(ARGV[11]), tonumber(ARGV[12])
local gbase = 13 + nw * 2 + ni * 2 + na
for i = 1, ng do
  local key = KEYS[2 + nw + ni + na + i]
  local expected = tonumber(ARGV[gbase + (i - 1) * 2])
  local current
  local kind = ARGV[gbase + (i - 1) * 2 + 1]
  if kind == 'n' then
    current = redis.call('ZCARD', key)
  elseif string.sub(kind, 1, 1) == 'c' then
    current = redis.call('ZCOUNT', key, string.sub(kind, 2), '+inf')
  else
    current = tonumber(redis.call('HGET', key, 'v') or '0')
  end
  if current ~= expected then return {'CONFLICT', key} end
end
local base = 13
for i = 1, nw do
  local key = KEYS[2 + i]
  local expected = tonumber(ARGV[base + (i - 1) * 2])
  local current = tonumber(redis.call('HGET', key, 'v') or '0')
  if current ~= expected then return {'CONFLICT', key} end
  -- Versions are exact in Lua up to 2^53.
  if expected >= 9007199254740991 then return redis.error_reply('ERR version limit of ' .. key) end
end
-- Nothing below may fail (Redis does not roll back): every key has the type
-- it is written as.
for i = 1, ni do
  if not ls_type_is(KEYS[2 + nw + i], 'zset') then return redis.error_reply('WRONGTYPE index ' .. KEYS[2 + nw + i]) end
end
for i = 1, na do
  if not ls_type_is(KEYS[2 + nw + ni + i], 'list') then
    return redis.error_reply('WRONGTYPE list ' .. KEYS[2 + nw + ni + i])
  end
end
if ARGV[8] == '1' and not ls_type_is(KEYS[2], 'stream') then return redis.error_reply('WRONGTYPE outbox ' .. KEYS[2]) end
local ibase = gbase + ng * 2 + (ARGV[8] == '1' and ne * 2 or 0) + 1
local nc = tonumber(ARGV[ibase - 1])
local kbase = 2 + nw + ni + na + ng
local nk = #KEYS - kbase - nc
-- Every counter stays an exact int64 after all its increments.
local sums = {}
for i = 1, nc do
  local key, field = KEYS[kbase + i], ARGV[ibase + (i - 1) * 2]
  if not ls_type_is(key, 'hash') then return redis.error_reply('WRONGTYPE counters ' .. key) end
  local slot = key .. '\0' .. field
  if sums[slot] == nil then sums[slot] = redis.call('HGET', key, field) or '0' end
  sums[slot] = ls_add(sums[slot], ARGV[ibase + (i - 1) * 2 + 1])
  if not sums[slot] then return redis.error_reply('ERR counter ' .. field .. ' of ' .. key .. ' would not stay an integer') end
end
for i = 1, nk do
  local key = KEYS[kbase + nc + i]
  local rec = redis.call('HMGET', key, 'f', 'r', 'd')
  if rec[1] and not rec[2] and rec[3] then redis.call('HSET', key, 'r', rec[3]) end
end
for i = 1, nw do
  local expected = tonumber(ARGV[base + (i - 1) * 2])
  redis.call('HSET', KEYS[2 + i], 'v', expected + 1, 'd', ARGV[base + (i - 1) * 2 + 1])
end
base = base + nw * 2
for i = 1, ni do
  local key = KEYS[2 + nw + i]
  local op = ARGV[base + (i - 1) * 2]
  if op == '+' then
    redis.call('ZADD', key, 0, ARGV[base + (i - 1) * 2 + 1])
  elseif string.sub(op, 1, 1) == '+' then
    redis.call('ZADD', key, string.sub(op, 2), ARGV[base + (i - 1) * 2 + 1])
  else
    redis.call('ZREM', key, ARGV[base + (i - 1) * 2 + 1])
  end
end
base = base + ni * 2
for i = 1, na do
  redis.call('RPUSH', KEYS[2 + nw + ni + i], ARGV[base + i - 1])
end
for i = 1, nc do
  redis.call('HINCRBY', KEYS[kbase + i], ARGV[ibase + (i - 1) * 2], ARGV[ibase + (i - 1) * 2 + 1])
end
local id = ''
if ARGV[8] == '1' then
  id = redis.call('XADD', KEYS[2], '*', 'type', ARGV[9], 'payload', ARGV[10])
  local ebase = gbase + ng * 2
  for i = 1, ne do
    redis.call('XADD', KEYS[2], '*', 'type', ARGV[ebase + (i - 1) * 2], 'payload', ARGV[ebase + (i - 1) * 2 + 1])
  end
end
if has_idem then
  redis.call('HSET', KEYS[1], 'f', ARGV[2], 'r', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return {'OK', id}
)lua");
  return *script;
}

absl::Status BadReply() {
  return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
}

absl::StatusOr<std::optional<StoredDoc>> DocFromReply(const RedisValue& v) {
  if (v.type != RedisValue::Type::kArray || v.elements.size() != 2) return BadReply();
  if (v.elements[0].is_nil()) return std::optional<StoredDoc>();
  StoredDoc doc;
  doc.data = v.elements[0].str;
  doc.version = std::strtoll(v.elements[1].str.c_str(), nullptr, 10);
  return std::optional<StoredDoc>(std::move(doc));
}

}  // namespace

absl::Status RequestIdReused() {
  return MakeError(absl::StatusCode::kFailedPrecondition, "REQUEST_ID_REUSED",
                   "request_id was already used for a different request; use a new request_id "
                   "for a new request");
}

DocStore::DocStore(RedisPool* pool, absl::Duration idempotency_ttl)
    : pool_(pool), idempotency_ttl_seconds_(absl::ToInt64Seconds(idempotency_ttl)) {}

absl::StatusOr<std::optional<StoredDoc>> DocStore::Get(const std::string& key) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HMGET", key, "d", "v"}));
  return DocFromReply(v);
}

absl::StatusOr<std::vector<std::optional<StoredDoc>>> DocStore::GetMany(
    const std::vector<std::string>& keys) const {
  std::vector<std::optional<StoredDoc>> out;
  if (keys.empty()) return out;
  std::vector<std::vector<std::string>> commands;
  commands.reserve(keys.size());
  for (const auto& k : keys) commands.push_back({"HMGET", k, "d", "v"});
  LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(commands));
  out.reserve(replies.size());
  for (const auto& r : replies) {
    LS_ASSIGN_OR_RETURN(auto doc, DocFromReply(r));
    out.push_back(std::move(doc));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> DocStore::IndexRange(const std::string& key,
                                                              const std::string& after,
                                                              int limit) const {
  LS_ASSIGN_OR_RETURN(RedisValue v,
                      pool_->Command({"ZRANGE", key, after.empty() ? "-" : "(" + after, "+",
                                      "BYLEX", "LIMIT", "0", std::to_string(limit)}));
  if (v.type != RedisValue::Type::kArray) return BadReply();
  std::vector<std::string> out;
  out.reserve(v.elements.size());
  for (auto& e : v.elements) out.push_back(std::move(e.str));
  return out;
}

absl::StatusOr<std::vector<std::string>> DocStore::ListRange(const std::string& key,
                                                             int64_t start,
                                                             int64_t count) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"LRANGE", key, std::to_string(start),
                                                    std::to_string(start + count - 1)}));
  if (v.type != RedisValue::Type::kArray) return BadReply();
  std::vector<std::string> out;
  for (auto& e : v.elements) out.push_back(std::move(e.str));
  return out;
}

absl::StatusOr<std::optional<std::string>> DocStore::FindReplay(
    const std::string& idempotency_key, const std::string& fingerprint, const std::string& also_accepted) const {
  if (idempotency_key.empty()) return std::optional<std::string>();
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HMGET", idempotency_key, "f", "r"}));
  if (v.type != RedisValue::Type::kArray || v.elements.size() != 2) return BadReply();
  if (v.elements[0].is_nil()) return std::optional<std::string>();
  const std::string& stored = v.elements[0].str;
  if (stored != fingerprint && (also_accepted.empty() || stored != also_accepted)) return RequestIdReused();
  return std::optional<std::string>(v.elements[1].str);
}

absl::StatusOr<CommitOutcome> DocStore::Commit(const Mutation& m) const {
  const bool has_idem = !m.idempotency_key.empty();
  const bool has_event = !m.outbox_key.empty();
  // Placeholders keep KEYS positions fixed; the script never touches them.
  // A key of the step's own (one hash slot in a cluster): a step of only a
  // request record and guards has neither writes nor event.
  std::string placeholder = !m.writes.empty() ? m.writes.front().key
                            : has_event      ? m.outbox_key
                            : !m.guards.empty() ? m.guards.front().key
                                                : m.idempotency_key;
  std::vector<std::string> keys = {has_idem ? m.idempotency_key : placeholder,
                                   has_event ? m.outbox_key : placeholder};
  std::vector<std::string> args = {has_idem ? "1" : "0",
                                   m.fingerprint,
                                   m.response,
                                   std::to_string(idempotency_ttl_seconds_),
                                   std::to_string(m.writes.size()),
                                   std::to_string(m.index_ops.size()),
                                   std::to_string(m.appends.size()),
                                   has_event ? "1" : "0",
                                   m.event_type,
                                   m.event_payload,
                                   std::to_string(m.guards.size()),
                                   std::to_string(has_event ? m.more_events.size() : 0)};
  for (const auto& w : m.writes) {
    keys.push_back(w.key);
    args.push_back(std::to_string(w.expected_version));
    args.push_back(w.data);
  }
  for (const auto& op : m.index_ops) {
    keys.push_back(op.key);
    // '+' alone: score 0 (what every index step sent before scores).
    args.push_back(op.remove ? "-" : op.score == 0 ? "+" : absl::StrCat("+", op.score));
    args.push_back(op.member);
  }
  for (const auto& a : m.appends) {
    keys.push_back(a.key);
    args.push_back(a.value);
  }
  for (const auto& g : m.guards) {
    keys.push_back(g.key);
    args.push_back(std::to_string(g.expected));
    args.push_back(!g.count ? "v" : g.min_score ? absl::StrCat("c", *g.min_score) : "n");
  }
  if (has_event) {
    for (const auto& e : m.more_events) {
      args.push_back(e.type);
      args.push_back(e.payload);
    }
  }
  args.push_back(std::to_string(m.increments.size()));
  for (const auto& c : m.increments) {
    keys.push_back(c.key);
    args.push_back(c.field);
    args.push_back(std::to_string(c.delta));
  }
  for (const auto& k : m.keep_first_answer) keys.push_back(k);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(CommitScript(), keys, args));
  if (v.type != RedisValue::Type::kArray || v.elements.empty()) return BadReply();
  const std::string& tag = v.elements[0].str;
  CommitOutcome out;
  if (tag == "OK") {
    out.kind = CommitOutcome::Kind::kApplied;
    if (v.elements.size() > 1) out.stream_id = v.elements[1].str;
  } else if (tag == "REPLAY" && v.elements.size() > 1) {
    out.kind = CommitOutcome::Kind::kReplayed;
    out.response = v.elements[1].str;
  } else if (tag == "REUSED") {
    out.kind = CommitOutcome::Kind::kRequestReused;
  } else if (tag == "CONFLICT" && v.elements.size() > 1) {
    out.kind = CommitOutcome::Kind::kConflict;
    out.conflict_key = v.elements[1].str;
  } else {
    return BadReply();
  }
  return out;
}

}  // namespace labshare
