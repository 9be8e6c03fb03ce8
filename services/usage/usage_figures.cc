#include "services/usage/usage_figures.h"
#include "services/usage/usage_internal.h"
#include "services/usage/usage_aggregates.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "common/error.h"
#include "common/log.h"
#include "common/lua_guards.h"
#include "common/resource_name.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace iv = labshare::inventory::v1;
using labshare::type::v1::SharingMode;

std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }

// The user organisation of a booking's use records, bookings and outcomes
// (usage.proto "Use record"): ON_SITE the user's organisation, which booking
// records on the booking when it is created (Booking.user_organization; a
// user's organisation is fixed, so it is also the one at the time of use).
// Bookings created before booking recorded it carry none and count for their
// payer, as they always did (every event of one booking carries the same
// stored booking, so a booking never moves between organisations half-way).
// JOINT_RESEARCH: the participant that booked, which is the payer
// (Booking.payer_organization); LEASE the lessee and TECHNICAL_SERVICE the
// client, the payer too. Read off the event itself: no dependency on when
// inventory's user facts are folded.
const std::string& UserOrganization(const bk::Booking& b) {
  return b.mode() == labshare::type::v1::ON_SITE && !b.user_organization().empty() ? b.user_organization()
                                                                                    : b.payer_organization();
}

// A field of a hash, as PreparedFold::reads names it.
std::string Dependency(absl::string_view key, absl::string_view field) { return absl::StrCat(key, "\n", field); }

constexpr char kOpenSessions[] = "{usage}:open";
constexpr char kClosedSessions[] = "{usage}:closed";
constexpr char kOrdersConfirmed[] = "{usage}:tsorder";
// Service orders counted once in outage_cancelled_bookings (keyed like
// kOrdersConfirmed: by order name).
constexpr char kOrdersOutageCancelled[] = "{usage}:tsout";
const std::string kVersionsPrefix = "{usage}:ih:";
constexpr char kVersionsWrittenBy[] = "{usage}:ihv";

// ISO 4217 shape: three capital letters (the only currency codes that become
// part of a counter name).
bool IsCurrencyCode(absl::string_view c) {
  return c.size() == 3 && std::all_of(c.begin(), c.end(), [](char x) { return x >= 'A' && x <= 'Z'; });
}
// The counter of service income in another currency, and back.
std::string OtherCurrencyCounter(absl::string_view code) { return absl::StrCat("oc.", code); }
bool OtherCurrencyOf(absl::string_view counter, std::string* code) {
  if (counter.size() != 6 || counter.substr(0, 3) != "oc." || !IsCurrencyCode(counter.substr(3))) return false;
  *code = std::string(counter.substr(3));
  return true;
}

}  // namespace

// {usage}:orgs holds per organisation "<class>" (folded before usage kept
// the history) or "<class>|<ms>:<class>,...": the current class and its
// changes by effective time (Organization.update_time, else create_time,
// else the event time) ascending. The class in force before `before_ms`:
// the last change before it, else the first recorded (the organisation's
// class before it was first seen), else the class alone. FoldScript's
// class_on does the same in Lua.
std::string OrgSizeClassOn(absl::string_view v, int64_t before_ms) {
  const size_t bar = v.find('|');
  if (bar == absl::string_view::npos) return std::string(v);
  std::string first, last;
  for (absl::string_view e : absl::StrSplit(v.substr(bar + 1), ',', absl::SkipEmpty())) {
    const size_t colon = e.find(':');
    int64_t ms = 0;
    if (colon == absl::string_view::npos || !absl::SimpleAtoi(e.substr(0, colon), &ms)) continue;
    if (first.empty()) first = std::string(e.substr(colon + 1));
    if (ms < before_ms) last = std::string(e.substr(colon + 1));
  }
  return !last.empty() ? last : !first.empty() ? first : std::string(v.substr(0, bar));
}

