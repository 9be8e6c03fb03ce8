#include "services/billing/billing_store.h"

#include <unordered_map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
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
std::string CapLegacyKinds() { return "{billing}:capkind"; }
std::string PoolGeneration() { return "{billing}:poolgen"; }
std::string PoolChanges() { return "{billing}:poolchg"; }
std::string Sequences() { return "{billing}:seq"; }
std::string PeriodInvoices(absl::string_view period, absl::string_view currency) {
  return absl::StrCat("{billing}:invperiod:", period, "|", currency);
}
std::string PeriodInvoiceCount() { return "{billing}:invperiods"; }
std::string Invoiced() { return "{billing}:invoiced"; }
std::string Voided() { return "{billing}:voided"; }
std::string Idempotency(absl::string_view method, absl::string_view request_id) {
  return absl::StrCat("{billing}:idem:", method, ":", request_id);
}
std::string Outbox() { return "{billing}:outbox"; }
std::string IndexMember(absl::Time t, absl::string_view id) {
  return absl::StrFormat("%019d|%s", absl::ToUnixNanos(t), id);
}
std::optional<int64_t> LegacyIndexMillis(absl::string_view time_field) {
  int64_t ms = 0;
  if (time_field.size() != 15 || !absl::SimpleAtoi(time_field, &ms) || ms < 0) return std::nullopt;
  for (char c : time_field) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return ms;
}
std::string Clock() { return "{billing}:clock"; }

}  // namespace keys

namespace {
constexpr uint64_t kSignBit = uint64_t{1} << 63;
}  // namespace

std::string ClockStamp(absl::Time t) {
  return absl::StrFormat("%020u", static_cast<uint64_t>(absl::ToUnixNanos(t)) ^ kSignBit);
}

std::optional<absl::Time> ParseClockStamp(absl::string_view stamp) {
  uint64_t v = 0;
  if (stamp.size() != 20 || !absl::SimpleAtoi(stamp, &v)) return std::nullopt;
  return absl::FromUnixNanos(static_cast<int64_t>(v ^ kSignBit));
}

