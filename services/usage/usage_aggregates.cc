// The aggregates' migration and rebuild (layout: usage_aggregates.h).
#include "services/usage/usage_aggregates.h"

#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "common/error.h"
#include "common/log.h"
#include "common/lua_guards.h"
#include "services/usage/usage_figures.h"

namespace labshare::usage {
namespace {

namespace iv = labshare::inventory::v1;

// A period is rebuilt in place, in bounded steps, under a lease:
//   {usage}:rb:<P>       HASH gen, mark, owner, until (lease expiry, Redis
//                        TIME in microseconds), n, id:<j> (the instruments
//                        listed at the start), idx (the instrument being
//                        rebuilt), ph ("c" its counters next, "s" its served
//                        set), cur (SSCAN cursor, "done" at the end)
//   {usage}:rb:<P>:pend  LIST served-set members an SSCAN returned beyond the
//                        step's budget (processed first by the next step)
// The start step empties the period's aggregates and sets built[P] to the
// mark ("r<gen>:<token>", never equal to gen: reports compute from the
// counters and sets while it is there). From then on every fold adds its
// event to the emptied aggregates as usual, and each chunk step adds what the
// source held so far: an instrument's counters are copied in one step that
// sets (not adds) its aggregate hash from its counters hash (which already
// holds every event folded before), and served-set members are ORed into the
// first-seen markers, which count a bit once however often it is set (a
// member folded during the rebuild and seen again by SSCAN counts once). An
// instrument not listed at the start had no counters then: its folds alone
// are exact. An attribute change (built[P] overwritten) or a gen change
// aborts the rebuild (state deleted; the next check starts again).
//
// KEYS: 1 agg, 2 built, 3 {usage}:instr, 4 ai, 5 ad, 6 au, 7 ao, 8 rb, 9 rb
// pend, then per instrument its aggregate hash of the period. ARGV: 1 period,
// 2 the gen read before listing, 3 owner token, 4 lease in microseconds, then
// the instrument ids. Returns 'CURRENT' (P exact for gen), 'RETRY' (gen
// changed or an instrument known or counted in P is not listed), 'BUSY'
// (another owner's rebuild holds an unexpired lease) or 'STARTED' (a rebuild
// exists: this one, or an expired one this owner may continue).
const RedisScript& RebuildStartScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + R"lua(
local P, GEN, OWNER, LEASE = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local NA = 4
for _, i in ipairs({1, 2, 3, 4, 5, 6, 7, 8}) do
  if not ls_type_is(KEYS[i], 'hash') then return redis.error_reply('WRONGTYPE ' .. KEYS[i]) end
end
if not ls_type_is(KEYS[9], 'list') then return redis.error_reply('WRONGTYPE ' .. KEYS[9]) end
local gen = redis.call('HGET', KEYS[1], 'gen') or '0'
if gen ~= GEN then return 'RETRY' end
if redis.call('HGET', KEYS[2], P) == gen then return 'CURRENT' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local st = redis.call('HMGET', KEYS[8], 'gen', 'owner', 'until', 'mark')
if st[1] then
  if st[1] == gen and redis.call('HGET', KEYS[2], P) == st[4] then
    if st[2] ~= OWNER and tonumber(st[3]) > now then return 'BUSY' end
    return 'STARTED'
  end
  redis.call('DEL', KEYS[8], KEYS[9])
end
local listed = {}
local n = #ARGV - NA
for j = 1, n do listed[ARGV[NA + j]] = true end
for _, k in ipairs({3, 4}) do
  for _, id in ipairs(redis.call('HKEYS', KEYS[k])) do
    if not listed[id] then return 'RETRY' end
  end
end
for j = 1, n do
  if not ls_type_is(KEYS[9 + j], 'hash') then return redis.error_reply('WRONGTYPE ' .. KEYS[9 + j]) end
end
redis.call('UNLINK', KEYS[4], KEYS[5], KEYS[6], KEYS[7])
for j = 1, n do redis.call('UNLINK', KEYS[9 + j]) end
local mark = 'r' .. gen .. ':' .. OWNER
local f = {'gen', gen, 'mark', mark, 'owner', OWNER, 'until', string.format('%d', now + LEASE), 'n', n,
           'idx', 1, 'ph', 'c', 'cur', '0'}
for j = 1, n do
  f[#f + 1] = 'id:' .. j
  f[#f + 1] = ARGV[NA + j]
end
redis.call('HSET', KEYS[8], unpack(f))
redis.call('HSET', KEYS[2], P, mark)
return 'STARTED'
)lua");
  return *s;
}

// KEYS: 1 agg, 2 built, 3 iattr, 4 orgs, 5 ad, 6 au, 7 ao, 8 ai, 9 orgsseen,
// 10 unknown, 11 rb, 12 rb pend, then per instrument from the step's first
// (idx): its counters hash, served set, aggregate hash of the period and its
// periods hash. ARGV: 1 period, 2 full (1: every scope), 3 SME, 4 START_UP,
// 5 owner, 6 lease in microseconds, 7 budget (source entries: served-set
// members and counter fields), 8 idx the keys start at, then the instrument
// ids. Returns {status, entries processed}: 'DONE' (P recorded exact for
// gen), 'MORE', 'BUSY' (another owner's lease), 'GONE' (no rebuild: finished
// or aborted), 'MOVED' (idx is not the rebuild's), 'ABORTED' (gen or
// built[P] changed: state deleted). A step processes at most budget entries,
// except that one instrument's counters hash is copied whole (as the first
// thing of a step when it alone exceeds the budget).
const RedisScript& RebuildChunkScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + R"lua(
local P, full, SME, STARTUP, OWNER = ARGV[1], ARGV[2] == '1', ARGV[3], ARGV[4], ARGV[5]
local LEASE, BUDGET, IDX0 = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local NA = 8
for i = 1, 11 do
  if not ls_type_is(KEYS[i], 'hash') then return redis.error_reply('WRONGTYPE ' .. KEYS[i]) end
end
if not ls_type_is(KEYS[12], 'list') then return redis.error_reply('WRONGTYPE ' .. KEYS[12]) end
local st = redis.call('HMGET', KEYS[11], 'gen', 'mark', 'owner', 'until', 'n', 'idx', 'ph', 'cur')
if not st[1] then return {'GONE', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if st[3] ~= OWNER and tonumber(st[4]) > now then return {'BUSY', 0} end
local gen = redis.call('HGET', KEYS[1], 'gen') or '0'
if gen ~= st[1] or redis.call('HGET', KEYS[2], P) ~= st[2] then
  redis.call('DEL', KEYS[11], KEYS[12])
  return {'ABORTED', 0}
end
local n, idx, ph, cur = tonumber(st[5]), tonumber(st[6]), st[7], st[8]
if idx ~= IDX0 then return {'MOVED', 0} end
local m = #ARGV - NA
-- The ids were read outside this step: a rebuild restarted meanwhile (by
-- another owner, with another list) may have the same idx.
for j = 1, m do
  if redis.call('HGET', KEYS[11], 'id:' .. (IDX0 + j - 1)) ~= ARGV[NA + j] then return {'MOVED', 0} end
end
for j = 1, m do
  local b = 12 + (j - 1) * 4
  if not ls_type_is(KEYS[b + 1], 'hash') or not ls_type_is(KEYS[b + 2], 'set') or
     not ls_type_is(KEYS[b + 3], 'hash') or not ls_type_is(KEYS[b + 4], 'hash') then
    return redis.error_reply('WRONGTYPE usage counters of ' .. ARGV[NA + j])
  end
end
local KNOWN = {eff = 1, bk = 1, done = 1, miss = 1, late = 1, canc = 1, out = 1, rej = 1, inc = 1, pen = 1,
               sub = 1, ink = 1}
local used = 0
local sizes, seen, uf, of = {}, {}, {}, {}
local function add(tb, sc, member, fl)
  local key = sc .. '|' .. member
  local e = tb[key]
  if e then e[2] = bit.bor(e[2], fl) else tb[key] = {sc, fl} end
end
local attrc = {}
local function attrs(id)
  local a = attrc[id]
  if a == nil then
    local v = redis.call('HGET', KEYS[3], id)
    a = false
    if v then
      local o, f, c = string.match(v, '^(.-)\31(.-)\31(.*)$')
      a = {o or '', f or '', c or ''}
    end
    attrc[id] = a
  end
  return a
end
local function register(id, kip)
  redis.call('HSET', KEYS[8], id, '1')
  redis.call('HSET', kip, P, '1')
  if not attrs(id) then redis.call('HSET', KEYS[10], id, '1') end
end
local function member(id, kc, kip, x)
  local md, o, u = string.match(x, '^([^|]*)|([^|]*)|(.*)$')
  if not (md and string.match(md, '^%-?%d+$')) then return end
  register(id, kip)
  redis.call('HSET', kc, 'has|' .. md, '1')
  local at = attrs(id) or {'', '', ''}
  -- The size class at the time of use, recorded in the member ("...|<size>");
  -- members folded before it was recorded: the size class now.
  local user, sz = string.match(u, '^(.*)|(%-?%d+)$')
  if user then
    u = user
  else
    sz = sizes[o]
    if sz == nil then
      -- "<class>" or "<class>|<history>" (OrgSizeClassOn): the class now.
      sz = string.match(redis.call('HGET', KEYS[4], o) or '0', '^[^|]*')
      sizes[o] = sz
    end
  end
  if not seen[o] then
    seen[o] = true
    redis.call('HSET', KEYS[9], o, '1')
  end
  local ext = o ~= at[1]
  local ufl = 1 + (ext and 2 or 0) + (sz == SME and 4 or 0)
  local ofl = ufl + (sz == STARTUP and 8 or 0)
  local scopes = {'i:' .. id, 'p'}
  if full then scopes = {'i:' .. id, 'p', 'o:' .. at[1], 'f:' .. at[2], 'c:' .. at[3], 'md:' .. md} end
  for _, sc in ipairs(scopes) do
    add(uf, sc, u, ufl)
    add(of, sc, o, ofl)
  end
end
local j = idx - IDX0 + 1
while idx <= n and j <= m and used < BUDGET do
  local id = ARGV[NA + j]
  local b = 12 + (j - 1) * 4
  local kb, ks, kc, kip = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4]
  if ph == 'c' then
    local len = redis.call('HLEN', kb)
    if used > 0 and used + len > BUDGET then break end
    -- Set, not added: the counters hold every event folded so far, and the
    -- folds from now on add to this hash.
    redis.call('DEL', kc)
    local h = redis.call('HGETALL', kb)
    if #h > 0 then register(id, kip) end
    local at = attrs(id)
    for k = 1, #h, 2 do
      local c, md, o = string.match(h[k], '^([^|]*)|([^|]*)|([^|]*)$')
      if c and (KNOWN[c] or string.match(c, '^oc%.%u%u%u$')) and string.match(md, '^%-?%d+$') and
         string.match(h[k + 1], '^%-?%d+$') then
        redis.call('HINCRBY', kc, c .. '|' .. md, h[k + 1])
        if c == 'eff' and at and o ~= at[1] then redis.call('HINCRBY', kc, 'ext|' .. md, h[k + 1]) end
      end
    end
    used = used + len
    ph, cur = 's', '0'
  else
    local left = BUDGET - used
    local pend = redis.call('LPOP', KEYS[12], left) or {}
    for _, x in ipairs(pend) do member(id, kc, kip, x) end
    used = used + #pend
    left = BUDGET - used
    if left > 0 and cur ~= 'done' then
      local r = redis.call('SSCAN', ks, cur, 'COUNT', left)
      cur = r[1] == '0' and 'done' or r[1]
      local rest = {}
      for _, x in ipairs(r[2]) do
        if left > 0 then
          member(id, kc, kip, x)
          used = used + 1
          left = left - 1
        else
          rest[#rest + 1] = x
        end
      end
      for q = 1, #rest, 1000 do
        redis.call('RPUSH', KEYS[12], unpack(rest, q, math.min(#rest, q + 999)))
      end
    end
    if cur == 'done' and redis.call('LLEN', KEYS[12]) == 0 then
      idx, j, ph, cur = idx + 1, j + 1, 'c', '0'
    end
  end
end
-- The markers: a bit set for the first time adds 1 to its count (a fold may
-- have set it already).
local function flush(key, tb, names)
  local fields, order = {}, {}
  for f, e in pairs(tb) do
    fields[#fields + 1] = f
    order[#order + 1] = e
  end
  local cnt = {}
  for q = 1, #fields, 1000 do
    local part = {unpack(fields, q, math.min(#fields, q + 999))}
    local old = redis.call('HMGET', key, unpack(part))
    local w = {}
    for i, f in ipairs(part) do
      local e = order[q + i - 1]
      local o = tonumber(old[i] or '0') or 0
      local nw = bit.bor(o, e[2])
      if nw ~= o then
        w[#w + 1] = f
        w[#w + 1] = nw
        for bi = 1, #names do
          local bv = bit.lshift(1, bi - 1)
          if bit.band(nw, bv) ~= 0 and bit.band(o, bv) == 0 then
            local c = e[1] .. '|' .. names[bi]
            cnt[c] = (cnt[c] or 0) + 1
          end
        end
      end
    end
    if #w > 0 then redis.call('HSET', key, unpack(w)) end
  end
  for c, v in pairs(cnt) do redis.call('HINCRBY', KEYS[5], c, v) end
end
flush(KEYS[6], uf, {'users', 'ext_users', 'sme_users'})
flush(KEYS[7], of, {'orgs', 'ext_orgs', 'sme_orgs', 'startup_orgs'})
if idx > n then
  redis.call('HSET', KEYS[2], P, gen)
  redis.call('DEL', KEYS[11], KEYS[12])
  return {'DONE', used}
end
redis.call('HSET', KEYS[11], 'owner', OWNER, 'until', string.format('%d', now + LEASE), 'idx', idx, 'ph', ph,
           'cur', cur)
return {'MORE', used}
)lua");
  return *s;
}

// KEYS: 1 a hash. ARGV: field, value pairs, each set only where absent.
const RedisScript& SetAbsentScript() {
  static const RedisScript* s = new RedisScript(R"lua(
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
)lua");
  return *s;
}

absl::Status SetAbsent(RedisPool* pool, const std::string& key, const std::vector<std::string>& pairs) {
  for (size_t i = 0; i < pairs.size(); i += 1000) {
    std::vector<std::string> args(pairs.begin() + static_cast<std::ptrdiff_t>(i),
                                  pairs.begin() + static_cast<std::ptrdiff_t>(std::min(pairs.size(), i + 1000)));
    LS_RETURN_IF_ERROR(pool->Eval(SetAbsentScript(), {key}, args).status());
  }
  return absl::OkStatus();
}

}  // namespace

std::string UsageFigures::NewRebuildOwner() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x", rd(), rd());
}

absl::StatusOr<bool> UsageFigures::RebuildPeriod(const std::string& period) {
  if (period.size() != 5 && period.size() != 7) return absl::InvalidArgumentError("bad period");
  const bool year = period[0] == 'y';
  const std::string suffix = period.substr(1);
  const std::string rb = absl::StrCat("{usage}:rb:", period);
  const std::string pend = absl::StrCat(rb, ":pend");
  const std::string lease_us = std::to_string(rebuild_lease_us_);
  // A fold between the listing and the start (a new instrument in P), an
  // attribute or gen change, or a step that found the state moved on makes
  // the step refuse: read again, a few times.
  for (int attempt = 0; attempt < 5; ++attempt) {
    LS_ASSIGN_OR_RETURN(auto ids_reply, pool_->Pipeline({{"HGET", agg::kState, "gen"},
                                                         {"HKEYS", "{usage}:instr"},
                                                         {"HKEYS", agg::ContributorsKey(period)}}));
    const std::string gen = ids_reply[0].is_nil() ? "0" : ids_reply[0].str;
    std::set<std::string> ids;
    for (size_t r = 1; r < ids_reply.size(); ++r) {
      for (const auto& e : ids_reply[r].elements) ids.insert(e.str);
    }
    if (rebuild_listed_hook_) rebuild_listed_hook_();
    std::vector<std::string> keys = {agg::kState,
                                     agg::kBuilt,
                                     "{usage}:instr",
                                     agg::ContributorsKey(period),
                                     agg::DistinctKey(period),
                                     agg::UserFlagsKey(period),
                                     agg::OrgFlagsKey(period),
                                     rb,
                                     pend};
    std::vector<std::string> args = {period, gen, rebuild_owner_, lease_us};
    for (const auto& id : ids) {
      keys.push_back(agg::InstrumentKey(id, period));
      args.push_back(id);
    }
    if (rebuild_keys_hook_) rebuild_keys_hook_(keys);
    LS_ASSIGN_OR_RETURN(RedisValue r, pool_->Eval(RebuildStartScript(), keys, args));
    if (r.str == "CURRENT" || r.str == "BUSY") return false;
    if (r.str != "STARTED") continue;
    // The chunks, each continuing where the state in Redis says.
    bool restart = false;
    while (!restart) {
      LS_ASSIGN_OR_RETURN(auto st, pool_->Command({"HMGET", rb, "n", "idx"}));
      if (st.elements.size() != 2 || st.elements[0].is_nil() || st.elements[1].is_nil()) {
        restart = true;
        break;
      }
      int64_t n = 0, idx = 0;
      if (!absl::SimpleAtoi(st.elements[0].str, &n) || !absl::SimpleAtoi(st.elements[1].str, &idx)) {
        return absl::InternalError(absl::StrCat("bad rebuild state of ", period));
      }
      std::vector<std::string> fields = {"HMGET", rb};
      for (int64_t j = idx; j <= n && j < idx + 64; ++j) fields.push_back(absl::StrCat("id:", j));
      std::vector<std::string> step_ids;
      if (fields.size() > 2) {
        LS_ASSIGN_OR_RETURN(auto got, pool_->Command(fields));
        for (const auto& e : got.elements) {
          if (e.is_nil()) break;
          step_ids.push_back(e.str);
        }
      }
      std::vector<std::string> ck = {agg::kState,
                                     agg::kBuilt,
                                     agg::kAttributes,
                                     "{usage}:orgs",
                                     agg::DistinctKey(period),
                                     agg::UserFlagsKey(period),
                                     agg::OrgFlagsKey(period),
                                     agg::ContributorsKey(period),
                                     agg::kOrgsSeen,
                                     agg::kUnknown,
                                     rb,
                                     pend};
      std::vector<std::string> ca = {period,
                                     year ? "1" : "0",
                                     std::to_string(static_cast<int>(iv::SME)),
                                     std::to_string(static_cast<int>(iv::START_UP)),
                                     rebuild_owner_,
                                     lease_us,
                                     std::to_string(std::max(1, rebuild_chunk_)),
                                     std::to_string(idx)};
      for (const auto& id : step_ids) {
        ck.push_back(absl::StrCat("{usage}:", year ? "y:" : "m:", id, ":", suffix));
        ck.push_back(absl::StrCat("{usage}:", year ? "uy:" : "um:", id, ":", suffix));
        ck.push_back(agg::InstrumentKey(id, period));
        ck.push_back(agg::PeriodsKey(id));
        ca.push_back(id);
      }
      if (rebuild_keys_hook_) rebuild_keys_hook_(ck);
      LS_ASSIGN_OR_RETURN(RedisValue cr, pool_->Eval(RebuildChunkScript(), ck, ca));
      if (cr.elements.size() != 2) return absl::InternalError("bad rebuild step reply");
      const std::string& status = cr.elements[0].str;
      if (rebuild_chunk_hook_ && !rebuild_chunk_hook_(status, cr.elements[1].integer)) {
        return absl::AbortedError("rebuild stopped by the test hook");
      }
      if (status == "DONE") return true;
      if (status == "BUSY") return false;
      if (status == "GONE" || status == "ABORTED") restart = true;
      // MORE, MOVED: the next step reads the state again.
    }
  }
  // Left stale (reports compute from the counters): the next check rebuilds it.
  LogInfo("usage aggregates: period changing during its rebuild, left for the next check", {{"period", period}});
  return false;
}

absl::StatusOr<int> UsageFigures::RebuildStaleAggregates() {
  LS_ASSIGN_OR_RETURN(auto v, pool_->Pipeline({{"HGET", agg::kState, "gen"}, {"HGETALL", agg::kBuilt}}));
  const std::string gen = v[0].is_nil() ? "0" : v[0].str;
  int rebuilt = 0;
  for (size_t i = 0; i + 1 < v[1].elements.size(); i += 2) {
    if (v[1].elements[i + 1].str == gen) continue;
    LS_ASSIGN_OR_RETURN(const bool done, RebuildPeriod(v[1].elements[i].str));
    if (done) ++rebuilt;
  }
  return rebuilt;
}

absl::Status UsageFigures::MigrateAggregates() {
  LS_ASSIGN_OR_RETURN(RedisValue layout, pool_->Command({"HGET", agg::kState, "layout"}));
  if (layout.is_nil() || layout.str != "2") {
    // The attributes of the instruments known so far.
    LS_ASSIGN_OR_RETURN(RedisValue all, pool_->Command({"HGETALL", "{usage}:instr"}));
    std::vector<std::string> pairs;
    for (size_t i = 0; i + 1 < all.elements.size(); i += 2) {
      iv::Instrument in;
      if (!in.ParseFromString(all.elements[i + 1].str)) continue;
      pairs.push_back(all.elements[i].str);
      pairs.push_back(agg::Attributes(in));
    }
    LS_RETURN_IF_ERROR(SetAbsent(pool_, agg::kAttributes, pairs));
    // Every period with counters of the old layout, to be built: the year
    // hashes of each known instrument probed from 1970 to five years ahead
    // (no SCAN: the usage user may not list other services' keys), then the
    // months of the years found.
    std::set<std::string> periods;
    const int last = static_cast<int>(absl::ToCivilYear(clock_->Now(), zone_).year()) + 5;
    std::vector<std::string> ids;
    for (size_t i = 0; i < pairs.size(); i += 2) ids.push_back(pairs[i]);
    std::vector<std::vector<std::string>> probes;
    for (const auto& id : ids) {
      for (int y = 1970; y <= last; ++y) {
        probes.push_back({"EXISTS", absl::StrFormat("{usage}:y:%s:%04d", id, y)});
      }
    }
    std::vector<std::pair<std::string, int>> years;  // (id, year) with data
    for (size_t i = 0; i < probes.size(); i += 2000) {
      std::vector<std::vector<std::string>> chunk(
          probes.begin() + static_cast<std::ptrdiff_t>(i),
          probes.begin() + static_cast<std::ptrdiff_t>(std::min(probes.size(), i + 2000)));
      LS_ASSIGN_OR_RETURN(auto found, pool_->Pipeline(chunk));
      for (size_t j = 0; j < found.size(); ++j) {
        if (found[j].integer == 0) continue;
        const size_t k = i + j;
        const int year = 1970 + static_cast<int>(k % static_cast<size_t>(last - 1969));
        years.emplace_back(ids[k / static_cast<size_t>(last - 1969)], year);
        periods.insert(absl::StrFormat("y%04d", year));
      }
    }
    std::vector<std::vector<std::string>> month_probes;
    for (const auto& [id, y] : years) {
      for (int m = 1; m <= 12; ++m) {
        month_probes.push_back({"EXISTS", absl::StrFormat("{usage}:m:%s:%04d%02d", id, y, m)});
      }
    }
    for (size_t i = 0; i < month_probes.size(); i += 2000) {
      std::vector<std::vector<std::string>> chunk(
          month_probes.begin() + static_cast<std::ptrdiff_t>(i),
          month_probes.begin() + static_cast<std::ptrdiff_t>(std::min(month_probes.size(), i + 2000)));
      LS_ASSIGN_OR_RETURN(auto found, pool_->Pipeline(chunk));
      for (size_t j = 0; j < found.size(); ++j) {
        if (found[j].integer != 0) periods.insert("m" + chunk[j][1].substr(chunk[j][1].rfind(':') + 1));
      }
    }
    std::vector<std::string> built;
    for (const auto& p : periods) {
      built.push_back(p);
      built.push_back("-1");
    }
    LS_RETURN_IF_ERROR(SetAbsent(pool_, agg::kBuilt, built));
    LS_RETURN_IF_ERROR(pool_->Command({"HSET", agg::kState, "layout", "2"}).status());
    LogInfo("usage aggregates: data of the old layout registered",
            {{"periods", std::to_string(periods.size())}, {"instruments", std::to_string(pairs.size() / 2)}});
  }
  // The periods of each instrument ({usage}:agg:ip:<id>) from the
  // instruments counted in each period, once: then an attribute change
  // invalidates only those periods (before, every period: gen + 1).
  LS_ASSIGN_OR_RETURN(RedisValue indexed, pool_->Command({"HGET", agg::kState, "ipindex"}));
  if (indexed.is_nil() || indexed.str != "1") {
    LS_ASSIGN_OR_RETURN(RedisValue periods, pool_->Command({"HKEYS", agg::kBuilt}));
    std::vector<std::vector<std::string>> cmds;
    for (const auto& p : periods.elements) cmds.push_back({"HKEYS", agg::ContributorsKey(p.str)});
    if (!cmds.empty()) {
      LS_ASSIGN_OR_RETURN(auto ids, pool_->Pipeline(cmds));
      std::vector<std::vector<std::string>> sets;
      for (size_t i = 0; i < ids.size(); ++i) {
        for (const auto& id : ids[i].elements) {
          sets.push_back({"HSET", agg::PeriodsKey(id.str), periods.elements[i].str, "1"});
        }
      }
      for (size_t i = 0; i < sets.size(); i += 2000) {
        std::vector<std::vector<std::string>> chunk(
            sets.begin() + static_cast<std::ptrdiff_t>(i),
            sets.begin() + static_cast<std::ptrdiff_t>(std::min(sets.size(), i + 2000)));
        LS_RETURN_IF_ERROR(pool_->Pipeline(chunk).status());
      }
    }
    LS_RETURN_IF_ERROR(pool_->Command({"HSET", agg::kState, "ipindex", "1"}).status());
  }
  LS_ASSIGN_OR_RETURN(int rebuilt, RebuildStaleAggregates());
  if (rebuilt > 0) LogInfo("usage aggregates rebuilt", {{"periods", std::to_string(rebuilt)}});
  return absl::OkStatus();
}

}  // namespace labshare::usage
