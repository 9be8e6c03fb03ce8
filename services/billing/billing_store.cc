#include "services/billing/billing_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/log.h"

namespace labshare::billing {
namespace keys {

std::string Applied() { return "{billing}:applied"; }
std::string Doc(absl::string_view kind, absl::string_view id) { return absl::StrCat("{billing}:", kind, ":", id); }
std::string Index(absl::string_view kind) { return absl::StrCat("{billing}:", kind, "s"); }
std::string Balances() { return "{billing}:bal"; }
std::string Account(absl::string_view account) { return absl::StrCat("{billing}:acct:", account); }
std::string Cap(absl::string_view pool_id) { return absl::StrCat("{billing}:cap:", pool_id); }
std::string PoolGeneration() { return "{billing}:poolgen"; }
std::string PoolChanges() { return "{billing}:poolchg"; }
std::string Sequences() { return "{billing}:seq"; }
std::string Invoiced() { return "{billing}:invoiced"; }
std::string Voided() { return "{billing}:voided"; }
std::string Idempotency(absl::string_view method, absl::string_view request_id) {
  return absl::StrCat("{billing}:idem:", method, ":", request_id);
}
std::string Outbox() { return "{billing}:outbox"; }
std::string IndexMember(int64_t ms, absl::string_view id) { return absl::StrFormat("%015d|%s", ms, id); }

}  // namespace keys

namespace {

constexpr int64_t kIdempotencyTtlSeconds = 30 * 24 * 3600;

// KEYS: 1 applied hash, 2 idem (or placeholder), 3 outbox, then one key per op.
// ARGV: 1 event id ('' none), 2 stream id, 3 fingerprint ('' none),
//       4 response, 5 ttl, 6 n ops, 7 n events, 8 counter limit,
//       then per op (code, a, b), then the events.
// Op codes: 'fld' field == value; 'sum' the fields a ('\n'-separated, absent
// 0) sum to at most b; 'ver' version == a; 'put' data a at
// version b; 'inc' field a += b; 'hset' field a = b; 'zrem' / 'zadd' member a;
// 'push' value a.
//
// Redis never rolls a script back, so every way a write could fail is ruled
// out before the first one: each key written holds the type its commands
// need (or nothing), every counter holds an integer and stays within
// +-limit after all of the step's increments (limit < 2^53, so Lua's doubles
// are exact and HINCRBY cannot overflow). Replies: OK, APPLIED, REPLAY,
// REUSED, STALE <key>, LIMIT <key> <field>, TYPE <key>.
const char kStepFunction[] = R"lua(
-- The type of each key, for this script run: nothing else runs meanwhile,
-- and every write below records the type it leaves (ZREM, which may delete
-- its key, forgets it), so a cached type, 'none' included, stays true.
local types = {}
local function kind_ok(k, want)
  local t = types[k]
  if t == nil then
    t = redis.call('TYPE', k)['ok']
    types[k] = t
  end
  return t == 'none' or t == want
end
local want = {put = 'hash', inc = 'hash', hset = 'hash', zadd = 'zset', zrem = 'zset', push = 'list'}
-- One step: its keys are K[ko + 1 ..], its arguments A[ao + 1 ..] (offsets,
-- so that several steps share one call's KEYS and ARGV without copies).
local function step(K, ko, A, ao)
  local applied, idem, outbox = K[ko + 1], K[ko + 2], K[ko + 3]
  local event_id, fingerprint = A[ao + 1], A[ao + 3]
  if not kind_ok(applied, 'hash') then return {'TYPE', applied} end
  if event_id ~= '' and redis.call('HEXISTS', applied, event_id) == 1 then return {'APPLIED'} end
  if fingerprint ~= '' then
    if not kind_ok(idem, 'hash') then return {'TYPE', idem} end
    local rec = redis.call('HMGET', idem, 'f', 'r')
    if rec[1] then
      if rec[1] == fingerprint then return {'REPLAY', rec[2]} end
      return {'REUSED'}
    end
  end
  if not kind_ok(outbox, 'stream') then return {'TYPE', outbox} end
  local n = tonumber(A[ao + 6])
  local limit = tonumber(A[ao + 8])
  local counters = {}
  for i = 1, n do
    local o = ao + 6 + i * 3
    local code, a, b, k = A[o], A[o + 1], A[o + 2], K[ko + 3 + i]
    if code == 'fld' then
      if not kind_ok(k, 'hash') then return {'TYPE', k} end
      if (redis.call('HGET', k, a) or '0') ~= b then return {'STALE', k .. ' ' .. a} end
    elseif code == 'sum' then
      if not kind_ok(k, 'hash') then return {'TYPE', k} end
      local total = 0
      for f in string.gmatch(a, '[^\n]+') do
        local v = redis.call('HGET', k, f) or '0'
        if not string.match(v, '^%-?%d+$') then return {'TYPE', k} end
        total = total + tonumber(v)
      end
      if total > tonumber(b) then return {'STALE', k .. ' ' .. a} end
    elseif code == 'ver' then
      if not kind_ok(k, 'hash') then return {'TYPE', k} end
      if tonumber(redis.call('HGET', k, 'v') or '0') ~= tonumber(a) then return {'STALE', k} end
    elseif want[code] then
      if not kind_ok(k, want[code]) then return {'TYPE', k} end
      if code == 'inc' then
        local id = k .. '\n' .. a
        local now = counters[id]
        if now == nil then
          local cur = redis.call('HGET', k, a) or '0'
          if not string.match(cur, '^%-?%d+$') then return {'TYPE', k} end
          now = tonumber(cur)
        end
        if not string.match(b, '^%-?%d+$') then return {'LIMIT', k, a} end
        now = now + tonumber(b)
        if now > limit or now < -limit then return {'LIMIT', k, a} end
        counters[id] = now
      end
    end
  end
  for i = 1, n do
    local o = ao + 6 + i * 3
    local code, a, b, k = A[o], A[o + 1], A[o + 2], K[ko + 3 + i]
    if code == 'put' then
      redis.call('HSET', k, 'd', a, 'v', b)
      types[k] = 'hash'
    elseif code == 'inc' then
      redis.call('HINCRBY', k, a, b)
      types[k] = 'hash'
    elseif code == 'hset' then
      redis.call('HSET', k, a, b)
      types[k] = 'hash'
    elseif code == 'zadd' then
      redis.call('ZADD', k, 0, a)
      types[k] = 'zset'
    elseif code == 'zrem' then
      redis.call('ZREM', k, a)
      types[k] = nil
    elseif code == 'push' then
      redis.call('RPUSH', k, a)
      types[k] = 'list'
    end
  end
  local first = ao + 9 + n * 3
  for i = first, first + tonumber(A[ao + 7]) - 1 do
    redis.call('XADD', outbox, '*', 'type', 'labshare.billing.v1.BillingEvent', 'payload', A[i])
    types[outbox] = 'stream'
  end
  if event_id ~= '' then
    redis.call('HSET', applied, event_id, A[ao + 2])
    types[applied] = 'hash'
  end
  if fingerprint ~= '' then
    redis.call('HSET', idem, 'f', fingerprint, 'r', A[ao + 4])
    redis.call('EXPIRE', idem, A[ao + 5])
    types[idem] = 'hash'
  end
  return {'OK'}
end
)lua";

const RedisScript& StepScript() {
  static const RedisScript* s = new RedisScript(std::string(kStepFunction) + "return step(KEYS, 0, ARGV, 0)\n");
  return *s;
}

// ApplyMany: ARGV[1] the number of steps, then per step its key count and
// argument count followed by its arguments; KEYS: every step's keys in turn.
const RedisScript& StepsScript() {
  static const RedisScript* s = new RedisScript(std::string(kStepFunction) + R"lua(
local out = {}
local ki, ai = 1, 2
for s = 1, tonumber(ARGV[1]) do
  local nk, na = tonumber(ARGV[ai]), tonumber(ARGV[ai + 1])
  ai = ai + 2
  local r = step(KEYS, ki - 1, ARGV, ai - 1)
  ki = ki + nk
  ai = ai + na
  out[s] = r
  if r[1] ~= 'OK' and r[1] ~= 'APPLIED' then return out end
end
return out
)lua");
  return *s;
}

}  // namespace

namespace {

// The keys and arguments of one step (StepScript's KEYS and ARGV).
void StepArgs(const LedgerStep& s, std::vector<std::string>& k, std::vector<std::string>& args) {
  k = {keys::Applied(), s.idempotency_key.empty() ? keys::Applied() : s.idempotency_key, keys::Outbox()};
  std::vector<std::string> ops;
  auto op = [&](const std::string& key, const char* code, std::string a, std::string b) {
    k.push_back(key);
    ops.push_back(code);
    ops.push_back(std::move(a));
    ops.push_back(std::move(b));
  };
  for (const auto& c : s.field_checks) op(c.key, "fld", c.field, c.value);
  for (const auto& c : s.sum_checks) op(c.key, "sum", absl::StrJoin(c.fields, "\n"), std::to_string(c.max));
  for (const auto& c : s.version_checks) op(c.key, "ver", std::to_string(c.version), "");
  for (const auto& p : s.puts) op(p.key, "put", p.data, std::to_string(p.version));
  for (const auto& i : s.incrs) op(i.key, "inc", i.field, std::to_string(i.delta));
  for (const auto& h : s.hash_sets) op(h.key, "hset", h.field, h.value);
  for (const auto& z : s.index_removes) op(z.key, "zrem", z.member, "");
  for (const auto& z : s.index_adds) op(z.key, "zadd", z.member, "");
  for (const auto& a : s.appends) op(a.key, "push", a.value, "");
  args = {s.applied_event_id,
                                   s.applied_stream_id.empty() ? "1" : s.applied_stream_id,
                                   s.idempotency_key.empty() ? "" : s.fingerprint,
                                   s.response,
                                   std::to_string(kIdempotencyTtlSeconds),
                                   std::to_string(ops.size() / 3),
                                   std::to_string(s.events.size()),
                                   std::to_string(kMaxCounter)};
  args.insert(args.end(), std::make_move_iterator(ops.begin()), std::make_move_iterator(ops.end()));
  args.insert(args.end(), s.events.begin(), s.events.end());
}

absl::StatusOr<StepResult> StepReply(const LedgerStep& s, const RedisValue& v) {
  if (v.type != RedisValue::Type::kArray || v.elements.empty()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  StepResult out;
  const std::string& tag = v.elements[0].str;
  if (tag == "OK") {
    out.kind = StepResult::Kind::kApplied;
  } else if (tag == "APPLIED") {
    out.kind = StepResult::Kind::kAlreadyApplied;
  } else if (tag == "REPLAY") {
    out.kind = StepResult::Kind::kReplayed;
    out.response = v.elements.size() > 1 ? v.elements[1].str : "";
  } else if (tag == "REUSED") {
    out.kind = StepResult::Kind::kRequestReused;
  } else if (tag == "STALE") {
    out.kind = StepResult::Kind::kStale;
  } else if (tag == "LIMIT" && v.elements.size() > 2) {
    // Nothing was written. Inputs are range-checked before a step is built,
    // so this is a ledger total reaching the limit. The field names the
    // account ("<account>|<counterparty>|<currency>") or cap usage.
    return InvalidField(s.limit_field, absl::StrCat("the change would take ", v.elements[2].str, " beyond +-",
                                                    kMaxCounter, " minor units; nothing was recorded"));
  } else if (tag == "TYPE" && v.elements.size() > 1) {
    LogWarning("billing step refused: a stored key has the wrong type", {{"key", v.elements[1].str}});
    return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT",
                     "stored billing data is corrupt; nothing was recorded");
  } else {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  return out;
}

}  // namespace

absl::StatusOr<StepResult> BillingStore::Apply(const LedgerStep& s) const {
  std::vector<std::string> k, args;
  StepArgs(s, k, args);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(StepScript(), k, args));
  return StepReply(s, v);
}

absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> BillingStore::ApplyMany(
    const std::vector<LedgerStep>& steps) const {
  std::vector<std::string> all_keys, all_args = {std::to_string(steps.size())};
  for (const LedgerStep& step : steps) {
    std::vector<std::string> k, args;
    StepArgs(step, k, args);
    all_args.push_back(std::to_string(k.size()));
    all_args.push_back(std::to_string(args.size()));
    all_args.insert(all_args.end(), std::make_move_iterator(args.begin()), std::make_move_iterator(args.end()));
    all_keys.insert(all_keys.end(), std::make_move_iterator(k.begin()), std::make_move_iterator(k.end()));
  }
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(StepsScript(), std::move(all_keys), std::move(all_args)));
  if (v.type != RedisValue::Type::kArray || v.elements.empty() || v.elements.size() > steps.size()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  std::vector<absl::StatusOr<StepResult>> out;
  out.reserve(v.elements.size());
  for (size_t i = 0; i < v.elements.size(); ++i) out.push_back(StepReply(steps[i], v.elements[i]));
  return out;
}

absl::StatusOr<std::vector<int64_t>> BillingStore::Counters(const std::string& key,
                                                            const std::vector<std::string>& fields) const {
  std::vector<std::string> cmd = {"HMGET", key};
  cmd.insert(cmd.end(), fields.begin(), fields.end());
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command(cmd));
  std::vector<int64_t> out(fields.size(), 0);
  for (size_t i = 0; i < out.size() && i < v.elements.size(); ++i) {
    if (!v.elements[i].is_nil()) absl::SimpleAtoi(v.elements[i].str, &out[i]);
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> BillingStore::HashAll(const std::string& key) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HGETALL", key}));
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) out.emplace_back(v.elements[i].str, v.elements[i + 1].str);
  return out;
}

absl::StatusOr<std::vector<std::string>> BillingStore::List(const std::string& key) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"LRANGE", key, "0", "-1"}));
  std::vector<std::string> out;
  for (auto& e : v.elements) out.push_back(std::move(e.str));
  return out;
}

absl::StatusOr<bool> BillingStore::EventApplied(const std::string& event_id) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HEXISTS", keys::Applied(), event_id}));
  return v.integer == 1;
}

}  // namespace labshare::billing
