// The aggregates' migration and rebuild (layout: usage_aggregates.h).
#include "services/usage/usage_aggregates.h"

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

// KEYS: 1 agg, 2 built, 3 iattr, 4 orgs, 5 ad, 6 au, 7 ao, 8 ai, 9 orgsseen,
// 10 unknown, then per instrument: its counters hash, served set and
// aggregate hash of the period and its periods hash ({usage}:agg:ip:<id>). ARGV: 1 period, 2 full (1: every scope),
// 3 SME, 4 START_UP, 5 the gen read before the instruments were listed, then
// the instrument ids. Returns 'CURRENT' (nothing done) when P is already
// exact for gen; 'RETRY' (nothing done) when gen changed since or an
// instrument counted in P is not among the ids (folded after the listing);
// otherwise recomputes the period's aggregates from its counters and sets
// (what the fold would have built with the current attributes), records them
// exact for gen and returns gen.
const RedisScript& RebuildScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + R"lua(
local P, full, SME, STARTUP, GEN = ARGV[1], ARGV[2] == '1', ARGV[3], ARGV[4], ARGV[5]
local NA = 5
for i = 1, 10 do
  if i ~= 5 and not ls_type_is(KEYS[i], 'hash') then return redis.error_reply('WRONGTYPE ' .. KEYS[i]) end
end
if not ls_type_is(KEYS[5], 'hash') then return redis.error_reply('WRONGTYPE ' .. KEYS[5]) end
local n = #ARGV - NA
for j = 1, n do
  local b = 10 + (j - 1) * 4
  if not ls_type_is(KEYS[b + 1], 'hash') or not ls_type_is(KEYS[b + 2], 'set') or
     not ls_type_is(KEYS[b + 3], 'hash') or not ls_type_is(KEYS[b + 4], 'hash') then
    return redis.error_reply('WRONGTYPE usage counters of ' .. ARGV[NA + j])
  end
end
local gen = redis.call('HGET', KEYS[1], 'gen') or '0'
if gen ~= GEN then return 'RETRY' end
if redis.call('HGET', KEYS[2], P) == gen then return 'CURRENT' end
local listed = {}
for j = 1, n do listed[ARGV[NA + j]] = true end
for _, id in ipairs(redis.call('HKEYS', KEYS[8])) do
  if not listed[id] then return 'RETRY' end
end
local KNOWN = {eff = 1, bk = 1, done = 1, miss = 1, late = 1, canc = 1, out = 1, rej = 1, inc = 1, pen = 1,
               sub = 1, ink = 1}
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7], KEYS[8])
local uf, of, sizes, seen = {}, {}, {}, {}
local function add(t, sc, member, fl)
  local key = sc .. '|' .. member
  local e = t[key]
  if e then e[2] = bit.bor(e[2], fl) else t[key] = {sc, fl} end