namespace {

constexpr int64_t kIdempotencyTtlSeconds = 30 * 24 * 3600;

// One Lua call runs one or more steps, in order (Apply: one).
// KEYS: every key any step names, each once.
// ARGV: 1 the number of steps, 2 the idempotency record's ttl, 3 the counter
// limit, then per step its program (a binary string) and its arguments.
// A step's program: 3-byte big-endian numbers: the KEYS index of the applied
// hash, of the idempotency record (0: none) and of the outbox, the number of
// ops, of events and of the step's arguments after the program; then per op
// one code byte and the 3-byte KEYS index of its key. The step's arguments:
// event id ('' none), stream id, [fingerprint, response: only with an
// idempotency record], each op's arguments (a, and b for the codes that
// take two), then the events.
// Op codes: 1 'fld' field a == b; 2 'sum' the fields a ('\n'-separated,
// absent 0) sum to at most b; 3 'ver' version == a; 4 'put' data a at
// version b; 5 'inc' field a += b; 6 'hset' field a = b; 7 'zrem' / 8 'zadd'
// member a; 9 'push' value a; 10 'clock' the stamp a (ClockStamp) is at or
// after field "t" (absent: any), which it then becomes.
// (Each argument Redis turns into a Lua string costs about 0.2 us: keys
// named once and codes packed in the program make a charge's step about 55
// arguments instead of about 190.)
//
// Redis never rolls a script back, so every way a write could fail is ruled
// out before the first one: each key written holds the type its commands
// need (or nothing), every counter holds an integer (in the canonical
// decimal form Redis' HINCRBY and the C++ side take: "0", or an optional
// '-' and digits without a leading zero; "007", "-0", "+7" are no integers
// and answer TYPE, as "12.5" does) and stays within
// +-limit after all of the step's increments (limit < 2^53, so Lua's doubles
// are exact and HINCRBY cannot overflow). Replies, per step: OK, APPLIED,
// REPLAY, REUSED, STALE <key>, CLOCK <latest stamp>, LIMIT <key> <field>,
// TYPE <key>. The call
// stops after the first step that answers neither OK nor APPLIED.
const char kStepsScript[] = R"lua(
local byte, match, gmatch, call = string.byte, string.match, string.gmatch, redis.call
-- The type of each key, for this script run: nothing else runs meanwhile,
-- and every write below records the type it leaves (ZREM, which may delete
-- its key, forgets it), so a cached type, 'none' included, stays true.
local types = {}
local function kind_ok(k, want)
  local t = types[k]
  if t == nil then
    t = call('TYPE', k)['ok']
    types[k] = t
  end
  return t == 'none' or t == want
end
local want = {nil, nil, nil, 'hash', 'hash', 'hash', 'zset', 'zset', 'list', 'hash'}
local arity = {2, 2, 1, 2, 2, 2, 1, 1, 1, 1}
local ttl, limit = ARGV[2], tonumber(ARGV[3])
-- An integer as HINCRBY takes it: no sign but '-', no leading zero, no "-0".
local function int_ok(x)
  return x == '0' or match(x, '^%-?[1-9]%d*$') ~= nil
end
local function num(prog, p)
  local a, b, c = byte(prog, p, p + 2)
  return (a * 256 + b) * 256 + c
end
local function step(prog, ai)
  local applied, outbox = KEYS[num(prog, 1)], KEYS[num(prog, 7)]
  local idem_at = num(prog, 4)
  local idem = idem_at > 0 and KEYS[idem_at] or nil
  local n, events = num(prog, 10), num(prog, 13)
  local event_id = ARGV[ai]
  local v = ai + 2
  local fingerprint, response
  if idem then
    fingerprint, response = ARGV[v], ARGV[v + 1]
    v = v + 2
  end
  if not kind_ok(applied, 'hash') then return {'TYPE', applied} end
  if event_id ~= '' and call('HEXISTS', applied, event_id) == 1 then return {'APPLIED'} end
  if idem then
    if not kind_ok(idem, 'hash') then return {'TYPE', idem} end
    local rec = call('HMGET', idem, 'f', 'r')
    if rec[1] then
      if rec[1] == fingerprint then return {'REPLAY', rec[2]} end
      return {'REUSED'}
    end
  end
  if not kind_ok(outbox, 'stream') then return {'TYPE', outbox} end
  -- The counters' values before the step, read with one HMGET per hash
  -- (a charge increments some ten fields of {billing}:bal); a hash of the
  -- wrong type is not read here and answers TYPE at its op below.
  local fields, cur = {}, {}
  local w = v
  for i = 1, n do
    local p = 19 + (i - 1) * 4
    local code = byte(prog, p)
    if code == 5 then
      local k = KEYS[num(prog, p + 1)]
      local list = fields[k]
      if list == nil then
        list = {}
        fields[k] = list
      end
      list[#list + 1] = ARGV[w]
    end
    w = w + arity[code]
  end
  for k, list in pairs(fields) do
    if kind_ok(k, 'hash') then
      local values = {}
      for from = 1, #list, 500 do  -- unpack's stack stays small
        local to = math.min(from + 499, #list)
        local got = call('HMGET', k, unpack(list, from, to))
        for j = from, to do values[list[j]] = got[j - from + 1] or '0' end
      end
      cur[k] = values
    end
  end
  local counters = {}
  local first = v
  for i = 1, n do
    local p = 19 + (i - 1) * 4
    local code = byte(prog, p)
    local k = KEYS[num(prog, p + 1)]
    local a, b = ARGV[v], ARGV[v + 1]
    v = v + arity[code]
    if code == 1 then
      if not kind_ok(k, 'hash') then return {'TYPE', k} end
      if (call('HGET', k, a) or '0') ~= b then return {'STALE', k .. ' ' .. a} end
    elseif code == 2 then
      if not kind_ok(k, 'hash') then return {'TYPE', k} end
      local total = 0
      for f in gmatch(a, '[^\n]+') do
        local x = call('HGET', k, f) or '0'
        if not int_ok(x) then return {'TYPE', k} end
        total = total + tonumber(x)
      end
      if total > tonumber(b) then return {'STALE', k .. ' ' .. a} end
    elseif code == 3 then
      if not kind_ok(k, 'hash') then return {'TYPE', k} end
      if tonumber(call('HGET', k, 'v') or '0') ~= tonumber(a) then return {'STALE', k} end
    elseif code == 10 then
      -- Stamps are 20 digits: their text order is their time order.
      if not kind_ok(k, 'hash') then return {'TYPE', k} end
      local latest = call('HGET', k, 't')
      if latest then
        if #latest ~= 20 or match(latest, '^%d+$') == nil then return {'TYPE', k} end
        if latest > a then return {'CLOCK', latest} end
      end
    else
      if not kind_ok(k, want[code]) then return {'TYPE', k} end
      if code == 5 then
        local id = k .. '\n' .. a
        local now = counters[id]
        if now == nil then
          local was = cur[k][a]
          if not int_ok(was) then return {'TYPE', k} end
          now = tonumber(was)
        end
        if not int_ok(b) then return {'LIMIT', k, a} end
        now = now + tonumber(b)
        if now > limit or now < -limit then return {'LIMIT', k, a} end
        counters[id] = now
      end
    end
  end
  v = first
  for i = 1, n do
    local p = 19 + (i - 1) * 4
    local code = byte(prog, p)
    local k = KEYS[num(prog, p + 1)]
    local a, b = ARGV[v], ARGV[v + 1]
    v = v + arity[code]
    if code == 4 then
      call('HSET', k, 'd', a, 'v', b)
      types[k] = 'hash'
    elseif code == 5 then
      call('HINCRBY', k, a, b)
      types[k] = 'hash'
    elseif code == 6 then
      call('HSET', k, a, b)
      types[k] = 'hash'
    elseif code == 8 then
      call('ZADD', k, 0, a)
      types[k] = 'zset'
    elseif code == 7 then
      call('ZREM', k, a)
      types[k] = nil
    elseif code == 9 then
      call('RPUSH', k, a)
      types[k] = 'list'
    elseif code == 10 then
      call('HSET', k, 't', a)
      types[k] = 'hash'
    end
  end
  for i = v, v + events - 1 do
    call('XADD', outbox, '*', 'type', 'labshare.billing.v1.BillingEvent', 'payload', ARGV[i])
    types[outbox] = 'stream'
  end
  if event_id ~= '' then
    call('HSET', applied, event_id, ARGV[ai + 1])
    types[applied] = 'hash'
  end
  if idem then
    call('HSET', idem, 'f', fingerprint, 'r', response)
    call('EXPIRE', idem, ttl)
    types[idem] = 'hash'
  end
  return {'OK'}
end
local out = {}
local ai = 4
for s = 1, tonumber(ARGV[1]) do
  local prog = ARGV[ai]
  local r = step(prog, ai + 1)
  ai = ai + 1 + num(prog, 16)
  out[s] = r
  if r[1] ~= 'OK' and r[1] ~= 'APPLIED' then return out end
end
return out
)lua";

const RedisScript& StepsScript() {
  static const RedisScript* s = new RedisScript(kStepsScript);
  return *s;
}

// Builds one Lua call's KEYS (each key once) and ARGV.
class StepsCall {
 public:
  explicit StepsCall(size_t steps)
      : args_({std::to_string(steps), std::to_string(kIdempotencyTtlSeconds), std::to_string(kMaxCounter)}) {}

  void Add(const LedgerStep& s) {
    const bool idem = !s.idempotency_key.empty() && !s.fingerprint.empty();
    std::string prog;
    Num(prog, Key(keys::Applied()));
    Num(prog, idem ? Key(s.idempotency_key) : 0);
    Num(prog, Key(keys::Outbox()));
    const size_t counts_at = prog.size();
    prog.resize(prog.size() + 9);  // ops, events, arguments: below
    const size_t prog_at = args_.size();
    args_.emplace_back();
    args_.push_back(s.applied_event_id);
    args_.push_back(s.applied_stream_id.empty() ? "1" : s.applied_stream_id);
    if (idem) {
      args_.push_back(s.fingerprint);
      args_.push_back(s.response);
    }
    size_t ops = 0;
    auto op = [&](const std::string& key, char code, std::string a) {
      prog.push_back(code);
      Num(prog, Key(key));
      args_.push_back(std::move(a));
      ++ops;
    };
    for (const auto& c : s.field_checks) {
      op(c.key, 1, c.field);
      args_.push_back(c.value);
    }
    for (const auto& c : s.sum_checks) {
      op(c.key, 2, absl::StrJoin(c.fields, "\n"));
      args_.push_back(std::to_string(c.max));
    }
    for (const auto& c : s.version_checks) op(c.key, 3, std::to_string(c.version));
    if (s.stamp) op(keys::Clock(), 10, ClockStamp(*s.stamp));
    for (const auto& p : s.puts) {
      op(p.key, 4, p.data);
      args_.push_back(std::to_string(p.version));
    }
    for (const auto& i : s.incrs) {
      op(i.key, 5, i.field);
      args_.push_back(std::to_string(i.delta));
    }
    for (const auto& h : s.hash_sets) {
      op(h.key, 6, h.field);
      args_.push_back(h.value);
    }
    for (const auto& z : s.index_removes) op(z.key, 7, z.member);
    for (const auto& z : s.index_adds) op(z.key, 8, z.member);
    for (const auto& a : s.appends) op(a.key, 9, a.value);
    args_.insert(args_.end(), s.events.begin(), s.events.end());
    std::string counts;
    Num(counts, ops);
    Num(counts, s.events.size());
    Num(counts, args_.size() - prog_at - 1);
    prog.replace(counts_at, counts.size(), counts);
    args_[prog_at] = std::move(prog);
  }

  bool fits() const { return fits_; }
  std::vector<std::string>&& keys() { return std::move(keys_); }
  std::vector<std::string>&& args() { return std::move(args_); }

 private:
  // 3 bytes, big-endian. KEYS indexes and counts stay below 2^24 (a call of
  // that many arguments is far beyond Redis's limits anyway); one that does
  // not is refused before the call (fits()), never sent wrapped.
  void Num(std::string& out, size_t n) {
    if (n >= (size_t{1} << 24)) fits_ = false;
    out.push_back(static_cast<char>((n >> 16) & 0xff));
    out.push_back(static_cast<char>((n >> 8) & 0xff));
    out.push_back(static_cast<char>(n & 0xff));
  }
  bool fits_ = true;
  size_t Key(const std::string& key) {
    auto [it, added] = index_.emplace(key, keys_.size() + 1);
    if (added) keys_.push_back(key);
    return it->second;
  }

  std::vector<std::string> keys_, args_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace

namespace {

// Raises `floor` (unix nanoseconds) to `t` if it is below.
void RaiseFloor(std::atomic<int64_t>& floor, absl::Time t) {
  const int64_t nanos = absl::ToUnixNanos(t);
  int64_t was = floor.load();
  while (was < nanos && !floor.compare_exchange_weak(was, nanos)) {
  }
}

absl::StatusOr<StepResult> StepReply(const LedgerStep& s, const RedisValue& v, std::atomic<int64_t>& floor) {
  if (v.type != RedisValue::Type::kArray || v.elements.empty()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  StepResult out;
  const std::string& tag = v.elements[0].str;
  if (tag == "OK") {
    out.kind = StepResult::Kind::kApplied;
    if (s.stamp) RaiseFloor(floor, *s.stamp);
  } else if (tag == "APPLIED") {
    out.kind = StepResult::Kind::kAlreadyApplied;
  } else if (tag == "REPLAY") {
    out.kind = StepResult::Kind::kReplayed;
    out.response = v.elements.size() > 1 ? v.elements[1].str : "";
  } else if (tag == "REUSED") {
    out.kind = StepResult::Kind::kRequestReused;
  } else if (tag == "STALE") {
    out.kind = StepResult::Kind::kStale;
  } else if (tag == "CLOCK" && v.elements.size() > 1) {
    // A step committed before this one was stamped later: nothing was
    // written; stamped again at or after that one (ClockFloor), it retries.
    std::optional<absl::Time> latest = ParseClockStamp(v.elements[1].str);
    if (!latest) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
    RaiseFloor(floor, *latest);
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

namespace {

// The steps in one Lua call; one answer per step that ran.
absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> RunSteps(RedisPool* pool,
                                                                 absl::Span<const LedgerStep> steps,
                                                                 std::atomic<int64_t>& floor) {
  StepsCall call(steps.size());
  for (const LedgerStep& step : steps) call.Add(step);
  if (!call.fits()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR",
                     "a ledger step too large for one storage call (2^24 keys or arguments)");
  }
  LS_ASSIGN_OR_RETURN(RedisValue v, pool->Eval(StepsScript(), call.keys(), call.args()));
  if (v.type != RedisValue::Type::kArray || v.elements.empty() || v.elements.size() > steps.size()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  std::vector<absl::StatusOr<StepResult>> out;
  out.reserve(v.elements.size());
  for (size_t i = 0; i < v.elements.size(); ++i) out.push_back(StepReply(steps[i], v.elements[i], floor));
  return out;
}

}  // namespace

absl::StatusOr<StepResult> BillingStore::Apply(const LedgerStep& s) const {
  LS_ASSIGN_OR_RETURN(auto results, RunSteps(pool_, absl::MakeConstSpan(&s, 1), clock_floor_nanos_));
  return std::move(results[0]);
}

absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> BillingStore::ApplyMany(
    const std::vector<LedgerStep>& steps) const {
  return RunSteps(pool_, steps, clock_floor_nanos_);
}

absl::Time BillingStore::ClockFloor() const { return absl::FromUnixNanos(clock_floor_nanos_.load()); }

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