namespace {

// One Lua step folds a batch of events, each exactly once and each atomic on
// its own (usage_aggregates.h describes the aggregate keys). Every key the
// step touches is declared in KEYS, computed by the caller (Redis Cluster;
// all under the hash tag {usage}, one slot).
// KEYS: 1 applied, 2 {usage}:agg, 3 {usage}:agg:built, 4 {usage}:iattr,
// 5 {usage}:orgs, 6 {usage}:agg:orgsseen, 7 {usage}:agg:unknown, then the op keys.
// ARGV: 1 SME, 2 START_UP (size class numbers), 3 events, then per event:
// marker, number of op arguments, then per op its code, the KEYS indexes of
// its keys and its arguments (numbers of each by code, table AR):
//   sadd k | m       member m
//   hset k | f v / hdel k | f
//   cnt d m y am ay aim aiy ip | id pm py counter mode org delta
//                    "<counter>|<mode>|<org>" += delta in the day, month and
//                    year hashes (d, m, y); "<counter>|<mode>" += delta in
//                    the instrument's month and year aggregates (am, ay:
//                    {usage}:a:<id>:<pm|py>), and "ext|<mode>" for eff of an
//                    organisation other than the owner; the instrument
//                    counted in both periods (aim, aiy: {usage}:ai:<P>; ip:
//                    {usage}:agg:ip:<id>; registered when new)
//   srv ud um uy aum aom adm auy aoy ady | id mode org user before
//                    "<mode>|<org>|<user>|<size>" into the day, month and
//                    year sets, <size> the organisation's size class on the
//                    day (in force before `before`, the day's end in ms: see
//                    OrgSizeClassOn);
//                    the first-seen markers of user and organisation in the
//                    month (instrument, platform) and the year (also owner,
//                    facility, category, mode), counting each once
//   inst ip | id attrs   the instrument's owner/facility/category (a change
//                    invalidates the aggregates of the periods it was
//                    counted in, ip = {usage}:agg:ip:<id>)
//   orgsz | org size ms  the organisation's size class from `ms` on, merged
//                    into its history in {usage}:orgs (OrgSizeClassOn); a
//                    change of an organisation already counted invalidates
//                    the aggregates
//   open k c | f v   HSET k f v unless c holds f (a session whose check-out or
//                    cancellation was folded first stays closed)
//   close k c | f v  HDEL k f and HSET c f v (the closed marker)
//   once k | f v     the event changes nothing but its marker when k holds f
//                    already (checked before its first write); else HSET k f v
//   first k | f      the next op applies only if field f is not in hash k
//                    yet, and f is set (counted at most once per f)
//   unless k | f     the next op applies only if field f is not in hash k
//   newer k | ms     the next op applies only if no field of hash k (a
//                    version history, fields Unix ms) is a time after ms, as
//                    k stood before the event
// Per event: 1 folded, 0 folded before, 'E<error>' (nothing written).
const RedisScript& FoldScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + R"lua(
local SME, STARTUP = ARGV[1], ARGV[2]
local nev = tonumber(ARGV[3])
local AR = {sadd = {1, 1}, hset = {1, 2}, hdel = {1, 1}, cnt = {8, 7}, srv = {9, 5}, inst = {1, 2}, orgsz = {0, 3},
            open = {2, 2}, close = {2, 2}, once = {1, 2}, first = {1, 1}, newer = {1, 1},
            unless = {1, 1}}
local function K(i) return KEYS[tonumber(ARGV[i])] end
for i = 1, 7 do
  if not ls_type_is(KEYS[i], 'hash') then return redis.error_reply('WRONGTYPE ' .. KEYS[i]) end
end
local layout = redis.call('HGET', KEYS[2], 'layout')
-- Caches of the step: attributes, size classes, key types, counter values
-- and marker flags as the events before left them.
local attrc, sizec, kind, val, flagc, regd, seenc = {}, {}, {}, {}, {}, {}, {}
local function attrs(id)
  local a = attrc[id]
  if a == nil then
    local v = redis.call('HGET', KEYS[4], id)
    a = false
    if v then
      local o, f, c = string.match(v, '^(.-)\31(.-)\31(.*)$')
      a = {o or '', f or '', c or ''}
    end
    attrc[id] = a
  end
  return a
end
local function size(org)
  local v = sizec[org]
  if v == nil then
    v = redis.call('HGET', KEYS[5], org) or '0'
    sizec[org] = v
  end
  return v
end
-- {usage}:orgs values (OrgSizeClassOn): "<class>" or
-- "<class>|<ms>:<class>,..." (changes by effective time ascending). The
-- class in force before `before`: the last change before it, else the
-- first recorded, else the class alone.
local function class_on(v, before)
  local cur, hist = string.match(v, '^([^|]*)|(.*)$')
  if not cur then return v end
  local first, last
  for ms, c in string.gmatch(hist, '(%-?%d+):(%-?%d+)') do
    if first == nil then first = c end
    if tonumber(ms) < before then last = c end
  end
  return last or first or cur
end
-- v with class c from ms on (same ms: replaced; a change to the class
-- already in force dropped). A value without history keeps its class for
-- the time before (from the earliest time).
local function merge(v, c, ms, org)
  local cur, hist = string.match(v, '^([^|]*)|(.*)$')
  local list = {}
  if cur then
    for m, x in string.gmatch(hist, '(%-?%d+):(%-?%d+)') do list[#list + 1] = {tonumber(m), x} end
  elseif redis.call('HEXISTS', KEYS[5], org) == 1 then
    list[1] = {-62135596800000, v}
  end
  local t = tonumber(ms)
  local out, placed = {}, false
  for _, e in ipairs(list) do
    if not placed and t <= e[1] then
      out[#out + 1] = {t, c}
      placed = true
      if t == e[1] then e = nil end
    end
    if e then out[#out + 1] = e end
  end
  if not placed then out[#out + 1] = {t, c} end
  local parts, prev = {}, nil
  for _, e in ipairs(out) do
    if e[2] ~= prev then parts[#parts + 1] = string.format('%d:%s', e[1], e[2]) end
    prev = e[2]
  end
  return prev .. '|' .. table.concat(parts, ',')
end
local function typed(key, want)
  local k = kind[key]
  if k == nil then
    if not ls_type_is(key, want) then return 'WRONGTYPE ' .. key end
    kind[key] = want
  elseif k ~= want then
    return 'WRONGTYPE ' .. key
  end
  return nil
end
-- ls_add, directly when both are integers of at most 15 digits (exact as
-- doubles; the same strings ls_add accepts).
local function int15(x)
  return x == nil or x == false or (#x <= 15 and (x == '0' or string.find(x, '^%-?[1-9]%d*$') ~= nil))
end
local function add(a, b)
  if int15(a) and int15(b) then return string.format('%d', tonumber(a or '0') + tonumber(b)) end
  return ls_add(a, b)
end
local UN = {'users', 'ext_users', 'sme_users'}
local ON = {'orgs', 'ext_orgs', 'sme_orgs', 'startup_orgs'}
local function reg(P, id, kai, kip)
  local rk = kai .. '\n' .. id
  if not regd[rk] then
    regd[rk] = true
    redis.call('HSET', kai, id, '1')
    redis.call('HSET', kip, P, '1')
  end
  if not regd[P] then
    regd[P] = true
    if redis.call('HEXISTS', KEYS[3], P) == 0 then
      local v = '-1'
      if layout == '2' then v = redis.call('HGET', KEYS[2], 'gen') or '0' end
      redis.call('HSET', KEYS[3], P, v)
    end
  end
end
local out = {}
local p = 4
for e = 1, nev do
  local marker, nargs = ARGV[p], tonumber(ARGV[p + 1])
  local s, fin = p + 2, p + 2 + nargs
  p = fin
  if redis.call('HEXISTS', KEYS[1], marker) == 1 then
    out[e] = '0'
  else
    -- Every op is proven to succeed before the event's first write (Redis
    -- does not roll back): keys of the right type, counters that stay exact
    -- (each counter read once, by one HMGET per hash, which doubles as its
    -- type check; written by one HSET per hash).
    local err, q, done = nil, s, false
    local incs, order = {}, {}
    local skip = {}  -- ops (by position) a 'first' op found counted before
    local function plan(key, f, d)
      local x = incs[key]
      if not x then
        x = {f = {}, d = {}}
        incs[key] = x
        order[#order + 1] = key
      end
      local ds = x.d[f]
      if not ds then
        ds = {}
        x.d[f] = ds
        x.f[#x.f + 1] = f
      end
      ds[#ds + 1] = d
    end
    while q < fin and not err do
      local code = ARGV[q]
      local ar = AR[code]
      if not ar then err = 'ERR unknown op' break end
      local a = q + 1 + ar[1]
      if code == 'first' then
        err = typed(K(q + 1), 'hash')
        if not err and redis.call('HEXISTS', K(q + 1), ARGV[a]) == 1 then skip[a + ar[2]] = true end
      elseif code == 'unless' then
        err = typed(K(q + 1), 'hash')
        if not err and redis.call('HEXISTS', K(q + 1), ARGV[a]) == 1 then skip[a + ar[2]] = true end
      elseif code == 'newer' then
        err = typed(K(q + 1), 'hash')
        if not err then
          local t = tonumber(ARGV[a])
          for _, f in ipairs(redis.call('HKEYS', K(q + 1))) do
            local ft = tonumber(f)
            if ft and ft > t then
              skip[a + ar[2]] = true
              break
            end
          end
        end
      elseif skip[q] then
        -- counted before (first)
      elseif code == 'cnt' then
        local id, c, mode, org, delta = ARGV[a], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
        local field, cf = c .. '|' .. mode .. '|' .. org, c .. '|' .. mode
        local kam, kay = K(q + 4), K(q + 5)
        plan(K(q + 1), field, delta)
        plan(K(q + 2), field, delta)
        plan(K(q + 3), field, delta)
        plan(kam, cf, delta)
        plan(kay, cf, delta)
        if c == 'eff' then
          local at = attrs(id)
          if at and at[1] ~= org then
            plan(kam, 'ext|' .. mode, delta)
            plan(kay, 'ext|' .. mode, delta)
          end
        end
        err = typed(K(q + 6), 'hash') or typed(K(q + 7), 'hash') or typed(K(q + 8), 'hash')
      elseif code == 'srv' then
        err = typed(K(q + 1), 'set') or typed(K(q + 2), 'set') or typed(K(q + 3), 'set') or
              typed(K(q + 6), 'hash') or typed(K(q + 4), 'hash') or typed(K(q + 5), 'hash') or
              typed(K(q + 9), 'hash') or typed(K(q + 7), 'hash') or typed(K(q + 8), 'hash')
      elseif code == 'inst' then
        err = typed(K(q + 1), 'hash')
      elseif code == 'open' or code == 'close' then
        err = typed(K(q + 1), 'hash') or typed(K(q + 2), 'hash')
      elseif code == 'once' then
        err = typed(K(q + 1), 'hash')
        if not err and redis.call('HEXISTS', K(q + 1), ARGV[a]) == 1 then done = true end
      elseif ar[1] == 1 then
        err = typed(K(q + 1), code == 'sadd' and 'set' or 'hash')
      end
      q = a + ar[2]
    end
    for _, key in ipairs(order) do
      if err then break end
      local x = incs[key]
      local need = {}
      local vk = val[key]
      if not vk then
        vk = {}
        val[key] = vk
      end
      for _, f in ipairs(x.f) do
        if vk[f] == nil then need[#need + 1] = f end
      end
      local cur = {}
      if #need > 0 then
        local k = kind[key]
        if k ~= nil and k ~= 'hash' then err = 'WRONGTYPE ' .. key break end
        local r = redis.pcall('HMGET', key, unpack(need))
        if r.err then err = 'WRONGTYPE ' .. key break end
        kind[key] = 'hash'
        for i, f in ipairs(need) do cur[f] = r[i] end
      end
      x.v = {}
      for _, f in ipairs(x.f) do
        local v = vk[f]
        if v == nil then v = cur[f] end
        for _, d in ipairs(x.d[f]) do
          v = add(v, d)
          if not v then err = 'ERR counter overflow in ' .. key break end
        end
        if err then break end
        x.v[f] = v
      end
    end
    if err then
      out[e] = 'E' .. err
    elseif done then
      -- A once op found its field: the event counted before (e.g. a quote
      -- accepted again after a new quote); only its marker is written.
      redis.call('HSET', KEYS[1], marker, 1)
      out[e] = '1'
    else
      redis.call('HSET', KEYS[1], marker, 1)
      for _, key in ipairs(order) do
        local x = incs[key]
        local args = {}
        for _, f in ipairs(x.f) do
          args[#args + 1] = f
          args[#args + 1] = x.v[f]
          val[key][f] = x.v[f]
        end
        redis.call('HSET', key, unpack(args))
      end
      local bumped = false
      local function bump()
        if not bumped then redis.call('HINCRBY', KEYS[2], 'gen', 1) bumped = true end
      end
      -- An instrument not known yet is recorded (once), not bumped: the
      -- groupings across instruments fall back while it contributes (it is
      -- not in service), and becoming known bumps gen (the inst op).
      local function known(id)
        local at = attrs(id)
        if not at then redis.call('HSETNX', KEYS[7], id, '1') end
        return at
      end
      -- The first-seen markers to set: flags key, distinct key, scope,
      -- member, flags, names (parallel arrays).
      local mf, md, ms, mm, ml, mn, nm = {}, {}, {}, {}, {}, {}, 0
      local function want(kf, kd, sc, member, fl, names)
        nm = nm + 1
        mf[nm], md[nm], ms[nm], mm[nm], ml[nm], mn[nm] = kf, kd, sc, sc .. '|' .. member, fl, names
      end
      q = s
      while q < fin do
        local code = ARGV[q]
        local ar = AR[code]
        local a = q + 1 + ar[1]
        if skip[q] then
          -- counted before (first)
        elseif code == 'first' then
          redis.call('HSET', K(q + 1), ARGV[a], '1')
        elseif code == 'cnt' then
          local id, c = ARGV[a], ARGV[a + 3]
          if c == 'eff' then known(id) end
          reg(ARGV[a + 1], id, K(q + 6), K(q + 8))
          reg(ARGV[a + 2], id, K(q + 7), K(q + 8))
        elseif code == 'srv' then
          local id, mode, org, user = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
          -- The organisation's size class on the day of use.
          local sz = class_on(size(org), tonumber(ARGV[a + 4]))
          local member = mode .. '|' .. org .. '|' .. user .. '|' .. sz
          redis.call('SADD', K(q + 1), member)
          redis.call('SADD', K(q + 2), member)
          redis.call('SADD', K(q + 3), member)
          local at = known(id) or {'', '', ''}
          if not seenc[org] then
            seenc[org] = true
            redis.call('HSET', KEYS[6], org, '1')
          end
          local ext = org ~= at[1]
          local uf = 1 + (ext and 2 or 0) + (sz == SME and 4 or 0)
          local of = uf + (sz == STARTUP and 8 or 0)
          local aum, aom, adm, auy, aoy, ady = K(q + 4), K(q + 5), K(q + 6), K(q + 7), K(q + 8), K(q + 9)
          local si = 'i:' .. id
          want(aum, adm, si, user, uf, UN)
          want(aom, adm, si, org, of, ON)
          want(aum, adm, 'p', user, uf, UN)
          want(aom, adm, 'p', org, of, ON)
          for _, sc in ipairs({si, 'p', 'o:' .. at[1], 'f:' .. at[2], 'c:' .. at[3], 'md:' .. mode}) do
            want(auy, ady, sc, user, uf, UN)
            want(aoy, ady, sc, org, of, ON)
          end
        elseif code == 'sadd' then
          redis.call('SADD', K(q + 1), ARGV[a])
        elseif code == 'hset' then
          redis.call('HSET', K(q + 1), ARGV[a], ARGV[a + 1])
        elseif code == 'hdel' then
          redis.call('HDEL', K(q + 1), ARGV[a])
        elseif code == 'open' then
          if redis.call('HEXISTS', K(q + 2), ARGV[a]) == 0 then redis.call('HSET', K(q + 1), ARGV[a], ARGV[a + 1]) end
        elseif code == 'close' then
          redis.call('HDEL', K(q + 1), ARGV[a])
          redis.call('HSET', K(q + 2), ARGV[a], ARGV[a + 1])
        elseif code == 'once' then
          redis.call('HSET', K(q + 1), ARGV[a], ARGV[a + 1])
        elseif code == 'inst' then
          local id, v = ARGV[a], ARGV[a + 1]
          local old = redis.call('HGET', KEYS[4], id)
          if old ~= v then
            local stale = old ~= false and old ~= nil
            if not stale and redis.call('HEXISTS', KEYS[7], id) == 1 then
              redis.call('HDEL', KEYS[7], id)
              stale = true
            end
            if stale then
              -- epoch: a report that read the instruments before this change
              -- does not use the aggregates (UsageFigures::ComputeMany).
              redis.call('HINCRBY', KEYS[2], 'epoch', 1)
              -- Only the periods the instrument was counted in (indexed once
              -- ipindex is set; before, every period).
              if redis.call('HGET', KEYS[2], 'ipindex') == '1' then
                for _, P in ipairs(redis.call('HKEYS', K(q + 1))) do
                  redis.call('HSET', KEYS[3], P, '-1')
                end
              else
                bump()
              end
            end
            redis.call('HSET', KEYS[4], id, v)
            attrc[id] = nil
          end
        elseif code == 'orgsz' then
          local org = ARGV[a]
          local old = size(org)
          local v = merge(old, ARGV[a + 1], ARGV[a + 2], org)
          if v ~= old then
            if redis.call('HEXISTS', KEYS[6], org) == 1 then bump() end
            redis.call('HSET', KEYS[5], org, v)
          end
          sizec[org] = v
        end
        q = a + ar[2]
      end
      -- The first-seen markers: one HMGET per flags hash for the markers not
      -- read before in the step, one HSET per hash for the changed ones, and
      -- 1 added to a distinct count for every flag set for the first time.
      if nm > 0 then
        local need, needk = {}, {}
        for i = 1, nm do
          local kf, field = mf[i], mm[i]
          local fc = flagc[kf]
          if not fc then
            fc = {}
            flagc[kf] = fc
          end
          if fc[field] == nil then
            local l = need[kf]
            if not l then
              l = {}
              need[kf] = l
              needk[#needk + 1] = kf
            end
            if not l[field] then
              l[field] = true
              l[#l + 1] = field
            end
          end
        end
        for _, kf in ipairs(needk) do
          local l = need[kf]
          local r = redis.call('HMGET', kf, unpack(l))
          local fc = flagc[kf]
          for i, field in ipairs(l) do fc[field] = tonumber(r[i] or '0') or 0 end
        end
        local changed, changedk = {}, {}
        for i = 1, nm do
          local kf = mf[i]
          local fc = flagc[kf]
          local old = fc[mm[i]]
          local new = bit.bor(old, ml[i])
          if new ~= old then
            fc[mm[i]] = new
            local c = changed[kf]
            if not c then
              c = {}
              changed[kf] = c
              changedk[#changedk + 1] = kf
            end
            c[mm[i]] = new
            local names = mn[i]
            for b = 1, #names do
              local bm = bit.lshift(1, b - 1)
              if bit.band(new, bm) ~= 0 and bit.band(old, bm) == 0 then
                redis.call('HINCRBY', md[i], ms[i] .. '|' .. names[b], 1)
              end
            end
          end
        end
        for _, kf in ipairs(changedk) do
          local args = {}
          for field, v in pairs(changed[kf]) do
            args[#args + 1] = field
            args[#args + 1] = v
          end
          redis.call('HSET', kf, unpack(args))
        end
      end
      out[e] = '1'
    end
  end
end
return out
)lua");
  return *s;
}

// The fold of a run of events in one step, the client having computed what
// the per-event step (FoldScript) works out in Lua: used for runs whose
// events are all new and only count (cnt), serve (srv) and open or close
// sessions (open, close, hdel of {usage}:open), each session once in the
// run. Its result is exactly FoldScript's over the same events in order; the
// increments of a run are summed per field, the served members, registered
// instruments and periods and the first-seen markers deduplicated. What the
// client computed from state (the instruments' attributes, the
// organisations' size classes) is checked against that state first. Nothing
// is written unless every write is proven to succeed; then it answers 'SLOW'
// (a marker present, a key of another type, a counter past 15 digits: fold
// the run with FoldScript, which says which event fails) or 'STALE' (an
// attribute or size class changed: compute again). 'OK': every event folded.
// KEYS: as FoldScript (1 applied, 2 agg, 3 built, 4 iattr, 5 orgs, 6
// orgsseen, 7 unknown, then the run's keys). ARGV, blocks of a count and its
// items (k: a KEYS index):
//   n, markers
//   n, instrument ids, then for each '0' (no attributes) or '1' .. attributes
//   n, organisations, then for each its size class ('0' when unknown)
//   n counter hashes: k, nf, fields, then their increments (at most 15 digits
//     summed in absolute value)
//   n sets: k, nm, members
//   n hashes whose fields are set to 1 (ai, agg:ip, orgsseen): k, nf, fields
//   n, periods to register in agg:built
//   n, instrument ids to record in agg:unknown
//   n flags hashes: k, k of its distinct counts, 'u' (users) or 'o'
//     (organisations), ng, ng pairs (flags, how many fields want them), nf,
//     the fields ("<scope>|<member>") in the order of those groups
//   k open, k closed (0 when neither is used), then n, fields, values to open;
//     n, fields, values to close; n, fields to delete from open
const RedisScript& FastFoldScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + R"lua(
for i = 1, 7 do
  if not ls_type_is(KEYS[i], 'hash') then return {'SLOW'} end
end
local p = 1
local function num()
  local v = tonumber(ARGV[p])
  p = p + 1
  return v
end
-- HMGET of ARGV[a .. a + n - 1]; nil when the key is not a hash.
local function hmget(key, a, n)
  if n > 0 and n <= 4000 then
    local r = redis.pcall('HMGET', key, unpack(ARGV, a, a + n - 1))
    if r.err then return nil end
    return r
  end
  local out, i = {}, 0
  while i < n do
    local m = math.min(n - i, 4000)
    local r = redis.pcall('HMGET', key, unpack(ARGV, a + i, a + i + m - 1))
    if r.err then return nil end
    for j = 1, m do out[i + j] = r[j] end
    i = i + m
  end
  return out
end
local function many(cmd, key, list)
  for i = 1, #list, 4000 do redis.call(cmd, key, unpack(list, i, math.min(#list, i + 3999))) end
end
local typed = {}
local function is(k, want)
  local t = typed[k]
  if t == nil then
    t = ls_type_is(KEYS[k], want) and want or ''
    typed[k] = t
  end
  return t == want
end
for i = 1, 7 do typed[i] = 'hash' end
-- Reads and checks.
local nm = num()
local am = p
p = p + nm
local r = hmget(KEYS[1], am, nm)
for i = 1, nm do
  if r[i] then return {'SLOW'} end
end
local ni = num()
local ai = p
p = p + 2 * ni
r = hmget(KEYS[4], ai, ni)
for i = 1, ni do
  local v = r[i]
  if (v and ('1' .. v) or '0') ~= ARGV[ai + ni + i - 1] then return {'STALE'} end
end
local no = num()
local ao = p
p = p + 2 * no
r = hmget(KEYS[5], ao, no)
for i = 1, no do
  if (r[i] or '0') ~= ARGV[ao + no + i - 1] then return {'STALE'} end
end
local counters = {}
for c = 1, num() do
  local k, nf = num(), num()
  local a = p
  p = p + 2 * nf
  r = hmget(KEYS[k], a, nf)
  if not r then return {'SLOW'} end
  local args = {}
  for i = 1, nf do
    local v = r[i]
    if v and not (#v <= 15 and (v == '0' or string.find(v, '^%-?[1-9]%d*$'))) then return {'SLOW'} end
    args[2 * i - 1] = ARGV[a + i - 1]
    args[2 * i] = string.format('%d', tonumber(v or '0') + tonumber(ARGV[a + nf + i - 1]))
  end
  counters[c] = {k, args}
end
local sets = {}
for c = 1, num() do
  local k, n = num(), num()
  if not is(k, 'set') then return {'SLOW'} end
  sets[c] = {k, p, n}
  p = p + n
end
local ones = {}
for c = 1, num() do
  local k, n = num(), num()
  if not is(k, 'hash') then return {'SLOW'} end
  ones[c] = {k, p, n}
  p = p + n
end
local nb = num()
local ab = p
p = p + nb
local nu = num()
local au = p
p = p + nu
local flags = {}
for c = 1, num() do
  local k = num()
  local kd = num()
  local kind = ARGV[p]
  p = p + 1
  local ng = num()
  local ag = p
  p = p + 2 * ng
  local n = num()
  if not is(kd, 'hash') then return {'SLOW'} end
  r = hmget(KEYS[k], p, n)
  if not r then return {'SLOW'} end
  typed[k] = 'hash'
  flags[c] = {k, kd, kind, ag, ng, p, r}
  p = p + n
end
local kopen, kclosed = num(), num()
local nop = num()
local aop = p
p = p + 2 * nop
local ncl = num()
local acl = p
p = p + 2 * ncl
local nhd = num()
local ahd = p
p = p + nhd
local closed = {}
if nop + ncl + nhd > 0 then
  if not is(kopen, 'hash') or not is(kclosed, 'hash') then return {'SLOW'} end
  closed = hmget(KEYS[kclosed], aop, nop)
end
-- The first-seen markers: a flag set for the first time adds 1 to its
-- count (the counts read, checked and written like the counters).
local UN = {'users', 'ext_users', 'sme_users'}
local ON = {'orgs', 'ext_orgs', 'sme_orgs', 'startup_orgs'}
local counts, countk, changed = {}, {}, {}
for c, fc in ipairs(flags) do
  local kd, names, ag, ng, a, old = fc[2], fc[3] == 'u' and UN or ON, fc[4], fc[5], fc[6], fc[7]
  local ch = {}
  changed[c] = ch
  local dc = counts[kd]
  if not dc then
    dc = {}
    counts[kd] = dc
    countk[#countk + 1] = kd
  end
  local i = 0
  for g = 0, ng - 1 do
    local w = tonumber(ARGV[ag + 2 * g])
    for _ = 1, tonumber(ARGV[ag + 2 * g + 1]) do
      i = i + 1
      local o = tonumber(old[i] or '0') or 0
      local new = bit.bor(o, w)
      if new ~= o then
        local field = ARGV[a + i - 1]
        ch[#ch + 1] = field
        ch[#ch + 1] = new
        -- The scope: the field up to its last '|' (members have none).
        local sc = string.match(field, '^(.*)|')
        for b = 1, #names do
          local bm = bit.lshift(1, b - 1)
          if bit.band(new, bm) ~= 0 and bit.band(o, bm) == 0 then
            local f = sc .. '|' .. names[b]
            dc[f] = (dc[f] or 0) + 1
          end
        end
      end
    end
  end
end
local count_writes = {}
for _, kd in ipairs(countk) do
  local fields, incs = {}, {}
  for f, d in pairs(counts[kd]) do
    fields[#fields + 1] = f
    incs[#incs + 1] = d
  end
  local args = {}
  for i = 1, #fields, 4000 do
    local r = redis.pcall('HMGET', KEYS[kd], unpack(fields, i, math.min(#fields, i + 3999)))
    if r.err then return {'SLOW'} end
    for j = 1, #r do
      local v = r[j]
      if v and not (#v <= 15 and (v == '0' or string.find(v, '^%-?[1-9]%d*$'))) then return {'SLOW'} end
      local f = i + j - 1
      args[2 * f - 1] = fields[f]
      args[2 * f] = string.format('%d', tonumber(v or '0') + incs[f])
    end
  end
  if #args > 0 then count_writes[#count_writes + 1] = {kd, args} end
end
-- The writes.
local list = {}
for i = 1, nm do
  list[2 * i - 1] = ARGV[am + i - 1]
  list[2 * i] = '1'
end
many('HSET', KEYS[1], list)
for _, c in ipairs(counters) do many('HSET', KEYS[c[1]], c[2]) end
for _, c in ipairs(sets) do
  for i = 0, c[3] - 1, 4000 do
    redis.call('SADD', KEYS[c[1]], unpack(ARGV, c[2] + i, c[2] + math.min(c[3], i + 4000) - 1))
  end
end
for _, c in ipairs(ones) do
  list = {}
  for i = 1, c[3] do
    list[2 * i - 1] = ARGV[c[2] + i - 1]
    list[2 * i] = '1'
  end
  many('HSET', KEYS[c[1]], list)
end
if nb > 0 then
  local layout = redis.call('HGET', KEYS[2], 'layout')
  for i = ab, ab + nb - 1 do
    if redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then
      local v = '-1'
      if layout == '2' then v = redis.call('HGET', KEYS[2], 'gen') or '0' end
      redis.call('HSET', KEYS[3], ARGV[i], v)
    end
  end
end
for i = au, au + nu - 1 do redis.call('HSETNX', KEYS[7], ARGV[i], '1') end
for c, fc in ipairs(flags) do
  if #changed[c] > 0 then many('HSET', KEYS[fc[1]], changed[c]) end
end
for _, w in ipairs(count_writes) do many('HSET', KEYS[w[1]], w[2]) end
if nop > 0 then
  list = {}
  for i = 1, nop do
    if not closed[i] then
      list[#list + 1] = ARGV[aop + i - 1]
      list[#list + 1] = ARGV[aop + nop + i - 1]
    end
  end
  if #list > 0 then many('HSET', KEYS[kopen], list) end
end
if ncl > 0 then
  for i = 0, ncl - 1, 4000 do
    redis.call('HDEL', KEYS[kopen], unpack(ARGV, acl + i, acl + math.min(ncl, i + 4000) - 1))
  end
  list = {}
  for i = 1, ncl do
    list[2 * i - 1] = ARGV[acl + i - 1]
    list[2 * i] = ARGV[acl + ncl + i - 1]
  end
  many('HSET', KEYS[kclosed], list)
end
for i = 0, nhd - 1, 4000 do
  redis.call('HDEL', KEYS[kopen], unpack(ARGV, ahd + i, ahd + math.min(nhd, i + 4000) - 1))
end
return {'OK'}
)lua");
  return *s;
}

struct Ops {
  struct Op {
    const char* code;
    std::vector<std::string> keys;
    std::vector<std::string> args;
  };
  std::vector<Op> ops;
  void Add(std::string key, const char* code, std::string a, std::string b = "") {
    Op op{code, {std::move(key)}, {std::move(a)}};
    if (std::string_view(code) == "inc" || std::string_view(code) == "hset") op.args.push_back(std::move(b));
    ops.push_back(std::move(op));
  }
  void Raw(const char* code, std::vector<std::string> keys, std::vector<std::string> args) {
    ops.push_back(Op{code, std::move(keys), std::move(args)});
  }
};

// Whole seconds of [s, e): both instants taken to the whole second
// (fractions dropped), then subtracted, so that the parts of a stretch split
// anywhere add up to the seconds of the whole (usage.proto "Units").
int64_t WholeSeconds(absl::Time s, absl::Time e) { return absl::ToUnixSeconds(e) - absl::ToUnixSeconds(s); }

// Seconds of [s, e) in each calendar day of the zone (WholeSeconds: the
// days add up to WholeSeconds(s, e)).
std::vector<std::pair<absl::CivilDay, int64_t>> SplitByDay(absl::Time s, absl::Time e, absl::TimeZone zone) {
  std::vector<std::pair<absl::CivilDay, int64_t>> out;
  while (s < e) {
    const absl::CivilDay d = absl::ToCivilDay(s, zone);
    const absl::Time next = std::min(e, absl::FromCivil(d + 1, zone));
    out.emplace_back(d, WholeSeconds(s, next));
    s = next;
  }
  return out;
}

}  // namespace

UsageFigures::UsageFigures(RedisPool* pool, const Clock* clock, absl::TimeZone zone, PageTokenCodec page_tokens,
                           std::string currency, int default_lease_hours_per_day)
    : pool_(pool), clock_(clock), zone_(zone), page_tokens_(std::move(page_tokens)), currency_(std::move(currency)),
      default_lease_hours_(default_lease_hours_per_day) {}

// ================================================================ folding

absl::StatusOr<UsageFigures::PreparedFold> UsageFigures::PrepareFold(absl::string_view source,
                                                                     const StreamEvent& event) const {
  Ops ops;
  std::string event_id;
  // The fields of state this event's preparation reads (Dependency).
  std::vector<std::string> reads;
  // Every name that becomes part of a key, a field or a stored attribute is
  // checked first; an event naming a malformed one ("instruments/../x",
  // "organizations/*") changes no figure: it is only marked as seen.
  std::string bad_name;
  auto name_ok = [&](const std::string& name, absl::string_view collection, bool optional) {
    if ((optional && name.empty()) || IsResourceName(name, collection)) return true;
    if (bad_name.empty()) bad_name = name.empty() ? "(empty)" : name;
    return false;
  };
  auto any_name_ok = [&](const std::string& name) {
    if (ValidResourceName(name)) return true;
    if (bad_name.empty()) bad_name = name.empty() ? "(empty)" : name;
    return false;
  };
  // One counter in the day of `at` and its month.
  auto count = [&](const std::string& instrument, absl::Time at, absl::string_view counter, SharingMode mode,
                   const std::string& org, int64_t delta) {
    if (!name_ok(instrument, "instruments", false) || !name_ok(org, "organizations", true)) return;
    const std::string id = IdOf(instrument);
    const absl::CivilDay d = absl::ToCivilDay(at, zone_);
    const std::string y = absl::StrFormat("%04d", d.year()), m = absl::StrFormat("%04d%02d", d.year(), d.month());
    const std::string pm = "m" + m, py = "y" + y;
    ops.Raw("cnt",
            {absl::StrCat("{usage}:d:", id, ":", absl::StrFormat("%04d%02d%02d", d.year(), d.month(), d.day())),
             absl::StrCat("{usage}:m:", id, ":", m), absl::StrCat("{usage}:y:", id, ":", y),
             agg::InstrumentKey(id, pm), agg::InstrumentKey(id, py), agg::ContributorsKey(pm),
             agg::ContributorsKey(py), agg::PeriodsKey(id)},
            {id, pm, py, std::string(counter), std::to_string(static_cast<int>(mode)), org, std::to_string(delta)});
  };
  auto served = [&](const std::string& instrument, absl::CivilDay d, SharingMode mode, const std::string& org,
                    const std::string& user) {
    if (!name_ok(instrument, "instruments", false) || !name_ok(org, "organizations", true) ||
        !name_ok(user, "users", true)) {
      return;
    }
    const std::string id = IdOf(instrument);
    const std::string y = absl::StrFormat("%04d", d.year()), m = absl::StrFormat("%04d%02d", d.year(), d.month());
    const std::string pm = "m" + m, py = "y" + y;
    ops.Raw("srv",
            {absl::StrCat("{usage}:ud:", id, ":", absl::StrFormat("%04d%02d%02d", d.year(), d.month(), d.day())),
             absl::StrCat("{usage}:um:", id, ":", m), absl::StrCat("{usage}:uy:", id, ":", y),
             agg::UserFlagsKey(pm), agg::OrgFlagsKey(pm), agg::DistinctKey(pm), agg::UserFlagsKey(py),
             agg::OrgFlagsKey(py), agg::DistinctKey(py)},
            {id, std::to_string(static_cast<int>(mode)), org, user,
             std::to_string(absl::ToUnixMillis(absl::FromCivil(d + 1, zone_)))});
  };
  if (source == "inventory") {
    iv::InventoryEvent e;
    if (!e.ParseFromString(event.payload)) return PreparedFold{};
    event_id = e.header().event_id();
    if (e.has_instrument_changed()) {
      const auto& in = e.instrument_changed().instrument();
      if (name_ok(in.name(), "instruments", false) && name_ok(in.owner_organization(), "organizations", true) &&
          name_ok(in.facility(), "facilities", true)) {
        // The version, by the time it took effect.
        const absl::Time effective = in.has_update_time()   ? FromProto(in.update_time())
                                     : in.has_create_time() ? FromProto(in.create_time())
                                                            : FromProto(e.header().event_time());
        const std::string ms = std::to_string(absl::ToUnixMillis(effective));
        const std::string versions = kVersionsPrefix + IdOf(in.name());
        // The latest record and the attributes only from a version at least
        // as new as every one folded (events fold out of order: an older
        // version folded after a newer one is history only).
        ops.Raw("newer", {versions}, {ms});
        ops.Add("{usage}:instr", "hset", IdOf(in.name()), in.SerializeAsString());
        ops.Add(versions, "hset", ms, in.SerializeAsString());
        ops.Add(kVersionsWrittenBy, "hset", IdOf(in.name()), event_id);
        ops.Raw("newer", {versions}, {ms});
        ops.Raw("inst", {agg::PeriodsKey(IdOf(in.name()))}, {IdOf(in.name()), agg::Attributes(in)});
      }
    } else if (e.has_organization_changed()) {
      const auto& o = e.organization_changed().organization();
      if (name_ok(o.name(), "organizations", false)) {
        // The class from the organisation's update (its creation), merged
        // into its history ({usage}:orgs, OrgSizeClassOn) by the orgsz op.
        const absl::Time effective = o.has_update_time()   ? FromProto(o.update_time())
                                     : o.has_create_time() ? FromProto(o.create_time())
                                                           : FromProto(e.header().event_time());
        ops.Raw("orgsz", {}, {o.name(), std::to_string(static_cast<int>(o.size_class())),
                              std::to_string(absl::ToUnixMillis(effective))});
        ops.Add("{usage}:orgname", "hset", o.name(), o.display_name());
      }
    } else if (e.has_facility_changed()) {
      const auto& fc = e.facility_changed().facility();
      if (name_ok(fc.name(), "facilities", false)) ops.Add("{usage}:facname", "hset", fc.name(), fc.display_name());
    } else if (e.has_maintenance_window_changed() &&
               name_ok(e.maintenance_window_changed().instrument(), "instruments", false) &&
               any_name_ok(e.maintenance_window_changed().maintenance_window().name())) {
      const auto& w = e.maintenance_window_changed().maintenance_window();
      const std::string id = IdOf(e.maintenance_window_changed().instrument());
      const std::string key = "{usage}:mw:" + id, cancelled = "{usage}:mwx:" + id;
      if (w.state() == iv::SCHEDULED) {
        // Not once its cancellation was folded (cancellation is final; it
        // may fold first when replicas fold out of order).
        ops.Raw("unless", {cancelled}, {IdOf(w.name())});
        ops.Add(key, "hset", IdOf(w.name()),
                absl::StrCat(absl::ToUnixMillis(FromProto(w.interval().start_time())), "|",
                             absl::ToUnixMillis(FromProto(w.interval().end_time()))));
      } else {
        ops.Add(key, "hdel", IdOf(w.name()));
        if (w.state() == iv::CANCELLED) ops.Add(cancelled, "hset", IdOf(w.name()), "1");
      }
    }
  } else if (source == "booking") {
    bk::BookingEvent e;
    if (!e.ParseFromString(event.payload)) return PreparedFold{};
    event_id = e.header().event_id();
    const bk::Booking* b = nullptr;
    // Confirmed: created CONFIRMED, or approved. (A BookingConfirmed without
    // via_approval followed a CONFIRMED BookingCreated in older streams.)
    const bool confirmed =
        (e.has_booking_created() && e.booking_created().booking().state() == bk::Booking::CONFIRMED) ||
        (e.has_booking_confirmed() && e.booking_confirmed().via_approval());
    for (const bk::Booking* candidate :
         {confirmed && e.has_booking_created() ? &e.booking_created().booking() : nullptr,
          confirmed && e.has_booking_confirmed() ? &e.booking_confirmed().booking() : nullptr,
          e.has_booking_checked_out() ? &e.booking_checked_out().booking() : nullptr,
          e.has_booking_missed() ? &e.booking_missed().booking() : nullptr,
          e.has_booking_cancelled() ? &e.booking_cancelled().booking() : nullptr,
          e.has_booking_rejected() ? &e.booking_rejected().booking() : nullptr}) {
      if (candidate != nullptr) b = candidate;
    }
    // What BookingPeriodTime and DayCap read.
    auto period_reads = [&](const bk::Booking& rb) {
      if (rb.mode() == labshare::type::v1::TECHNICAL_SERVICE && !rb.service_order().empty()) {
        reads.push_back(Dependency(kOrdersConfirmed, rb.service_order()));
      }
    };
    auto lease_cap_reads = [&](const bk::Booking& rb, bool at_handover) {
      if (rb.mode() != labshare::type::v1::LEASE) return;
      reads.push_back(Dependency("{usage}:instr", IdOf(rb.instrument())));
      if (!at_handover) reads.push_back(Dependency(kOpenSessions, rb.name()));
    };
    // Checked in (check-in, lease handover, start of a service run): the
    // session is open and counts at query time (OpenSessions) until its
    // BookingCheckedOut. When the block of a running session moves (lease
    // extended, a maintenance cut), it counts to the new reserved end, with
    // the cap recorded at check-in.
    auto open_session = [&](const bk::Booking& ob, bool at_handover) -> absl::Status {
      if (any_name_ok(ob.name()) && name_ok(ob.instrument(), "instruments", false) &&
          name_ok(ob.payer_organization(), "organizations", true) &&
          name_ok(ob.user_organization(), "organizations", true) && name_ok(ob.user(), "users", true) &&
          ob.has_session() && ob.session().has_start_time()) {
        lease_cap_reads(ob, at_handover);
        LS_ASSIGN_OR_RETURN(int64_t cap, DayCap(ob, at_handover));
        // Not when its check-out (or cancellation) was folded first (two
        // replicas on one stream): the closed marker, checked in the step.
        ops.Raw("open", {kOpenSessions, kClosedSessions}, {ob.name(), absl::StrCat(cap, "|", ob.SerializeAsString())});
      }
      return absl::OkStatus();
    };
    if (e.has_booking_checked_in()) {
      LS_RETURN_IF_ERROR(open_session(e.booking_checked_in().booking(), /*at_handover=*/true));
    }
    if (e.has_booking_interval_changed() &&
        e.booking_interval_changed().booking().state() == bk::Booking::CHECKED_IN) {
      LS_RETURN_IF_ERROR(open_session(e.booking_interval_changed().booking(), /*at_handover=*/false));
    }
    // A service order is confirmed when its client accepts the quote: one
    // booking of TECHNICAL_SERVICE in the period of that time.
    if (e.has_service_order_quote_accepted()) {
      const bk::ServiceOrder& o = e.service_order_quote_accepted().service_order();
      const absl::Time at = o.has_quote_accept_time() ? FromProto(o.quote_accept_time())
                                                      : FromProto(e.header().event_time());
      // Where its runs count as completed; counted at the first acceptance
      // only: a quote accepted again after a new quote changes nothing.
      if (IsResourceName(o.name(), "serviceOrders")) {
        ops.Raw("once", {kOrdersConfirmed}, {o.name(), std::to_string(absl::ToUnixMillis(at))});
      }
      count(o.instrument(), at, "bk", labshare::type::v1::TECHNICAL_SERVICE, o.client_organization(), 1);
    }
    // A cancelled service order: after confirmation by the client side a
    // cancellation (late when booking says so) of that booking; before it,
    // by the owner's side, a declined request (in the period of the request).
    // The sides are told by the canceller's organisation (the event carries
    // no role): the client side is the client organisation; the owner's side
    // is owner staff (booking.proto: FACILITY_STAFF of the instrument's owner
    // or operator organisation), any other organisation than the client's
    // that is the order's instrument_owner or the owner or operator of the
    // instrument's version in force at the start of the cancellation's day.
    // Nobody else rejects a request: not a CONSORTIUM_ADMIN of the platform
    // operator (another organisation), not an event without an actor
    // organisation. An internal order (the client is the owner or operator)
    // cancelled by its own organisation is its client's withdrawal, never a
    // rejected request: rejected_requests is a barrier to sharing with
    // others.
    if (e.has_service_order_cancelled()) {
      const auto& c = e.service_order_cancelled();
      const bk::ServiceOrder& o = c.service_order();
      const std::string& actor_org = e.header().actor_organization();
      const bool client_side = !actor_org.empty() && actor_org == o.client_organization();
      auto owner_side = [&]() -> absl::StatusOr<bool> {
        if (actor_org.empty() || client_side) return false;
        if (actor_org == o.instrument_owner()) return true;
        if (!IsResourceName(o.instrument(), "instruments")) return false;
        reads.push_back(Dependency("{usage}:instr", IdOf(o.instrument())));
        const absl::Time at = o.has_cancel_time() ? FromProto(o.cancel_time()) : FromProto(e.header().event_time());
        LS_ASSIGN_OR_RETURN(const std::optional<iv::Instrument> in,
                            InstrumentOn(o.instrument(), absl::FromCivil(absl::ToCivilDay(at, zone_), zone_)));
        return in.has_value() && (actor_org == in->owner_organization() || actor_org == in->operator_organization());
      };
      const auto prev = c.previous_state();
      const bool confirmed_order = prev == bk::ServiceOrder::QUOTE_ACCEPTED ||
                                   prev == bk::ServiceOrder::SAMPLES_RECEIVED ||
                                   prev == bk::ServiceOrder::SCHEDULED;
      const auto ts = labshare::type::v1::TECHNICAL_SERVICE;
      if (confirmed_order && client_side && o.has_quote_accept_time()) {
        // In the period its booking counts in: its first acceptance (a
        // quote accepted again carries the later time).
        reads.push_back(Dependency(kOrdersConfirmed, o.name()));
        LS_ASSIGN_OR_RETURN(const absl::Time at, OrderConfirmedTime(o.name(), FromProto(o.quote_accept_time())));
        count(o.instrument(), at, "canc", ts, o.client_organization(), 1);
        if (c.late_cancellation()) count(o.instrument(), at, "late", ts, o.client_organization(), 1);
      } else if ((prev == bk::ServiceOrder::REQUESTED || prev == bk::ServiceOrder::QUOTED) &&
                 (client_side || o.has_create_time())) {
        // An order whose quote was accepted before a re-quote (which clears
        // quote_accept_time) counted as a booking then: its client's
        // cancellation is a cancellation of that booking, in the period of
        // the first acceptance; the owner's side cancelling it rejects
        // nothing. A rejected request is one cancelled by the owner's side
        // before its quote was ever accepted.
        reads.push_back(Dependency(kOrdersConfirmed, o.name()));
        LS_ASSIGN_OR_RETURN(const absl::Time accepted, OrderConfirmedTime(o.name(), absl::InfiniteFuture()));
        if (client_side && accepted != absl::InfiniteFuture()) {
          count(o.instrument(), accepted, "canc", ts, o.client_organization(), 1);
          if (c.late_cancellation()) count(o.instrument(), accepted, "late", ts, o.client_organization(), 1);
        } else if (!client_side && accepted == absl::InfiniteFuture()) {
          LS_ASSIGN_OR_RETURN(const bool declined, owner_side());
          if (declined) count(o.instrument(), FromProto(o.create_time()), "rej", ts, o.client_organization(), 1);
        }
      }
    }
    if (b != nullptr) {
      const absl::Time start = FromProto(b->reserved_interval().start_time());
      // Time, bookings and outcomes of one booking in one user organisation's
      // row (UsageFigures' "Of those" counts stay within the row).
      const std::string& org = UserOrganization(*b);
      // A TECHNICAL_SERVICE run is not the booking: its service order counts
      // once, when confirmed (below), however often its run is rescheduled.
      if (confirmed && b->mode() != labshare::type::v1::TECHNICAL_SERVICE) {
        count(b->instrument(), start, "bk", b->mode(), org, 1);
      }
      if (e.has_booking_missed()) count(b->instrument(), start, "miss", b->mode(), org, 1);
      if (e.has_booking_rejected()) count(b->instrument(), FromProto(b->create_time()), "rej", b->mode(), org, 1);
      if (e.has_booking_cancelled()) {
        const auto& c = e.booking_cancelled();
        // A TECHNICAL_SERVICE run is booked by the owner's staff: its
        // client's cancellations are the order's (ServiceOrderCancelled).
        const bool run = b->mode() == labshare::type::v1::TECHNICAL_SERVICE;
        // Of the confirmed bookings only (UNSPECIFIED: older streams, which
        // published confirmed cancellations only).
        const bool was_confirmed = c.previous_state() == bk::Booking::CONFIRMED ||
                                   c.previous_state() == bk::Booking::STATE_UNSPECIFIED;
        // Booking names the lease as initiator whoever cancels it (CancelLease):
        // the lessee's own cancellation is told by the actor's organisation.
        const bool by_lessee = b->mode() == labshare::type::v1::LEASE &&
                               c.initiator() == bk::Booking::PARENT_RESOURCE &&
                               c.previous_state() == bk::Booking::CONFIRMED &&
                               !e.header().actor_organization().empty() &&
                               e.header().actor_organization() == b->payer_organization();
        if (!was_confirmed) {
          // A request withdrawn or cancelled before confirmation: no booking.
        } else if (c.cancelled_by_outage()) {
          period_reads(*b);
          LS_ASSIGN_OR_RETURN(absl::Time counted_at, BookingPeriodTime(*b));
          // A run: its service order (the booking) at most once.
          if (run && IsResourceName(b->service_order(), "serviceOrders")) {
            ops.Raw("first", {kOrdersOutageCancelled}, {b->service_order()});
          }
          count(b->instrument(), counted_at, "out", b->mode(), org, 1);
        } else if ((c.initiator() == bk::Booking::BOOKER || by_lessee) && !run) {
          count(b->instrument(), start, "canc", b->mode(), org, 1);
          if (c.late_cancellation()) count(b->instrument(), start, "late", b->mode(), org, 1);
        }
      }
      // A session that ended (or a booking cancelled) is no longer open,
      // and stays closed: a check-in folded after it opens nothing. (A
      // booking cancelled without a session was never checked in: no marker.)
      if ((e.has_booking_checked_out() || e.has_booking_cancelled()) && any_name_ok(b->name())) {
        if (e.has_booking_checked_out() || b->session().has_start_time()) {
          ops.Raw("close", {kOpenSessions, kClosedSessions},
                  {b->name(), std::to_string(absl::ToUnixMillis(FromProto(e.header().event_time())))});
        } else {
          ops.Add(kOpenSessions, "hdel", b->name());
        }
      }
      if (e.has_booking_checked_out() && b->has_session() && b->session().has_start_time() &&
          b->session().has_end_time()) {
        period_reads(*b);
        lease_cap_reads(*b, /*at_handover=*/false);
        LS_ASSIGN_OR_RETURN(absl::Time counted_at, BookingPeriodTime(*b));
        count(b->instrument(), counted_at, "done", b->mode(), org, 1);
        const absl::Time s = FromProto(b->session().start_time()), en = FromProto(b->session().end_time());
        // LEASE: the cap recorded at handover (open session), else as now.
        LS_ASSIGN_OR_RETURN(int64_t cap, DayCap(*b, /*at_handover=*/false));
        for (const auto& [day, seconds] : SplitByDay(s, en, zone_)) {
          // A day with no whole second of use (check-out at 00:00:00.5) is
          // no day of use: nobody served on it (as for open sessions).
          if (std::min(seconds, cap) <= 0) continue;
          count(b->instrument(), absl::FromCivil(day, zone_), "eff", b->mode(), org, std::min(seconds, cap));
          served(b->instrument(), day, b->mode(), org, b->user());
        }
      }
    }
  } else if (source == "billing") {
    bl::BillingEvent e;
    if (!e.ParseFromString(event.payload)) return PreparedFold{};
    event_id = e.header().event_id();
    std::vector<const bl::IncomeFigures*> figures;
    if (e.has_charge_posted()) figures.push_back(&e.charge_posted().income());
    if (e.has_correction_posted()) {
      for (const auto& f : e.correction_posted().income_deltas()) figures.push_back(&f);
    }
    for (const bl::IncomeFigures* f : figures) {
      if (f->instrument().empty()) continue;
      if (f->currency_code() != currency_) {
        // other_currency_income: the service income in its own currency
        // ("oc.<CODE>"), never converted, in no rate.
        if (!IsCurrencyCode(f->currency_code())) continue;
        for (const auto& s : f->shares()) {
          if (s.service_income().amount_minor() != 0 && s.service_income().currency_code() == f->currency_code()) {
            count(f->instrument(), FromProto(f->effective_time()), OtherCurrencyCounter(f->currency_code()), f->mode(),
                  s.payer_organization(), s.service_income().amount_minor());
          }
        }
        continue;
      }
      const absl::Time at = FromProto(f->effective_time());
      const bool fee = f->fee_kind() == bl::MISSED_BOOKING_FEE || f->fee_kind() == bl::LATE_CANCELLATION_FEE;
      for (const auto& s : f->shares()) {
        if (s.service_income().amount_minor() != 0) {
          count(f->instrument(), at, "inc", f->mode(), s.payer_organization(), s.service_income().amount_minor());
          if (fee) count(f->instrument(), at, "pen", f->mode(), s.payer_organization(), s.service_income().amount_minor());
        }
        if (s.subsidised().amount_minor() != 0) {
          count(f->instrument(), at, "sub", f->mode(), s.payer_organization(), s.subsidised().amount_minor());
        }
      }
      if (f->in_kind().amount_minor() != 0) {
        count(f->instrument(), at, "ink", f->mode(), f->owner_organization(), f->in_kind().amount_minor());
      }
    }
  }
  if (event_id.empty()) return PreparedFold{};
  if (!bad_name.empty()) {
    LogWarning("event names a malformed resource; marked as seen, no figure changed",
               {{"source", std::string(source)}, {"event_id", event_id}, {"name", bad_name.substr(0, 120)}});
    ops = Ops();
  }
  PreparedFold out;
  out.send = true;
  out.marker = absl::StrCat(source, "|", event_id);
  out.reads = std::move(reads);
  for (auto& op : ops.ops) {
    out.ops.push_back(PreparedFold::Op{op.code, std::move(op.keys), std::move(op.args)});
  }
  return out;
}

absl::StatusOr<absl::Time> UsageFigures::BookingPeriodTime(const labshare::booking::v1::Booking& b) const {
  const absl::Time start = FromProto(b.reserved_interval().start_time());
  if (b.mode() != labshare::type::v1::TECHNICAL_SERVICE || b.service_order().empty()) return start;
  return OrderConfirmedTime(b.service_order(), start);
}

absl::StatusOr<absl::Time> UsageFigures::OrderConfirmedTime(const std::string& order, absl::Time otherwise) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HGET", kOrdersConfirmed, order}));
  int64_t ms = 0;
  return !v.is_nil() && absl::SimpleAtoi(v.str, &ms) ? absl::FromUnixMillis(ms) : otherwise;
}

absl::StatusOr<std::optional<labshare::inventory::v1::Instrument>> UsageFigures::InstrumentOn(
    const std::string& instrument, absl::Time t) const {
  const std::string id = IdOf(instrument);
  LS_ASSIGN_OR_RETURN(auto v, pool_->Pipeline({{"HGET", "{usage}:instr", id}, {"HGETALL", kVersionsPrefix + id}}));
  Instr x;
  if (!v[0].is_nil() && !x.instrument.ParseFromString(v[0].str)) x.instrument.Clear();
  auto versions = std::make_shared<Instr::Versions>();
  for (size_t j = 0; j + 1 < v[1].elements.size(); j += 2) {
    int64_t ms = 0;
    iv::Instrument version;
    if (absl::SimpleAtoi(v[1].elements[j].str, &ms) && version.ParseFromString(v[1].elements[j + 1].str)) {
      versions->emplace_back(absl::FromUnixMillis(ms), std::move(version));
    }
  }
  if (v[0].is_nil() && versions->empty()) return std::nullopt;
  std::sort(versions->begin(), versions->end(), [](const auto& a, const auto& c) { return a.first < c.first; });
  x.history = std::move(versions);
  return *x.VersionAt(t);
}

absl::StatusOr<int64_t> UsageFigures::DayCap(const labshare::booking::v1::Booking& b, bool at_handover) const {
  // Only LEASE days are counted by policy; other modes count actual time,
  // also on a day longer than 24 h (daylight saving).
  if (b.mode() != labshare::type::v1::LEASE) return kNoDayCap;
  if (!IsResourceName(b.instrument(), "instruments")) return 24 * 3600;
  const std::string id = IdOf(b.instrument());
  LS_ASSIGN_OR_RETURN(auto v, pool_->Pipeline({{"HGET", "{usage}:instr", id},
                                               {"HGET", "{usage}:thresholds", "d"},
                                               {"HGET", kOpenSessions, b.name()},
                                               {"HGETALL", kVersionsPrefix + id}}));
  // The cap recorded when the lease was handed over ("in force at handover").
  int64_t recorded = 0;
  if (!at_handover && !v[2].is_nil() &&
      absl::SimpleAtoi(absl::string_view(v[2].str).substr(0, v[2].str.find('|')), &recorded) && recorded > 0) {
    return recorded;
  }
  // Thresholds.default_lease_counted_hours_per_day as usage holds it when it
  // folds the handover (or a return folded first; thresholds keep no
  // history), unless the instrument counts its own hours.
  int64_t cap = default_lease_hours_ * 3600;
  v1::Thresholds t;
  if (!v[1].is_nil() && t.ParseFromString(v[1].str) && t.default_lease_counted_hours_per_day() > 0) {
    cap = int64_t{t.default_lease_counted_hours_per_day()} * 3600;
  }
  // The instrument's version in force at the start of the handover's day
  // (versions resolve to the day, as for every use), not the latest record:
  // the booking stream may be folded behind inventory's, so a version that
  // takes effect after the handover may already be here. The latest record
  // only for an instrument folded before versions were kept.
  Instr x;
  if (!v[0].is_nil()) x.instrument.ParseFromString(v[0].str);
  auto versions = std::make_shared<Instr::Versions>();
  for (size_t j = 0; j + 1 < v[3].elements.size(); j += 2) {
    int64_t ms = 0;
    iv::Instrument version;
    if (absl::SimpleAtoi(v[3].elements[j].str, &ms) && version.ParseFromString(v[3].elements[j + 1].str)) {
      versions->emplace_back(absl::FromUnixMillis(ms), std::move(version));
    }
  }
  std::sort(versions->begin(), versions->end(), [](const auto& a, const auto& c) { return a.first < c.first; });
  x.history = std::move(versions);
  const absl::Time handover =
      b.session().has_start_time() ? FromProto(b.session().start_time()) : FromProto(b.reserved_interval().start_time());
  const iv::Instrument& in = *x.VersionAt(absl::FromCivil(absl::ToCivilDay(handover, zone_), zone_));
  for (const auto& m : in.modes()) {
    if (m.mode() == labshare::type::v1::LEASE && m.lease_rules().counted_hours_per_day() > 0) {
      cap = m.lease_rules().counted_hours_per_day() * 3600;
    }
  }
  return cap;
}

absl::StatusOr<std::map<std::string, std::vector<UsageFigures::OpenSession>>> UsageFigures::OpenSessions(
    absl::Time now) const {
  LS_ASSIGN_OR_RETURN(RedisValue all, pool_->Command({"HGETALL", kOpenSessions}));
  std::map<std::string, std::vector<OpenSession>> out;
  for (size_t i = 0; i + 1 < all.elements.size(); i += 2) {
    const std::string& v = all.elements[i + 1].str;
    const size_t bar = v.find('|');
    OpenSession o;
    bk::Booking b;
    if (bar == std::string::npos || !absl::SimpleAtoi(absl::string_view(v).substr(0, bar), &o.cap) ||
        !b.ParseFromString(v.substr(bar + 1)) || !IsResourceName(b.instrument(), "instruments")) {
      continue;
    }
    o.mode = static_cast<int>(b.mode());
    // Sessions opened before only LEASE was capped recorded 24 h for the
    // other modes: they count actual time too.
    if (b.mode() != labshare::type::v1::LEASE) o.cap = kNoDayCap;
    o.org = UserOrganization(b);
    o.user = b.user();
    o.start = FromProto(b.session().start_time());
    LS_ASSIGN_OR_RETURN(o.reserved_start, BookingPeriodTime(b));
    // Up to the computation time; ON_SITE, JOINT_RESEARCH and
    // TECHNICAL_SERVICE also at most to the reserved (scheduled) end.
    o.end = now;
    if (b.mode() != labshare::type::v1::LEASE && b.reserved_interval().has_end_time()) {
      o.end = std::min(o.end, FromProto(b.reserved_interval().end_time()));
    }
    out[IdOf(b.instrument())].push_back(std::move(o));
  }
  return out;
}

absl::Status UsageFigures::Fold(absl::string_view source, const StreamEvent& event) {
  return FoldBatch(source, {event})[0];
}

namespace {

// The hash fields ("<key>\n<field>") an event's step writes.
template <typename OpList>
std::vector<std::string> FieldsWritten(const OpList& ops) {
  std::vector<std::string> out;
  for (const auto& op : ops) {
    if (op.args.empty()) continue;
    if (op.code == "hset" || op.code == "hdel" || op.code == "open" || op.code == "close" || op.code == "once") {
      for (const auto& k : op.keys) out.push_back(Dependency(k, op.args[0]));
    }
  }
  return out;
}

}  // namespace

std::vector<absl::Status> UsageFigures::FoldBatch(absl::string_view source, const std::vector<StreamEvent>& events) {
  std::vector<absl::Status> out(events.size());
  // Fields written by an event whose fold failed, with its status: an event
  // prepared from one fails the same way (it stays pending and comes back
  // after the event it depends on).
  absl::flat_hash_map<std::string, absl::Status> failed;
  size_t next = 0;
  while (next < events.size()) {
    // A group: the events from `next` up to the first that reads a field an
    // earlier event of the group writes; that one is prepared again (and
    // starts the next group) once the group is folded, so it sees the
    // writes (a run's check-out after its order's acceptance, a lease's
    // return after its handover).
    std::vector<PreparedFold> group;
    std::vector<size_t> index;
    std::vector<std::vector<std::string>> writes;
    absl::flat_hash_set<std::string> written;
    for (; next < events.size(); ++next) {
      auto p = PrepareFold(source, events[next]);
      if (!p.ok()) {
        out[next] = p.status();
        continue;
      }
      if (!p->send) continue;
      const bool waits = std::any_of(p->reads.begin(), p->reads.end(),
                                     [&](const std::string& r) { return written.contains(r); });
      if (waits) break;
      std::vector<std::string> w = FieldsWritten(p->ops);
      const auto blocked = std::find_if(p->reads.begin(), p->reads.end(),
                                        [&](const std::string& r) { return failed.contains(r); });
      if (blocked != p->reads.end()) {
        out[next] = failed.at(*blocked);
        for (auto& f : w) failed.emplace(std::move(f), out[next]);
        continue;
      }
      written.insert(w.begin(), w.end());
      writes.push_back(std::move(w));
      group.push_back(*std::move(p));
      index.push_back(next);
    }
    FoldPrepared(&group, index, &out);
    for (size_t j = 0; j < index.size(); ++j) {
      if (out[index[j]].ok()) continue;
      for (auto& f : writes[j]) failed.emplace(std::move(f), out[index[j]]);
    }
  }
  return out;
}

void UsageFigures::FoldPrepared(std::vector<PreparedFold>* prepared, const std::vector<size_t>& index,
                                std::vector<absl::Status>* out) {
  // At most this many events per FoldFast step, and (as FoldSteps' argument
  // budget) at most about this many ops: a run of long multi-day sessions
  // (a day's ops each) must not make one step hold Redis for long. An event
  // is never split.
  constexpr size_t kMaxFastEvents = 1024;
  constexpr size_t kMaxFastOps = 20000;
  auto fast_ops = [](const PreparedFold& p) {
    for (const auto& op : p.ops) {
      if (op.code == "cnt" || op.code == "srv") continue;
      if ((op.code == "open" || op.code == "close") && op.keys.size() == 2 && op.keys[0] == kOpenSessions &&
          op.keys[1] == kClosedSessions && op.args.size() == 2) {
        continue;
      }
      if (op.code == "hdel" && op.keys.size() == 1 && op.keys[0] == kOpenSessions && op.args.size() == 1) continue;
      return false;
    }
    return true;
  };
  const size_t n = prepared->size();
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    if (fast_fold_) {
      // A run: each event once, each session opened or closed by one event.
      absl::flat_hash_set<std::string> markers, sessions;
      size_t ops = 0;
      for (; j < n && j - i < kMaxFastEvents && (j == i || ops < kMaxFastOps); ++j) {
        const PreparedFold& p = (*prepared)[j];
        if (!fast_ops(p) || !markers.insert(p.marker).second) break;
        ops += p.ops.size();
        bool again = false;
        for (const auto& op : p.ops) {
          if (op.code != "cnt" && op.code != "srv" && !sessions.insert(op.args[0]).second) again = true;
        }
        if (again) break;
      }
    }
    if (j > i) {
      absl::StatusOr<bool> folded = FoldFast(*prepared, i, j);
      if (!folded.ok()) {
        for (size_t k = i; k < j; ++k) (*out)[index[k]] = folded.status();
      } else if (!*folded) {
        FoldSteps(prepared, index, i, j, out);
      }
      i = j;
      continue;
    }
    // The events up to the next one FoldFast takes.
    for (j = i + 1; j < n && !(fast_fold_ && fast_ops((*prepared)[j])); ++j) {
    }
    FoldSteps(prepared, index, i, j, out);
    i = j;
  }
}

absl::StatusOr<bool> UsageFigures::FoldFast(const std::vector<PreparedFold>& prepared, size_t from, size_t to) {
  // Every increment below 1e15 in absolute value summed per field: with a
  // stored value of at most 15 digits the sum stays exact in Lua's doubles.
  constexpr int64_t kMaxAbs = 1'000'000'000'000'000;
  // The instruments whose attributes and the organisations whose size
  // classes the step depends on.
  std::set<std::string> ids, orgs;
  for (size_t e = from; e < to; ++e) {
    for (const auto& op : prepared[e].ops) {
      if (op.code == "cnt" && op.args.size() == 7 && op.args[3] == "eff") ids.insert(op.args[0]);
      if (op.code == "srv" && op.args.size() == 5) {
        ids.insert(op.args[0]);
        orgs.insert(op.args[2]);
      }
    }
  }
  const std::string sme = std::to_string(static_cast<int>(iv::SME));
  const std::string startup = std::to_string(static_cast<int>(iv::START_UP));
  for (int attempt = 0; attempt < 3; ++attempt) {
    // What is not cached is read first.
    std::map<std::string, std::string> attrs, sizes;
    {
      std::vector<std::string> want_ids = {"HMGET", agg::kAttributes}, want_orgs = {"HMGET", "{usage}:orgs"};
      {
        absl::MutexLock lock(&fast_mu_);
        for (const auto& id : ids) {
          auto it = attr_cache_.find(id);
          if (it == attr_cache_.end()) {
            want_ids.push_back(id);
          } else {
            attrs[id] = it->second;
          }
        }
        for (const auto& org : orgs) {
          auto it = size_cache_.find(org);
          if (it == size_cache_.end()) {
            want_orgs.push_back(org);
          } else {
            sizes[org] = it->second;
          }
        }
      }
      std::vector<std::vector<std::string>> reads;
      if (want_ids.size() > 2) reads.push_back(want_ids);
      if (want_orgs.size() > 2) reads.push_back(want_orgs);
      if (!reads.empty()) {
        LS_ASSIGN_OR_RETURN(std::vector<RedisValue> got, pool_->Pipeline(reads));
        size_t r = 0;
        absl::MutexLock lock(&fast_mu_);
        if (attr_cache_.size() > 100000) attr_cache_.clear();
        if (size_cache_.size() > 100000) size_cache_.clear();
        for (const auto* want : {&want_ids, &want_orgs}) {
          if (want->size() <= 2) continue;
          const RedisValue& v = got[r++];
          if (!v.is_array() || v.elements.size() != want->size() - 2) return false;  // FoldSteps says why
          for (size_t k = 2; k < want->size(); ++k) {
            const RedisValue& x = v.elements[k - 2];
            if (!x.is_nil() && x.type != RedisValue::Type::kString) return false;
            if (want == &want_ids) {
              attrs[(*want)[k]] = attr_cache_[(*want)[k]] = x.is_nil() ? "0" : "1" + x.str;
            } else {
              sizes[(*want)[k]] = size_cache_[(*want)[k]] = x.is_nil() ? "0" : x.str;
            }
          }
        }
      }
    }
    std::vector<std::string> keys = {"{usage}:applied", agg::kState, agg::kBuilt, agg::kAttributes, "{usage}:orgs",
                                     agg::kOrgsSeen, agg::kUnknown};
    // KEYS index by name (views of the ops' keys and of constants, which
    // outlive the step).
    absl::flat_hash_map<absl::string_view, int> key_index;
    key_index.reserve(1024);
    {
      // Views of the constants (not of `keys`, whose strings move as it grows).
      static const char* const kFixed[] = {"{usage}:applied", agg::kState,    agg::kBuilt,  agg::kAttributes,
                                           "{usage}:orgs",    agg::kOrgsSeen, agg::kUnknown};
      for (size_t k = 0; k < keys.size(); ++k) key_index[kFixed[k]] = static_cast<int>(k) + 1;
    }
    // What the step writes per key (by KEYS index - 1).
    struct Sum {
      std::string field;
      int64_t sum = 0, abs = 0;
    };
    struct PerKey {
      std::vector<Sum> counters;                 // counter hashes: few fields each
      std::vector<std::string> members;          // sets, or hashes whose fields are set to 1
      absl::flat_hash_map<std::string, int> flags;  // flags hashes: field -> flags
      int distinct = 0;                          // flags hashes: KEYS index of the counts
      char kind = 0;                             // 'c' counters, 's' set, '1' fields to 1, 'u'/'o' flags
    };
    std::vector<PerKey> per_key(keys.size());
    std::vector<int> used;  // KEYS indexes with writes, in order
    auto key = [&](absl::string_view k, char kind) -> PerKey& {
      auto [it, fresh] = key_index.try_emplace(k, static_cast<int>(keys.size()) + 1);
      if (fresh) {
        keys.emplace_back(k);
        per_key.emplace_back();
      }
      PerKey& pk = per_key[static_cast<size_t>(it->second - 1)];
      if (pk.kind == 0) {
        pk.kind = kind;
        used.push_back(it->second);
      }
      return pk;
    };
    auto index_of = [&](absl::string_view k) {
      auto [it, fresh] = key_index.try_emplace(k, static_cast<int>(keys.size()) + 1);
      if (fresh) {
        keys.emplace_back(k);
        per_key.emplace_back();
      }
      return it->second;
    };
    auto member = [](std::vector<std::string>& v, absl::string_view m) {
      for (const auto& x : v) {
        if (x == m) return;
      }
      v.emplace_back(m);
    };
    std::vector<std::string> periods, unknown;
    std::vector<std::string> markers, open_f, open_v, close_f, close_v, hdel_f;
    markers.reserve(to - from);
    bool overflow = false;
    bool kinds_ok = true;
    auto add = [&](const std::string& k, absl::string_view field, int64_t delta) {
      PerKey& pk = key(k, 'c');
      if (pk.kind != 'c') kinds_ok = false;
      Sum* s = nullptr;
      for (auto& x : pk.counters) {
        if (x.field == field) {
          s = &x;
          break;
        }
      }
      if (s == nullptr) {
        pk.counters.push_back(Sum{std::string(field)});
        s = &pk.counters.back();
      }
      s->sum += delta;
      s->abs += delta < 0 ? -delta : delta;
      if (s->abs >= kMaxAbs) overflow = true;
    };
    auto want = [&](const std::string& kf, const std::string& kd, absl::string_view scope, absl::string_view m,
                    int fl, char kind) {
      const int distinct = index_of(kd);
      PerKey& pk = key(kf, kind);
      if (pk.kind != kind) kinds_ok = false;
      pk.distinct = distinct;
      pk.flags[absl::StrCat(scope, "|", m)] |= fl;
    };
    // The attributes as the step reads them (owner, facility, category).
    auto attributes = [&](const std::string& id, std::string parts[3]) {
      const std::string& a = attrs.at(id);
      if (a == "0") return false;
      const absl::string_view v = absl::string_view(a).substr(1);
      const size_t x = v.find('\x1f');
      const size_t y = x == absl::string_view::npos ? x : v.find('\x1f', x + 1);
      if (y != absl::string_view::npos) {
        parts[0] = std::string(v.substr(0, x));
        parts[1] = std::string(v.substr(x + 1, y - x - 1));
        parts[2] = std::string(v.substr(y + 1));
      }
      return true;
    };
    std::string field, cf, ext;
    for (size_t e = from; e < to && !overflow; ++e) {
      const PreparedFold& p = prepared[e];
      markers.push_back(p.marker);
      for (const auto& op : p.ops) {
        if (op.code == "cnt") {
          // keys: d m y am ay aim aiy ip; args: id pm py counter mode org delta.
          if (op.keys.size() != 8 || op.args.size() != 7) return false;
          const std::string &id = op.args[0], &c = op.args[3], &mode = op.args[4], &org = op.args[5];
          int64_t delta = 0;
          if (!absl::SimpleAtoi(op.args[6], &delta) || delta <= -kMaxAbs || delta >= kMaxAbs) return false;
          field.clear();
          absl::StrAppend(&field, c, "|", mode, "|", org);
          cf.clear();
          absl::StrAppend(&cf, c, "|", mode);
          for (int k = 0; k < 3; ++k) add(op.keys[k], field, delta);
          add(op.keys[3], cf, delta);
          add(op.keys[4], cf, delta);
          if (c == "eff") {
            std::string at[3];
            if (!attributes(id, at)) {
              member(unknown, id);
            } else if (at[0] != org) {
              ext = "ext|" + mode;
              add(op.keys[3], ext, delta);
              add(op.keys[4], ext, delta);
            }
          }
          for (int k = 5; k < 8; ++k) {
            PerKey& pk = key(op.keys[k], '1');
            if (pk.kind != '1') kinds_ok = false;
            if (k < 7) {
              member(pk.members, id);
            } else {
              member(pk.members, op.args[1]);
              member(pk.members, op.args[2]);
            }
          }
          member(periods, op.args[1]);
          member(periods, op.args[2]);
        } else if (op.code == "srv") {
          // keys: ud um uy aum aom adm auy aoy ady; args: id mode org user before.
          int64_t before_ms = 0;
          if (op.keys.size() != 9 || op.args.size() != 5 || !absl::SimpleAtoi(op.args[4], &before_ms)) return false;
          const std::string &id = op.args[0], &mode = op.args[1], &org = op.args[2], &user = op.args[3];
          const std::string sz = OrgSizeClassOn(sizes.at(org), before_ms);
          const std::string m = absl::StrCat(mode, "|", org, "|", user, "|", sz);
          for (int k = 0; k < 3; ++k) {
            PerKey& pk = key(op.keys[k], 's');
            if (pk.kind != 's') kinds_ok = false;
            member(pk.members, m);
          }
          std::string at[3];
          if (!attributes(id, at)) member(unknown, id);
          member(key(agg::kOrgsSeen, '1').members, org);
          const bool is_ext = org != at[0];
          const int uf = 1 + (is_ext ? 2 : 0) + (sz == sme ? 4 : 0);
          const int of = uf + (sz == startup ? 8 : 0);
          const std::string si = "i:" + id;
          for (absl::string_view sc : {absl::string_view(si), absl::string_view("p")}) {
            want(op.keys[3], op.keys[5], sc, user, uf, 'u');
            want(op.keys[4], op.keys[5], sc, org, of, 'o');
          }
          const std::string scopes[] = {"o:" + at[0], "f:" + at[1], "c:" + at[2], "md:" + mode};
          for (absl::string_view sc : {absl::string_view(si), absl::string_view("p"), absl::string_view(scopes[0]),
                                       absl::string_view(scopes[1]), absl::string_view(scopes[2]),
                                       absl::string_view(scopes[3])}) {
            want(op.keys[6], op.keys[8], sc, user, uf, 'u');
            want(op.keys[7], op.keys[8], sc, org, of, 'o');
          }
        } else if (op.code == "open") {
          open_f.push_back(op.args[0]);
          open_v.push_back(op.args[1]);
        } else if (op.code == "close") {
          close_f.push_back(op.args[0]);
          close_v.push_back(op.args[1]);
        } else if (op.code == "hdel") {
          hdel_f.push_back(op.args[0]);
        } else {
          return false;
        }
      }
    }
    // A key written two ways (a counters hash that is also a set...) is
    // left to FoldSteps, which says which event fails.
    if (overflow || !kinds_ok) return false;
    const bool sessions = !open_f.empty() || !close_f.empty() || !hdel_f.empty();
    const int k_open = sessions ? index_of(kOpenSessions) : 0, k_closed = sessions ? index_of(kClosedSessions) : 0;
    std::vector<std::string> args;
    args.reserve(markers.size() * 24);
    auto count = [&](size_t n) { args.push_back(std::to_string(n)); };
    count(markers.size());
    for (auto& m : markers) args.push_back(std::move(m));
    count(ids.size());
    for (const auto& id : ids) args.push_back(id);
    for (const auto& id : ids) args.push_back(attrs.at(id));
    count(orgs.size());
    for (const auto& org : orgs) args.push_back(org);
    for (const auto& org : orgs) args.push_back(sizes.at(org));
    size_t n = 0;
    for (int k : used) n += per_key[static_cast<size_t>(k - 1)].kind == 'c';
    count(n);
    for (int k : used) {
      PerKey& pk = per_key[static_cast<size_t>(k - 1)];
      if (pk.kind != 'c') continue;
      args.push_back(std::to_string(k));
      count(pk.counters.size());
      for (auto& s : pk.counters) args.push_back(std::move(s.field));
      for (const auto& s : pk.counters) args.push_back(std::to_string(s.sum));
    }
    for (char kind : {'s', '1'}) {
      n = 0;
      for (int k : used) n += per_key[static_cast<size_t>(k - 1)].kind == kind;
      count(n);
      for (int k : used) {
        PerKey& pk = per_key[static_cast<size_t>(k - 1)];
        if (pk.kind != kind) continue;
        args.push_back(std::to_string(k));
        count(pk.members.size());
        for (auto& m : pk.members) args.push_back(std::move(m));
      }
    }
    for (auto* list : {&periods, &unknown}) {
      count(list->size());
      for (auto& x : *list) args.push_back(std::move(x));
    }
    // Flags hashes: their fields grouped by the flags wanted (the scope is
    // the field up to its last '|': members are resource names, which have none).
    n = 0;
    for (int k : used) n += per_key[static_cast<size_t>(k - 1)].kind == 'u' || per_key[static_cast<size_t>(k - 1)].kind == 'o';
    count(n);
    for (int k : used) {
      PerKey& pk = per_key[static_cast<size_t>(k - 1)];
      if (pk.kind != 'u' && pk.kind != 'o') continue;
      args.push_back(std::to_string(k));
      args.push_back(std::to_string(pk.distinct));
      args.push_back(std::string(1, pk.kind));
      std::map<int, std::vector<const std::string*>> by_flags;
      for (const auto& [f, fl] : pk.flags) by_flags[fl].push_back(&f);
      count(by_flags.size());
      for (const auto& [fl, fields] : by_flags) {
        args.push_back(std::to_string(fl));
        count(fields.size());
      }
      count(pk.flags.size());
      for (const auto& [fl, fields] : by_flags) {
        for (const std::string* f : fields) args.push_back(*f);
      }
    }
    args.push_back(std::to_string(k_open));
    args.push_back(std::to_string(k_closed));
    for (const auto& fv : {std::pair{&open_f, &open_v}, std::pair{&close_f, &close_v}}) {
      count(fv.first->size());
      for (auto& x : *fv.first) args.push_back(std::move(x));
      for (auto& x : *fv.second) args.push_back(std::move(x));
    }
    count(hdel_f.size());
    for (auto& x : hdel_f) args.push_back(std::move(x));
    if (fold_keys_hook_) fold_keys_hook_(keys);
    LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(FastFoldScript(), keys, args));
    const std::string tag = v.is_array() && !v.elements.empty() ? v.elements[0].str : "";
    if (tag == "OK") {
      ++fast_steps_;
      return true;
    }
    if (tag != "STALE") return false;
    ++fast_stale_;
    // An attribute or size class changed since it was read: read again.
    absl::MutexLock lock(&fast_mu_);
    for (const auto& id : ids) attr_cache_.erase(id);
    for (const auto& org : orgs) size_cache_.erase(org);
  }
  return false;
}

void UsageFigures::FoldSteps(std::vector<PreparedFold>* prepared, const std::vector<size_t>& index, size_t from,
                             size_t to, std::vector<absl::Status>* out) {
  // Steps of at most kMaxArgs arguments (one event is never split).
  constexpr size_t kMaxArgs = 60000;
  size_t i = from;
  bool attributes = false;  // an event changes attributes or size classes (FoldFast's cache)
  while (i < to) {
    std::vector<std::string> keys = {"{usage}:applied", agg::kState, agg::kBuilt, agg::kAttributes, "{usage}:orgs",
                                     agg::kOrgsSeen, agg::kUnknown};
    absl::flat_hash_map<std::string, int> key_index;
    for (size_t k = 0; k < keys.size(); ++k) key_index[keys[k]] = static_cast<int>(k) + 1;
    std::vector<std::string> args = {std::to_string(static_cast<int>(iv::SME)),
                                     std::to_string(static_cast<int>(iv::START_UP)), "0"};
    std::vector<size_t> sent;
    for (; i < to && (sent.empty() || args.size() < kMaxArgs); ++i) {
      PreparedFold& p = (*prepared)[i];
      for (const auto& op : p.ops) attributes = attributes || op.code == "inst" || op.code == "orgsz";
      args.push_back(p.marker);
      const size_t count_at = args.size();
      args.push_back("");
      for (auto& op : p.ops) {
        args.push_back(op.code);
        for (auto& k : op.keys) {
          auto [it, fresh] = key_index.try_emplace(k, static_cast<int>(keys.size()) + 1);
          if (fresh) keys.push_back(k);
          args.push_back(std::to_string(it->second));
        }
        for (auto& a : op.args) args.push_back(std::move(a));
      }
      args[count_at] = std::to_string(args.size() - count_at - 1);
      sent.push_back(index[i]);
    }
    args[2] = std::to_string(sent.size());
    if (fold_keys_hook_) fold_keys_hook_(keys);
    auto v = pool_->Eval(FoldScript(), keys, args);
    if (!v.ok()) {
      for (size_t j : sent) (*out)[j] = v.status();
      continue;
    }
    if (!v->is_array() || v->elements.size() != sent.size()) {
      for (size_t j : sent) {
        (*out)[j] = MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
      }
      continue;
    }
    for (size_t j = 0; j < sent.size(); ++j) {
      const std::string& r = v->elements[j].str;
      if (!r.empty() && r[0] == 'E') {
        LogError("redis script failed", {{"script", "usage fold"}, {"error", r.substr(1)}});
        (*out)[sent[j]] = MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "the figures could not be updated");
      }
    }
  }
  if (attributes) {
    absl::MutexLock lock(&fast_mu_);
    attr_cache_.clear();
    size_cache_.clear();
  }
}

// ================================================================ figures

struct UsageFigures::Partial {
  std::map<std::string, int64_t> counters;  // "eff", "inc", ... summed
};

absl::Status UsageFigures::CheckRange(const labshare::type::v1::Interval& range, absl::CivilDay* from,
                                      absl::CivilDay* to) const {
  if (!range.has_start_time() || !range.has_end_time()) return InvalidField("range", "required: whole days");
  const absl::Time s = FromProto(range.start_time()), e = FromProto(range.end_time());
  if (e <= s) return InvalidField("range", "end must be after start");
  *from = absl::ToCivilDay(s, zone_);
  *to = absl::ToCivilDay(e, zone_);
  if (absl::FromCivil(*from, zone_) != s || absl::FromCivil(*to, zone_) != e) {
    return InvalidField("range", absl::StrCat("start and end must be midnight in ", zone_.name()), "RANGE_NOT_ALIGNED");
  }
  // 100 calendar years from the start day (29 February: to 1 March).
  if (*to > absl::CivilDay(from->year() + 100, from->month(), from->day())) {
    return InvalidField("range", "more than 100 years", "RANGE_TOO_LARGE");
  }
  return absl::OkStatus();
}

bool UsageFigures::InServiceDays(const std::map<std::string, Instr>& instruments, const v1::UsageRow& row,
                                 absl::CivilDay from, absl::CivilDay to, int64_t days) const {
  if (days <= 0) return true;
  auto it = instruments.find(IdOf(row.key().instrument()));
  if (it == instruments.end()) return false;
  const Instr& x = it->second;
  // In service as for calendar_seconds: from registration until retired.
  const absl::Time created =
      x.instrument.has_create_time() ? FromProto(x.instrument.create_time()) : absl::InfinitePast();
  const absl::Time in_from = std::max(created, absl::FromCivil(from, zone_));
  const absl::Time in_to = std::min(x.RetiredAt(), absl::FromCivil(to, zone_));
  if (in_from >= in_to) return false;
  // Whole days count 1; the (at most two) partly covered ones their part.
  int64_t whole = 0;
  std::vector<std::pair<int64_t, int64_t>> parts;  // (seconds in service, seconds of the day)
  for (absl::CivilDay d = absl::ToCivilDay(in_from, zone_); d < to && whole < days; ++d) {
    const absl::Time ds = absl::FromCivil(d, zone_), de = absl::FromCivil(d + 1, zone_);
    if (ds >= in_to) break;
    const int64_t in = WholeSeconds(std::max(ds, in_from), std::min(de, in_to)), all = WholeSeconds(ds, de);
    if (in >= all) {
      ++whole;
    } else if (in > 0) {
      parts.emplace_back(in, all);
    }
  }
  if (whole >= days) return true;
  const int64_t need = days - whole;
  if (parts.empty() || need > static_cast<int64_t>(parts.size())) return false;
  if (parts.size() == 1) return parts[0].first >= need * parts[0].second;
  // a/A + b/B >= need, exactly: aB + bA >= need AB.
  const __int128 a = parts[0].first, A = parts[0].second, b = parts[1].first, B = parts[1].second;
  return a * B + b * A >= static_cast<__int128>(need) * A * B;
}

absl::Status UsageFigures::Scope(const Principal& p, const v1::UsageFilter& f) const {
  if (!p.HasAnyRole({Role::kAuditor, Role::kConsortiumAdmin})) {
    // A token without an organisation has no own organisation to name ("" is
    // no organisation: not the empty name named).
    const std::string own = ActorOrganization(p);
    const bool owner_scope = !own.empty() && f.owner_organizations_size() == 1 && f.owner_organizations(0) == own;
    const bool user_scope = !own.empty() && f.user_organizations_size() == 1 && f.user_organizations(0) == own;
    if (!owner_scope && !(user_scope && p.HasRole(Role::kMemberBillingAdmin))) {
      return MakeError(absl::StatusCode::kPermissionDenied, "ORGANIZATION_SCOPE",
                       "name exactly your own organisation in filter.owner_organizations"
                       " (or, as billing admin, filter.user_organizations)");
    }
  }
  // The names (INVALID_NAME) are checked after the method's other fields
  // (CheckFilterNames).
  return absl::OkStatus();
}

const UsageFigures::Instr::Versions& UsageFigures::Instr::versions() const {
  static const Versions* const kNone = new Versions();
  return history ? *history : *kNone;
}

std::vector<std::pair<absl::Time, absl::Time>> UsageFigures::Instr::StateIntervals(int state) const {
  const Versions& versions = this->versions();
  std::vector<std::pair<absl::Time, absl::Time>> out;
  if (versions.empty()) {
    if (instrument.state() == state && instrument.has_update_time()) {
      out.emplace_back(FromProto(instrument.update_time()), absl::InfiniteFuture());
    }
    return out;
  }
  for (size_t i = 0; i < versions.size(); ++i) {
    if (versions[i].second.state() != state) continue;
    const absl::Time end = i + 1 < versions.size() ? versions[i + 1].first : absl::InfiniteFuture();
    if (!out.empty() && out.back().second == versions[i].first) {
      out.back().second = end;  // consecutive versions in the state (another attribute changed)
    } else {
      out.emplace_back(versions[i].first, end);
    }
  }
  return out;
}

absl::Time UsageFigures::Instr::RetiredAt() const {
  const Versions& versions = this->versions();
  if (versions.empty()) {
    if (instrument.state() != iv::RETIRED) return absl::InfiniteFuture();
    return instrument.has_update_time() ? FromProto(instrument.update_time()) : absl::InfiniteFuture();
  }
  // From the history, not the latest record (which an older version folded
  // late may once have overwritten): retired when its last version is; since
  // the first version of that last run of RETIRED ones (later changes of a
  // retired instrument, e.g. a new facility operator, move its update_time,
  // not its retirement).
  if (versions.back().second.state() != iv::RETIRED) return absl::InfiniteFuture();
  size_t first = versions.size() - 1;
  while (first > 0 && versions[first - 1].second.state() == iv::RETIRED) --first;
  return versions[first].first;
}

const labshare::inventory::v1::Instrument* UsageFigures::Instr::VersionAt(absl::Time t) const {
  const Versions& versions = this->versions();
  if (versions.empty()) return &instrument;
  // The last one in effect at or before t (binary search: histories grow).
  auto after = std::upper_bound(versions.begin(), versions.end(), t,
                                [](absl::Time x, const auto& v) { return x < v.first; });
  return after == versions.begin() ? &versions.front().second : &std::prev(after)->second;
}

absl::StatusOr<std::map<std::string, UsageFigures::Instr>> UsageFigures::Instruments(const v1::UsageFilter& f,
                                                                                     bool history) const {
  // The writers of the versions first: versions read after them are at
  // least as new, so a cached parse is never newer than its writer says.
  LS_ASSIGN_OR_RETURN(auto first, pool_->Pipeline({{"HGETALL", "{usage}:instr"}, {"HGETALL", kVersionsWrittenBy}}));
  const RedisValue& all = first[0];
  std::map<absl::string_view, absl::string_view> written_by;
  for (size_t i = 0; i + 1 < first[1].elements.size(); i += 2) {
    written_by.emplace(first[1].elements[i].str, first[1].elements[i + 1].str);
  }
  auto in = [](const auto& list, const std::string& v) {
    return list.empty() || std::find(list.begin(), list.end(), v) != list.end();
  };
  std::map<std::string, Instr> out;
  for (size_t i = 0; i + 1 < all.elements.size(); i += 2) {
    Instr x;
    if (!x.instrument.ParseFromString(all.elements[i + 1].str)) continue;
    const auto& ins = x.instrument;
    if (!in(f.instruments(), ins.name()) ||
        (!history && (!in(f.owner_organizations(), ins.owner_organization()) || !in(f.facilities(), ins.facility()) ||
                      !in(f.categories(), ins.category())))) {
      continue;
    }
    out.emplace(all.elements[i].str, std::move(x));
  }
  // Versions parsed before whose writer is unchanged (none when it is not
  // recorded: versions written before it was, or seeded).
  std::vector<bool> reread(out.size(), false);
  if (history) {
    absl::MutexLock lock(&versions_mu_);
    size_t k = 0;
    for (auto& [id, x] : out) {
      auto w = written_by.find(id);
      auto c = versions_cache_.find(id);
      if (w != written_by.end() && c != versions_cache_.end() && c->second.written_by == w->second) {
        x.history = c->second.versions;
      } else {
        reread[k] = true;
      }
      ++k;
    }
  }
  // Maintenance windows (and versions not cached) of all of them in one
  // round trip.
  std::vector<std::vector<std::string>> cmds;
  size_t k = 0;
  for (const auto& [id, x] : out) {
    cmds.push_back({"HVALS", "{usage}:mw:" + id});
    if (reread[k++]) cmds.push_back({"HGETALL", kVersionsPrefix + id});
  }
  if (cmds.empty()) return out;
  LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(cmds));
  size_t i = 0;
  k = 0;
  for (auto& [id, x] : out) {
    const RedisValue& windows = replies[i++];
    if (reread[k++]) {
      const RedisValue& h = replies[i++];
      auto versions = std::make_shared<Instr::Versions>();
      for (size_t j = 0; j + 1 < h.elements.size(); j += 2) {
        int64_t ms = 0;
        iv::Instrument v;
        if (absl::SimpleAtoi(h.elements[j].str, &ms) && v.ParseFromString(h.elements[j + 1].str)) {
          versions->emplace_back(absl::FromUnixMillis(ms), std::move(v));
        }
      }
      std::sort(versions->begin(), versions->end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      x.history = versions;
      if (auto w = written_by.find(id); w != written_by.end()) {
        absl::MutexLock lock(&versions_mu_);
        versions_cache_[id] = CachedVersions{std::string(w->second), std::move(versions)};
      }
    }
    for (const auto& v : windows.elements) {
      std::vector<absl::string_view> se = absl::StrSplit(v.str, '|');
      int64_t s = 0, e = 0;
      if (se.size() == 2 && absl::SimpleAtoi(se[0], &s) && absl::SimpleAtoi(se[1], &e)) {
        x.windows.emplace_back(absl::FromUnixMillis(s), absl::FromUnixMillis(e));
      }
    }
  }
  return out;
}

v1::ComputationInfo UsageFigures::Info(absl::Time range_end) const {
  v1::ComputationInfo info;
  const absl::Time now = clock_->Now();
  *info.mutable_computed_time() = ToProto(now);
  info.set_time_zone(zone_.name());
  info.set_currency_code(currency_);
  info.set_provisional(range_end > now);
  return info;
}

namespace {

// The counters of the hashes, by index.
enum Counter { kEff, kBk, kDone, kMiss, kLate, kCanc, kOut, kRej, kInc, kPen, kSub, kInk, kExt, kCounters };
int CounterIndex(absl::string_view name) {
  static const char* const kNames[] = {"eff", "bk", "done", "miss", "late", "canc",
                                       "out", "rej", "inc", "pen", "sub", "ink"};
  for (int i = 0; i < kExt; ++i) {
    if (name == kNames[i]) return i;
  }
  return -1;
}

}  // namespace

absl::StatusOr<std::vector<v1::UsageRow>> UsageFigures::Compute(absl::CivilDay from, absl::CivilDay to,
                                                                v1::PeriodGranularity granularity,
                                                                const std::vector<v1::Dimension>& dims,
                                                                const v1::UsageFilter& f, bool owner_view) const {
  LS_ASSIGN_OR_RETURN(auto rows, ComputeMany(from, to, granularity, {dims}, f, owner_view));
  return std::move(rows[0]);
}

absl::StatusOr<std::vector<std::vector<v1::UsageRow>>> UsageFigures::ComputeMany(
    absl::CivilDay from, absl::CivilDay to, v1::PeriodGranularity granularity, const Groupings& groupings,
    const v1::UsageFilter& f, bool owner_view, const BucketFn* per_bucket) const {
  // gen and epoch before the instruments' attributes: the aggregates are used
  // only when neither changed until they are read (no old instrument list
  // mixed with aggregates rebuilt for new attributes).
  LS_ASSIGN_OR_RETURN(auto before, pool_->Pipeline({{"HGET", agg::kState, "gen"}, {"HGET", agg::kState, "epoch"}}));
  const std::string gen_before = before[0].is_nil() ? "0" : before[0].str;
  const std::string epoch_before = before[1].is_nil() ? "0" : before[1].str;
  LS_ASSIGN_OR_RETURN(auto instruments, Instruments(f, /*history=*/true));
  LS_ASSIGN_OR_RETURN(auto open_sessions, OpenSessions(clock_->Now()));
  // Instrument-side filters, applied to the version of each stretch.
  auto in = [](const auto& list, const std::string& v) {
    return list.empty() || std::find(list.begin(), list.end(), v) != list.end();
  };
  auto matches = [&](const iv::Instrument& v) {
    return in(f.owner_organizations(), v.owner_organization()) && in(f.facilities(), v.facility()) &&
           in(f.categories(), v.category());
  };
  LS_ASSIGN_OR_RETURN(RedisValue orgs_raw, pool_->Command({"HGETALL", "{usage}:orgs"}));
  // The current class (members folded before the class was recorded in
  // them) and the history (open sessions, by day).
  std::map<std::string, int, std::less<>> size_class;
  std::map<std::string, std::string, std::less<>> size_history;
  for (size_t i = 0; i + 1 < orgs_raw.elements.size(); i += 2) {
    const std::string& raw = orgs_raw.elements[i + 1].str;
    int v = 0;
    if (absl::SimpleAtoi(raw.substr(0, raw.find('|')), &v)) size_class[orgs_raw.elements[i].str] = v;
    size_history[orgs_raw.elements[i].str] = raw;
  }
  auto user_ok = [&](int mode, absl::string_view org) {
    if (!f.modes().empty() && std::find(f.modes().begin(), f.modes().end(), mode) == f.modes().end()) return false;
    return f.user_organizations().empty() ||
           std::find(f.user_organizations().begin(), f.user_organizations().end(), org) != f.user_organizations().end();
  };
  // Buckets.
  std::vector<std::pair<absl::CivilDay, absl::CivilDay>> buckets;
  for (absl::CivilDay d = from; d < to;) {
    absl::CivilDay next = to;
    if (granularity == v1::PERIOD_GRANULARITY_DAY) next = d + 1;
    if (granularity == v1::PERIOD_GRANULARITY_MONTH) next = absl::CivilDay(absl::CivilMonth(d) + 1);
    if (granularity == v1::PERIOD_GRANULARITY_YEAR) next = absl::CivilDay(absl::CivilYear(d) + 1);
    next = std::min(next, to);
    buckets.emplace_back(d, next);
    d = next;
  }
  // One instrument in one bucket: capacity, counters and served members, read
  // once and then aggregated into every grouping.
  struct Cell {
    int mode = 0;
    std::string org;
    int64_t c[kCounters] = {};
    std::map<std::string, int64_t> other;  // other_currency_income by currency code
    std::vector<std::pair<std::string, int>> users;  // served users, size class of the organisation then
  };
  // One stretch of days of the bucket in which the instrument's attributes
  // stayed the same (usually the whole bucket): ins is the version in force.
  struct Loaded {
    const std::string* id = nullptr;
    const labshare::inventory::v1::Instrument* ins = nullptr;
    int64_t calendar = 0, maintenance = 0, available = 0;
    bool value_known = false;
    absl::Time from, to;  // the stretch's days: open sessions count the part inside
    bool in_set = false;  // the last stretch and in service: in the row's instrument set (capacity, value, count)
    bool whole = true;    // the only stretch, with the attributes the aggregates were built for
    size_t nparts = 0;    // counter hashes read (then one SUNION)
    std::map<std::pair<int, std::string>, Cell> cells;  // by (mode, user org), filtered
  };
  // The instrument set of one instrument-side key: shared by every row of
  // that key, whatever its user-side keys.
  struct Set {
    std::set<absl::string_view> instruments;
    int64_t calendar = 0, maintenance = 0, available = 0, original_value = 0, without_value = 0;
  };
  struct Acc {
    v1::UsageGroupKey key;
    std::string ikey;  // its instrument-side key (Set)
    int64_t c[kCounters] = {};
    int64_t valued_income = 0;  // service income of the instruments with a known value (revenue_rate)
    std::map<std::string, int64_t> other;  // other_currency_income by currency code
    std::set<absl::string_view> users, ext_users, sme_users, orgs, ext_orgs, sme_orgs, startup_orgs;
  };
  std::vector<std::vector<v1::UsageRow>> all_rows(groupings.size());
  for (const auto& [bfrom, bto] : buckets) {
    const absl::Time bstart = absl::FromCivil(bfrom, zone_), bend = absl::FromCivil(bto, zone_);
    // Hash and set keys of [from, to): whole years from year hashes, whole
    // months from month hashes, the rest from days.
    auto parts_of = [](absl::CivilDay from, absl::CivilDay to) {
      std::vector<std::pair<char, std::string>> parts;  // ('y', 'm' or 'd', suffix)
      for (absl::CivilDay d = from; d < to;) {
        const absl::CivilYear y(d);
        const absl::CivilMonth m(d);
        if (absl::CivilDay(y) == d && absl::CivilDay(y + 1) <= to) {
          parts.emplace_back('y', absl::StrFormat("%04d", y.year()));
          d = absl::CivilDay(y + 1);
        } else if (absl::CivilDay(m) == d && absl::CivilDay(m + 1) <= to) {
          parts.emplace_back('m', absl::StrFormat("%04d%02d", m.year(), m.month()));
          d = absl::CivilDay(m + 1);
        } else {
          parts.emplace_back('d', absl::StrFormat("%04d%02d%02d", d.year(), d.month(), d.day()));
          d = d + 1;
        }
      }
      return parts;
    };
    std::vector<Loaded> loaded;
    std::vector<std::vector<std::string>> cmds;
    // The bucket's day boundaries, shared by every instrument's capacity.
    std::vector<absl::Time> day_starts;
    for (absl::CivilDay d = bfrom; d <= bto; ++d) day_starts.push_back(absl::FromCivil(d, zone_));
    for (const auto& [id, x] : instruments) {
      const auto& ins = x.instrument;
      const absl::Time created = ins.has_create_time() ? FromProto(ins.create_time()) : absl::InfinitePast();
      const absl::Time in_from = std::max(created, bstart), in_to = std::min(x.RetiredAt(), bend);
      // Not in service in this bucket: no capacity and not in any instrument
      // set, but its use and postings (a late correction) still count.
      const bool in_service = in_from < in_to;
      // The version in force at the start of each day of the bucket, as
      // stretches of days: use counts with the attributes of its stretch
      // ("as of the time of use"), the instrument set with those of the
      // last ("as of the end of the period").
      // A stretch ends where owner, facility or category change (other
      // changes, e.g. of state, do not split it).
      // Only the first day and the first days of versions can start one.
      std::vector<absl::CivilDay> starts = {bfrom};
      for (const auto& [t, v] : x.versions()) {
        absl::CivilDay d = absl::ToCivilDay(t, zone_);
        if (absl::FromCivil(d, zone_) < t) ++d;
        if (d > bfrom && d < bto && d != starts.back()) starts.push_back(d);
      }
      std::vector<std::pair<absl::CivilDay, const iv::Instrument*>> stretches;
      std::string last_attributes;
      for (absl::CivilDay d : starts) {
        const iv::Instrument* v = x.VersionAt(day_starts[d - bfrom]);
        std::string a = agg::Attributes(*v);
        if (stretches.empty() || a != last_attributes) stretches.emplace_back(d, v);
        last_attributes = std::move(a);
      }
      // The version of the bucket's last day: the instrument set's (value too).
      const iv::Instrument& end_version = *x.VersionAt(day_starts[bto - bfrom - 1]);
      for (size_t si = 0; si < stretches.size(); ++si) {
        const bool last = si + 1 == stretches.size();
        const iv::Instrument& version = last ? end_version : *stretches[si].second;
        if (!matches(version)) continue;
        const absl::CivilDay sfrom = stretches[si].first;
        const absl::CivilDay sto = last ? bto : stretches[si + 1].first;
        Loaded l;
        l.id = &id;
        l.ins = &version;
        l.from = day_starts[sfrom - bfrom];
        l.to = day_starts[sto - bfrom];
        l.in_set = last && in_service;
        l.whole = stretches.size() == 1 && last_attributes == agg::Attributes(ins);
        l.value_known = end_version.has_original_value() && end_version.original_value().currency_code() == currency_;
        std::vector<std::string> sunion = {"SUNION"};
        for (const auto& [kind, suffix] : parts_of(sfrom, sto)) {
          cmds.push_back({"HGETALL", absl::StrCat("{usage}:", std::string(1, kind), ":", id, ":", suffix)});
          sunion.push_back(absl::StrCat("{usage}:u", std::string(1, kind), ":", id, ":", suffix));
          ++l.nparts;
        }
        cmds.push_back(std::move(sunion));
        if (l.in_set) {
          const auto maintenance_states = x.StateIntervals(iv::MAINTENANCE);
          // Capacity of this instrument in the bucket.
          for (size_t k = 0; k + 1 < day_starts.size(); ++k) {
            const absl::Time ds = std::max(in_from, day_starts[k]);
            const absl::Time de = std::min(in_to, day_starts[k + 1]);
            if (ds >= de) continue;  // outside [in_from, in_to)
            const int64_t secs = WholeSeconds(ds, de);
            // Union of the windows and the time in state MAINTENANCE inside [ds, de).
            std::vector<std::pair<absl::Time, absl::Time>> cut;
            for (const auto* list : {&x.windows, &maintenance_states}) {
              for (const auto& [ws, we] : *list) {
                if (ws < de && ds < we) cut.emplace_back(std::max(ws, ds), std::min(we, de));
              }
            }
            std::sort(cut.begin(), cut.end());
            int64_t m = 0;
            absl::Time reach = absl::InfinitePast();
            for (const auto& [s, e] : cut) {
              const absl::Time s2 = std::max(s, reach);
              if (e > s2) m += WholeSeconds(s2, e);
              reach = std::max(reach, e);
            }
            l.calendar += secs;
            l.maintenance += m;
            // daily_available_hours in force at the start of the day.
            const iv::Instrument& day_version = *x.VersionAt(day_starts[k]);
            const int hours = day_version.daily_available_hours() > 0 ? day_version.daily_available_hours() : 24;
            l.available += (secs - m) * hours / 24;
          }
        }
        loaded.push_back(std::move(l));
      }
    }
    // From the aggregates when they answer this bucket exactly: a whole
    // month or year, no user-side filter, groupings by instrument (any
    // instrument filter), or, unfiltered, the platform, and for years the
    // owner, facility, category or mode; and aggregates exact for the current
    // attributes (built == gen) to which only instruments loaded for the
    // bucket (matching the filter, in service or not) contributed.
    std::map<std::string, int64_t, std::less<>> distinct;  // "<scope>|<name>" -> count
    // Open sessions of the bucket's instruments that count in it (time in
    // use so far, or a completed booking by its reserved start): not in the
    // aggregates, so such a bucket is computed from the counters.
    bool open_here = false;
    for (const Loaded& l : loaded) {
      auto it = open_sessions.find(*l.id);
      if (it == open_sessions.end()) continue;
      for (const OpenSession& o : it->second) {
        if ((o.start < bend && bstart < o.end) || (bstart <= o.reserved_start && o.reserved_start < bend)) {
          open_here = true;
        }
      }
    }
    // The aggregates hold an instrument's use under its current attributes:
    // only buckets in which no instrument's attributes differ from them.
    const bool current_attributes =
        std::all_of(loaded.begin(), loaded.end(), [](const Loaded& l) { return l.whole; });
    bool fast = false;
    if (use_aggregates_ && !open_here && current_attributes && f.user_organizations().empty() &&
        f.modes().empty()) {
      std::string period;
      bool full = false;
      if (absl::CivilDay(absl::CivilYear(bfrom)) == bfrom && absl::CivilDay(absl::CivilYear(bfrom) + 1) == bto) {
        period = agg::YearPeriod(absl::CivilYear(bfrom));
        full = true;
      } else if (absl::CivilDay(absl::CivilMonth(bfrom)) == bfrom &&
                 absl::CivilDay(absl::CivilMonth(bfrom) + 1) == bto) {
        period = agg::MonthPeriod(absl::CivilMonth(bfrom));
      }
      const bool filtered = !f.instruments().empty() || !f.owner_organizations().empty() ||
                            !f.facilities().empty() || !f.categories().empty();
      bool supported = !period.empty();
      bool cross = false;  // a grouping whose rows span instruments
      for (const auto& dims : groupings) {
        if (dims.size() == 1 && dims[0] == v1::DIMENSION_INSTRUMENT) continue;
        cross = true;
        const bool ok = dims.empty() || (full && dims.size() == 1 &&
                                         (dims[0] == v1::DIMENSION_OWNER_ORGANIZATION ||
                                          dims[0] == v1::DIMENSION_FACILITY || dims[0] == v1::DIMENSION_CATEGORY ||
                                          dims[0] == v1::DIMENSION_SHARING_MODE));
        if (!ok || filtered) supported = false;
      }
      if (supported) {
        std::vector<std::vector<std::string>> fast_cmds = {{"HGET", agg::kState, "gen"},
                                                           {"HGET", agg::kBuilt, period},
                                                           {"HKEYS", agg::ContributorsKey(period)},
                                                           {"HGETALL", agg::DistinctKey(period)},
                                                           {"HGET", agg::kState, "epoch"}};
        for (const Loaded& l : loaded) fast_cmds.push_back({"HGETALL", agg::InstrumentKey(*l.id, period)});
        // A pipeline is not atomic: a rebuild's start step (which empties the
        // aggregates) may run between its commands. Every move of built away
        // from gen changes gen or epoch in the same step, so gen, built and
        // epoch read again after the aggregates and found unchanged prove
        // the aggregates read were the exact ones.
        const size_t after = fast_cmds.size();
        fast_cmds.push_back({"HGET", agg::kState, "gen"});
        fast_cmds.push_back({"HGET", agg::kBuilt, period});
        fast_cmds.push_back({"HGET", agg::kState, "epoch"});
        LS_ASSIGN_OR_RETURN(auto fr, pool_->Pipeline(fast_cmds));
        const std::string gen = fr[0].is_nil() ? "0" : fr[0].str;
        const std::string epoch = fr[4].is_nil() ? "0" : fr[4].str;
        auto same = [](const RedisValue& a, const RedisValue& b) { return a.is_nil() == b.is_nil() && a.str == b.str; };
        bool valid = !fr[1].is_nil() && fr[1].str == gen && gen == gen_before && epoch == epoch_before &&
                     same(fr[0], fr[after]) && same(fr[1], fr[after + 1]) && same(fr[4], fr[after + 2]);
        if (valid && cross) {
          std::set<absl::string_view> ids;
          for (const Loaded& l : loaded) ids.insert(*l.id);
          for (const auto& id : fr[2].elements) {
            if (ids.count(id.str) == 0) valid = false;
          }
        }
        if (valid) {
          fast = true;
          ++buckets_from_aggregates_;
          for (size_t j = 0; j + 1 < fr[3].elements.size(); j += 2) {
            int64_t v = 0;
            if (absl::SimpleAtoi(fr[3].elements[j + 1].str, &v)) distinct[fr[3].elements[j].str] = v;
          }
          for (size_t i = 0; i < loaded.size(); ++i) {
            const RedisValue& h = fr[5 + i];
            for (size_t j = 0; j + 1 < h.elements.size(); j += 2) {
              const std::string& field = h.elements[j].str;
              const size_t bar = field.find('|');
              int mode = 0;
              int64_t v = 0;
              if (bar == std::string::npos || !absl::SimpleAtoi(absl::string_view(field).substr(bar + 1), &mode) ||
                  !absl::SimpleAtoi(h.elements[j + 1].str, &v)) {
                continue;
              }
              const absl::string_view name = absl::string_view(field).substr(0, bar);
              Cell& cell = loaded[i].cells[{mode, std::string()}];
              std::string code;
              if (name == "ext") {
                cell.c[kExt] += v;
              } else if (const int counter = CounterIndex(name); counter >= 0) {
                cell.c[counter] += v;
              } else if (OtherCurrencyOf(name, &code)) {
                cell.other[code] += v;
              }
            }
          }
        }
      }
    }
    // Every instrument's counters of the bucket in one round trip.
    std::vector<RedisValue> replies;
    if (!cmds.empty() && !fast) {
      LS_ASSIGN_OR_RETURN(replies, pool_->Pipeline(cmds));
    }
    size_t r = 0;
    for (Loaded& l : loaded) {
      if (fast) break;
      for (size_t p = 0; p < l.nparts; ++p) {
        const RedisValue& h = replies[r++];
        for (size_t j = 0; j + 1 < h.elements.size(); j += 2) {
          std::vector<absl::string_view> fp = absl::StrSplit(h.elements[j].str, '|');
          int mode = 0;
          int64_t v = 0;
          if (fp.size() != 3 || !absl::SimpleAtoi(fp[1], &mode) || !absl::SimpleAtoi(h.elements[j + 1].str, &v)) {
            continue;
          }
          const int counter = CounterIndex(fp[0]);
          std::string code;
          if (counter < 0 && OtherCurrencyOf(fp[0], &code) && user_ok(mode, fp[2])) {
            l.cells[{mode, std::string(fp[2])}].other[code] += v;
            continue;
          }
          if (counter < 0 || !user_ok(mode, fp[2])) continue;
          Cell& cell = l.cells[{mode, std::string(fp[2])}];
          cell.c[counter] += v;
          if (counter == kEff && fp[2] != l.ins->owner_organization()) cell.c[kExt] += v;
        }
      }
      for (const auto& m : replies[r++].elements) {
        std::vector<absl::string_view> fp = absl::StrSplit(m.str, absl::MaxSplits('|', 2));
        int mode = 0;
        if (fp.size() != 3 || !absl::SimpleAtoi(fp[0], &mode) || !user_ok(mode, fp[1])) continue;
        // "<user>|<size class at the time of use>" (without the size:
        // folded before it was recorded; the size class now).
        absl::string_view user = fp[2];
        int sc = 0;
        const size_t bar = user.rfind('|');
        if (bar != absl::string_view::npos && absl::SimpleAtoi(user.substr(bar + 1), &sc)) {
          user = user.substr(0, bar);
        } else {
          auto it = size_class.find(fp[1]);
          sc = it == size_class.end() ? 0 : it->second;
        }
        l.cells[{mode, std::string(fp[1])}].users.emplace_back(std::string(user), sc);
      }
      // Open sessions: a use record up to the computation time ("Use
      // record"), split by day like a closed one (LEASE days capped), each
      // day in the stretch holding it, with that stretch's attributes and
      // owner (a closed session's days are counted in their day hashes,
      // which every stretch reads for its own days); the completed booking
      // in the stretch of the day of its reserved start.
      auto open = open_here ? open_sessions.find(*l.id) : open_sessions.end();
      if (open == open_sessions.end()) continue;
      for (const OpenSession& o : open->second) {
        if (!user_ok(o.mode, o.org)) continue;
        const bool done = l.from <= o.reserved_start && o.reserved_start < l.to;
        int64_t eff = 0;
        std::vector<absl::CivilDay> used_days;
        for (const auto& [day, seconds] : SplitByDay(std::max(o.start, l.from), std::min(o.end, l.to), zone_)) {
          eff += std::min(seconds, o.cap);
          if (std::min(seconds, o.cap) > 0) used_days.push_back(day);
        }
        if (!done && eff <= 0) continue;
        Cell& cell = l.cells[{o.mode, o.org}];
        cell.c[kDone] += done ? 1 : 0;
        if (eff <= 0) continue;
        cell.c[kEff] += eff;
        if (o.org != l.ins->owner_organization()) cell.c[kExt] += eff;
        // The organisation's size class on each day of use.
        auto hist = size_history.find(o.org);
        std::set<int> classes;
        for (const absl::CivilDay day : used_days) {
          int sc = 0;
          if (hist != size_history.end() &&
              !absl::SimpleAtoi(OrgSizeClassOn(hist->second, absl::ToUnixMillis(absl::FromCivil(day + 1, zone_))),
                                &sc)) {
            sc = 0;
          }
          classes.insert(sc);
        }
        for (int sc : classes) cell.users.emplace_back(o.user, sc);
      }
    }
    std::vector<std::vector<v1::UsageRow>> bucket_rows(groupings.size());
    for (size_t g = 0; g < groupings.size(); ++g) {
      const auto& dims = groupings[g];
      auto has = [&](v1::Dimension d) { return std::find(dims.begin(), dims.end(), d) != dims.end(); };
      const bool user_dims = has(v1::DIMENSION_USER_ORGANIZATION) || has(v1::DIMENSION_SHARING_MODE);
      std::map<std::string, Acc> accs;  // by key
      std::map<std::string, Set> sets;  // by instrument-side key
      for (const Loaded& l : loaded) {
        const auto& ins = *l.ins;
        std::string ikey_str;
        v1::UsageGroupKey ikey;
        if (has(v1::DIMENSION_INSTRUMENT)) ikey.set_instrument(ins.name());
        if (has(v1::DIMENSION_OWNER_ORGANIZATION)) ikey.set_owner_organization(ins.owner_organization());
        if (has(v1::DIMENSION_FACILITY)) ikey.set_facility(ins.facility());
        if (has(v1::DIMENSION_CATEGORY)) ikey.set_category(ins.category());
        ikey_str = absl::StrCat(ikey.instrument(), "\x1f", ikey.owner_organization(), "\x1f", ikey.facility(), "\x1f",
                                ikey.category());
        if (l.in_set) {
          Set& set = sets[ikey_str];
          if (set.instruments.insert(*l.id).second) {
            set.calendar += l.calendar;
            set.maintenance += l.maintenance;
            set.available += l.available;
            if (l.value_known) {
              set.original_value += ins.original_value().amount_minor();
            } else {
              ++set.without_value;
            }
          }
        }
        auto row_for = [&](int mode, const std::string& org) -> Acc& {
          std::string k = ikey_str;
          if (has(v1::DIMENSION_USER_ORGANIZATION)) absl::StrAppend(&k, "\x1f", org);
          if (has(v1::DIMENSION_SHARING_MODE)) absl::StrAppend(&k, "\x1f", mode);
          auto [it, fresh] = accs.try_emplace(std::move(k));
          Acc& a = it->second;
          if (fresh) {
            a.key = ikey;
            a.ikey = ikey_str;
            if (has(v1::DIMENSION_USER_ORGANIZATION)) a.key.set_user_organization(org);
            if (has(v1::DIMENSION_SHARING_MODE)) a.key.set_mode(static_cast<SharingMode>(mode));
          }
          return a;
        };
        if (!user_dims && l.in_set) row_for(0, "");
        for (const auto& [mo, cell] : l.cells) {
          const auto& [mode, org] = mo;
          Acc& a = row_for(mode, org);
          for (int i = 0; i < kCounters; ++i) a.c[i] += cell.c[i];
          for (const auto& [code, v] : cell.other) a.other[code] += v;
          if (l.value_known) a.valued_income += cell.c[kInc];
          if (cell.users.empty()) continue;
          const bool external = org != ins.owner_organization();
          // SME and start-up by the size class at the time of each use.
          for (const auto& [user, sc] : cell.users) {
            a.users.insert(user);
            if (external) a.ext_users.insert(user);
            if (sc == iv::SME) a.sme_users.insert(user);
            if (sc == iv::SME) a.sme_orgs.insert(org);
            if (sc == iv::START_UP) a.startup_orgs.insert(org);
          }
          a.orgs.insert(org);
          if (external) a.ext_orgs.insert(org);
        }
      }
      for (auto& [k, a] : accs) {
        v1::UsageRow row;
        *row.mutable_period()->mutable_start_time() = ToProto(bstart);
        *row.mutable_period()->mutable_end_time() = ToProto(bend);
        const bool whole = granularity == v1::PERIOD_GRANULARITY_RANGE || granularity == 0 ||
                           (granularity == v1::PERIOD_GRANULARITY_DAY) ||
                           (granularity == v1::PERIOD_GRANULARITY_MONTH &&
                            absl::CivilDay(absl::CivilMonth(bfrom)) == bfrom &&
                            absl::CivilDay(absl::CivilMonth(bfrom) + 1) == bto) ||
                           (granularity == v1::PERIOD_GRANULARITY_YEAR &&
                            absl::CivilDay(absl::CivilYear(bfrom)) == bfrom &&
                            absl::CivilDay(absl::CivilYear(bfrom) + 1) == bto);
        row.set_partial_period(!whole);
        *row.mutable_key() = a.key;
        v1::UsageFigures& fig = *row.mutable_figures();
        fig.set_effective_seconds(a.c[kEff]);
        fig.set_external_seconds(a.c[kExt]);
        if (owner_view) {
          static const Set kNone;
          auto set_it = sets.find(a.ikey);
          const Set& set = set_it == sets.end() ? kNone : set_it->second;
          fig.set_calendar_seconds(set.calendar);
          fig.set_maintenance_seconds(set.maintenance);
          fig.set_available_seconds(set.available);
          *fig.mutable_utilization() = MakeRatio(a.c[kEff], set.available);
          *fig.mutable_revenue_rate() = MakeRatio(a.valued_income, set.original_value);
          fig.mutable_original_value()->set_currency_code(currency_);
          fig.mutable_original_value()->set_amount_minor(set.original_value);
          fig.set_instrument_count(static_cast<int64_t>(set.instruments.size()));
          fig.set_instruments_without_value(set.without_value);
        }
        *fig.mutable_sharing_rate() = MakeRatio(a.c[kExt], a.c[kEff]);
        auto money = [&](labshare::type::v1::Money* m, int64_t v) {
          m->set_currency_code(currency_);
          m->set_amount_minor(v);
        };
        money(fig.mutable_service_income(), a.c[kInc]);
        money(fig.mutable_penalty_income(), a.c[kPen]);
        money(fig.mutable_subsidized_income(), a.c[kSub]);
        money(fig.mutable_in_kind_contribution(), a.c[kInk]);
        for (const auto& [code, v] : a.other) {  // by currency code
          if (v == 0) continue;
          labshare::type::v1::Money* m = fig.add_other_currency_income();
          m->set_currency_code(code);
          m->set_amount_minor(v);
        }
        fig.set_bookings(a.c[kBk]);
        fig.set_completed_bookings(a.c[kDone]);
        fig.set_missed_bookings(a.c[kMiss]);
        fig.set_late_cancelled_bookings(a.c[kLate]);
        fig.set_cancelled_bookings(a.c[kCanc]);
        fig.set_outage_cancelled_bookings(a.c[kOut]);
        fig.set_rejected_requests(a.c[kRej]);
        if (fast) {
          // The row's scope in the aggregates.
          std::string scope = "p";
          if (!dims.empty()) {
            switch (dims[0]) {
              case v1::DIMENSION_INSTRUMENT: scope = "i:" + IdOf(a.key.instrument()); break;
              case v1::DIMENSION_OWNER_ORGANIZATION: scope = "o:" + a.key.owner_organization(); break;
              case v1::DIMENSION_FACILITY: scope = "f:" + a.key.facility(); break;
              case v1::DIMENSION_CATEGORY: scope = "c:" + a.key.category(); break;
              default: scope = absl::StrCat("md:", static_cast<int>(a.key.mode())); break;
            }
          }
          auto count = [&](const char* name) {
            auto it = distinct.find(absl::StrCat(scope, "|", name));
            return it == distinct.end() ? int64_t{0} : it->second;
          };
          fig.set_users_served(count("users"));
          fig.set_external_users_served(count("ext_users"));
          fig.set_sme_users_served(count("sme_users"));
          fig.set_organizations_served(count("orgs"));
          fig.set_external_organizations_served(count("ext_orgs"));
          fig.set_sme_organizations_served(count("sme_orgs"));
          fig.set_startup_organizations_served(count("startup_orgs"));
        } else {
          fig.set_users_served(static_cast<int64_t>(a.users.size()));
          fig.set_external_users_served(static_cast<int64_t>(a.ext_users.size()));
          fig.set_sme_users_served(static_cast<int64_t>(a.sme_users.size()));
          fig.set_organizations_served(static_cast<int64_t>(a.orgs.size()));
          fig.set_external_organizations_served(static_cast<int64_t>(a.ext_orgs.size()));
          fig.set_sme_organizations_served(static_cast<int64_t>(a.sme_orgs.size()));
          fig.set_startup_organizations_served(static_cast<int64_t>(a.startup_orgs.size()));
        }
        bucket_rows[g].push_back(std::move(row));
      }
    }
    if (per_bucket != nullptr) {
      LS_RETURN_IF_ERROR((*per_bucket)(std::move(bucket_rows)));
    } else {
      for (size_t g = 0; g < groupings.size(); ++g) {
        for (auto& row : bucket_rows[g]) all_rows[g].push_back(std::move(row));
      }
    }
  }
  return all_rows;
}

absl::StatusOr<v1::GetUsageFiguresResponse> UsageFigures::GetUsageFigures(const Principal& p,
                                                                          const v1::GetUsageFiguresRequest& r) {
  LS_RETURN_IF_ERROR(Scope(p, r.filter()));  // authorization before validation
  absl::CivilDay from, to;
  LS_RETURN_IF_ERROR(CheckRange(r.range(), &from, &to));
  LS_RETURN_IF_ERROR(CheckFilterNames(r.filter(), "filter"));
  const bool owner_view = p.HasAnyRole({Role::kAuditor, Role::kConsortiumAdmin}) ||
                          (r.filter().owner_organizations_size() == 1 &&
                           r.filter().owner_organizations(0) == ActorOrganization(p));
  LS_ASSIGN_OR_RETURN(auto rows, Compute(from, to, v1::PERIOD_GRANULARITY_RANGE, {}, r.filter(), owner_view));
  v1::GetUsageFiguresResponse out;
  *out.mutable_range() = r.range();
  *out.mutable_figures() = rows.empty() ? ZeroFigures(currency_, owner_view) : rows[0].figures();
  *out.mutable_computation() = Info(FromProto(r.range().end_time()));
  return out;
}

absl::StatusOr<v1::QueryUsageResponse> UsageFigures::QueryUsage(const Principal& p, const v1::QueryUsageRequest& r) {
  LS_RETURN_IF_ERROR(Scope(p, r.filter()));  // authorization before validation
  absl::CivilDay from, to;
  LS_RETURN_IF_ERROR(CheckRange(r.range(), &from, &to));
  LS_ASSIGN_OR_RETURN(std::vector<v1::Dimension> dims, ParseDims(r.group_by()));
  if (!v1::PeriodGranularity_IsValid(r.granularity())) {
    return InvalidField("granularity", "not a PeriodGranularity value (DAY, MONTH, YEAR or RANGE)");
  }
  if (r.granularity() == v1::PERIOD_GRANULARITY_DAY && to - from > 400) {
    return InvalidField("range", "DAY over more than 400 days: use ExportUsage", "RANGE_TOO_LARGE");
  }
  if (r.granularity() == v1::PERIOD_GRANULARITY_MONTH &&
      to > absl::CivilDay(from.year() + 10, from.month(), from.day())) {  // 120 months
    return InvalidField("range", "MONTH over more than 120 months: use ExportUsage", "RANGE_TOO_LARGE");
  }
  LS_RETURN_IF_ERROR(CheckFilterNames(r.filter(), "filter"));
  const bool owner_view = p.HasAnyRole({Role::kAuditor, Role::kConsortiumAdmin}) ||
                          (r.filter().owner_organizations_size() == 1 &&
                           r.filter().owner_organizations(0) == ActorOrganization(p));
  LS_ASSIGN_OR_RETURN(PageRequest page, page_tokens_.Parse(r, p));
  std::vector<v1::UsageRow> rows, totals;
  if (r.granularity() == v1::PERIOD_GRANULARITY_RANGE || r.granularity() == v1::PERIOD_GRANULARITY_UNSPECIFIED) {
    // One read of the counters for both.
    LS_ASSIGN_OR_RETURN(auto both, ComputeMany(from, to, v1::PERIOD_GRANULARITY_RANGE, {dims, {}}, r.filter(), owner_view));
    rows = std::move(both[0]);
    totals = std::move(both[1]);
  } else {
    LS_ASSIGN_OR_RETURN(rows, Compute(from, to, r.granularity(), dims, r.filter(), owner_view));
    LS_ASSIGN_OR_RETURN(totals, Compute(from, to, v1::PERIOD_GRANULARITY_RANGE, {}, r.filter(), owner_view));
  }
  v1::QueryUsageResponse out;
  // Ordered by period start, then the keys in group_by order.
  auto sort_key = [&](const v1::UsageRow& row) { return RowSortKey(row, dims); };
  SortRows(&rows, dims);
  const std::string after = UpgradeRowSortKey(page.after);
  for (auto& row : rows) {
    const std::string k = sort_key(row);
    if (!after.empty() && k <= after) continue;
    if (out.rows_size() == page.page_size) {
      out.set_next_page_token(page_tokens_.Make(r, p, sort_key(out.rows(out.rows_size() - 1))));
      break;
    }
    *out.add_rows() = std::move(row);
  }
  *out.mutable_totals() = totals.empty() ? ZeroFigures(currency_, owner_view) : totals[0].figures();
  *out.mutable_computation() = Info(FromProto(r.range().end_time()));
  return out;
}

absl::StatusOr<int> UsageFigures::SeedInstrumentVersions() {
  static const RedisScript kSeed(R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
-- A seeded history has no writer: queries read it every time.
redis.call('HDEL', KEYS[2], ARGV[3])
return 1
)lua");
  LS_ASSIGN_OR_RETURN(RedisValue ids, pool_->Command({"HKEYS", "{usage}:instr"}));
  int seeded = 0;
  for (const RedisValue& id : ids.elements) {
    LS_ASSIGN_OR_RETURN(RedisValue record, pool_->Command({"HGET", "{usage}:instr", id.str}));
    iv::Instrument in;
    if (record.is_nil() || !in.ParseFromString(record.str)) continue;
    const absl::Time effective = in.has_update_time()   ? FromProto(in.update_time())
                                 : in.has_create_time() ? FromProto(in.create_time())
                                                        : absl::UnixEpoch();
    LS_ASSIGN_OR_RETURN(RedisValue done, pool_->Eval(kSeed, {kVersionsPrefix + id.str, kVersionsWrittenBy},
                                                     {std::to_string(absl::ToUnixMillis(effective)), record.str, id.str}));
    seeded += static_cast<int>(done.integer);
  }
  return seeded;
}

}  // namespace labshare::usage