end
for j = 1, n do
  local id = ARGV[NA + j]
  local b = 10 + (j - 1) * 4
  local kb, ks, kc, kip = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4]
  redis.call('DEL', kc)
  local h = redis.call('HGETALL', kb)
  local mem = redis.call('SMEMBERS', ks)
  if #h > 0 or #mem > 0 then
    redis.call('HSET', KEYS[8], id, '1')
    redis.call('HSET', kip, P, '1')
    local v = redis.call('HGET', KEYS[3], id)
    local at = {'', '', ''}
    if v then
      local o, f, c = string.match(v, '^(.-)\31(.-)\31(.*)$')
      at = {o or '', f or '', c or ''}
    else
      redis.call('HSET', KEYS[10], id, '1')
    end
    for k = 1, #h, 2 do
      local c, m, o = string.match(h[k], '^([^|]*)|([^|]*)|([^|]*)$')
      if c and KNOWN[c] and string.match(m, '^%-?%d+$') and string.match(h[k + 1], '^%-?%d+$') then
        redis.call('HINCRBY', kc, c .. '|' .. m, h[k + 1])
        if c == 'eff' and v and o ~= at[1] then redis.call('HINCRBY', kc, 'ext|' .. m, h[k + 1]) end
      end
    end
    local hasm = {}
    for _, x in ipairs(mem) do
      local m, o, u = string.match(x, '^([^|]*)|([^|]*)|(.*)$')
      if m and string.match(m, '^%-?%d+$') then
        if not hasm[m] then
          hasm[m] = true
          redis.call('HSET', kc, 'has|' .. m, '1')
        end
        local sz = sizes[o]
        if sz == nil then
          sz = redis.call('HGET', KEYS[4], o) or '0'
          sizes[o] = sz
        end
        if not seen[o] then
          seen[o] = true
          redis.call('HSET', KEYS[9], o, '1')
        end
        local ext = o ~= at[1]
        local ufl = 1 + (ext and 2 or 0) + (sz == SME and 4 or 0)
        local ofl = ufl + (sz == STARTUP and 8 or 0)
        local scopes = {'i:' .. id, 'p'}
        if full then scopes = {'i:' .. id, 'p', 'o:' .. at[1], 'f:' .. at[2], 'c:' .. at[3], 'md:' .. m} end
        for _, sc in ipairs(scopes) do
          add(uf, sc, u, ufl)
          add(of, sc, o, ofl)
        end
      end
    end
  end
end
local cnt = {}
local function flush(key, t, names)
  local batch = {}
  for f, e in pairs(t) do
    batch[#batch + 1] = f
    batch[#batch + 1] = e[2]
    if #batch >= 1000 then
      redis.call('HSET', key, unpack(batch))
      batch = {}
    end
    for bi = 1, #names do
      if bit.band(e[2], bit.lshift(1, bi - 1)) ~= 0 then
        local c = e[1] .. '|' .. names[bi]
        cnt[c] = (cnt[c] or 0) + 1
      end
    end
  end
  if #batch > 0 then redis.call('HSET', key, unpack(batch)) end
end
flush(KEYS[6], uf, {'users', 'ext_users', 'sme_users'})
flush(KEYS[7], of, {'orgs', 'ext_orgs', 'sme_orgs', 'startup_orgs'})
local batch = {}
for f, c in pairs(cnt) do
  batch[#batch + 1] = f
  batch[#batch + 1] = c
  if #batch >= 1000 then
    redis.call('HSET', KEYS[5], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('HSET', KEYS[5], unpack(batch)) end
redis.call('HSET', KEYS[2], P, gen)
return gen
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

absl::StatusOr<bool> UsageFigures::RebuildPeriod(const std::string& period) {
  if (period.size() != 5 && period.size() != 7) return absl::InvalidArgumentError("bad period");
  const bool year = period[0] == 'y';
  const std::string suffix = period.substr(1);
  // A fold between the listing and the step (a new instrument in P) or an
  // attribute change (gen) makes the step refuse: listed again, a few times.
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
                                     agg::kAttributes,
                                     "{usage}:orgs",
                                     agg::DistinctKey(period),
                                     agg::UserFlagsKey(period),
                                     agg::OrgFlagsKey(period),
                                     agg::ContributorsKey(period),
                                     agg::kOrgsSeen,
                                     agg::kUnknown};
    std::vector<std::string> args = {period, year ? "1" : "0", std::to_string(static_cast<int>(iv::SME)),
                                     std::to_string(static_cast<int>(iv::START_UP)), gen};
    for (const auto& id : ids) {
      keys.push_back(absl::StrCat("{usage}:", year ? "y:" : "m:", id, ":", suffix));
      keys.push_back(absl::StrCat("{usage}:", year ? "uy:" : "um:", id, ":", suffix));
      keys.push_back(agg::InstrumentKey(id, period));
      keys.push_back(agg::PeriodsKey(id));
      args.push_back(id);
    }
    LS_ASSIGN_OR_RETURN(RedisValue r, pool_->Eval(RebuildScript(), keys, args));
    if (r.str == "CURRENT") return false;
    if (r.str != "RETRY") return true;
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
