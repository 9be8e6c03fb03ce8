#include "services/booking/redis_booking_store.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <limits>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/lua_guards.h"

namespace labshare::booking {
namespace keys {

int Partition(absl::string_view instrument_id) {
  uint32_t h = 2166136261u;  // FNV-1a: stable across processes and versions
  for (unsigned char c : instrument_id) {
    h ^= c;
    h *= 16777619u;
  }
  return static_cast<int>(h % kPartitions);
}
std::string Tag(int p) { return absl::StrCat("{bk:", p, "}"); }
std::string Calendar(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":cl:", i); }
std::string LegacyCalendar(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":cal:", i); }
std::string LegacyCalendarEnds(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":calend:", i); }
std::string CalendarSpan(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":clspan:", i); }
std::string CalendarWindows(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":clwin:", i); }
std::string WithdrawnWindows(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":mwoff:", i); }
std::string Booking(int p, absl::string_view id) { return absl::StrCat(Tag(p), ":booking:", id); }
std::string ByInstrument(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":bystart:", i); }
std::string LegacyByInstrument(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":byinstr:", i); }
std::string Idempotency(int p, absl::string_view method, absl::string_view request_id) {
  return absl::StrCat(Tag(p), ":idem:", method, ":", request_id);
}
std::string Outbox(int p) { return absl::StrCat(Tag(p), ":outbox"); }
std::string Due(int p) { return absl::StrCat(Tag(p), ":due"); }
std::string SweepInstruments(int p) { return absl::StrCat(Tag(p), ":sweep:instruments"); }
std::string SweepCursors(int p) { return absl::StrCat(Tag(p), ":sweep:cursor"); }
std::string InstrumentChanges(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":ichanges:", i); }
std::string IdLookup(absl::string_view id) { return absl::StrCat("{bk:ids}:", id); }
std::string RequestClaim(absl::string_view method, absl::string_view request_id) {
  // Booking ids match [a-z0-9-]: a ':' keeps claims apart from them.
  return absl::StrCat("{bk:ids}:req:", method, ":", request_id);
}
std::string Budget(int p, absl::string_view project_id) { return absl::StrCat(Tag(p), ":budget:", project_id); }
std::string Lease(int p, absl::string_view id) { return absl::StrCat(Tag(p), ":lease:", id); }
std::string Order(int p, absl::string_view id) { return absl::StrCat(Tag(p), ":order:", id); }
std::string ReportDue(int p) { return absl::StrCat(Tag(p), ":reportdue"); }
std::string Orders(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":orders:", i); }
std::string QuotaGroup(int p, absl::string_view i, absl::string_view o) {
  return absl::StrCat(Tag(p), ":quotas:", i, ":", o);
}
std::string QuotaCounters(int p, absl::string_view i, absl::string_view o) {
  return absl::StrCat(Tag(p), ":qc:", i, ":", o);
}
std::string QuotaIndex(int p) { return absl::StrCat(Tag(p), ":quotaidx"); }
std::string Project(absl::string_view id) { return absl::StrCat("{booking}:project:", id); }
std::string Projects() { return "{booking}:projects"; }
std::string ProjectIdReservation(absl::string_view id) { return absl::StrCat("{booking}:projectid:", id); }
std::string ProjectOutbox() { return "{booking}:outbox"; }
std::string ProjectIdempotency(absl::string_view method, absl::string_view request_id) {
  return absl::StrCat("{booking}:idem:", method, ":", request_id);
}
std::string ListAll(int p, char kind) { return absl::StrCat(Tag(p), ":ls:", std::string(1, kind), ":all"); }
std::string ListBy(int p, char kind, absl::string_view dimension, absl::string_view id) {
  return absl::StrCat(Tag(p), ":ls:", std::string(1, kind), ":", dimension, ":", id);
}
std::string ListSpan(int p) { return absl::StrCat(Tag(p), ":ls:span"); }
std::string ListOperator(int p, absl::string_view i) { return absl::StrCat(Tag(p), ":ls:op:", i); }
std::string IndexMember(int64_t start_ms, absl::string_view id) {
  return absl::StrFormat("%015d|%s", start_ms, id);
}

}  // namespace keys

namespace {

// Shared head of both steps: replay or reuse of a request id.
constexpr char kReplayLua[] = R"lua(
-- An empty fingerprint: the request has no request_id, nothing to replay.
local function replay(idem, fingerprint)
  if fingerprint == '' then return nil end
  local rec = redis.call('HMGET', idem, 'f', 'r')
  if rec[1] then
    if rec[1] == fingerprint then return {'REPLAY', rec[2]} end
    return {'REUSED'}
  end
  return nil
end
local function remember(idem, fingerprint, response, ttl)
  if fingerprint == '' then return end
  redis.call('HSET', idem, 'f', fingerprint, 'r', response)
  redis.call('EXPIRE', idem, ttl)
end
-- Writes a document at version v. A document that is its own request's
-- record (field f) keeps its first state as that request's answer (r).
local function put(key, cur, v, d)
  if cur[2] and not cur[3] then
    redis.call('HSET', key, 'v', v, 'd', d, 'r', cur[4])
  else
    redis.call('HSET', key, 'v', v, 'd', d)
  end
end
local function publish(outbox, first, count)
  for i = first, first + count - 1 do
    redis.call('XADD', outbox, '*', 'type', 'labshare.booking.v1.BookingEvent', 'payload', ARGV[i])
  end
end
)lua";

// The calendar (keys::Calendar): members "<entry id>!<end - start><reason>"
// at score start (CalendarMember). Entry ids never hold '!'. Needs
// kLuaGuards and kLuaBytesLess before it.
constexpr char kCalendarLua[] = R"lua(
local function cal_id(m)
  local i = string.find(m, '!', 1, true)
  if not i then return m end
  return string.sub(m, 1, i - 1)
end
-- The end of member m at score start (tonumber reads past the reason).
local function cal_end(m, start)
  local i = string.find(m, '!', 1, true)
  return tonumber(start) + (i and tonumber(string.sub(m, i + 1)) or 0)
end
-- The member of entry `id` and its score: at `start` ('' unknown); when
-- not there and `anywhere`, through the whole calendar.
local function cal_find(key, id, start, anywhere)
  local p = id .. '!'
  if start ~= '' then
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, start, start)) do
      if string.sub(m, 1, #p) == p then return m, start end
    end
  end
  if not anywhere then return nil end
  local cursor = '0'
  repeat
    local r = redis.call('ZSCAN', key, cursor, 'MATCH', p .. '*', 'COUNT', '1000')
    cursor = r[1]
    if r[2][1] then return r[2][1], r[2][2] end
  until cursor == '0'
  return nil
end
-- The calendar's spans (keys::CalendarSpan s, HASH b, w): the longest
-- blocked interval of a booking (b) and of a window (w) ever put on
-- calendar n, never lowered (an upper bound), so that no entry starting at
-- or before t - max(b, w) reaches past t. 0, 0 and fresh for a calendar
-- with no entries (a writer then creates the hash); nil when unknown (a
-- calendar an earlier version wrote, until MigrateCalendarSpans).
local function cal_spans(n, s)
  local v = redis.call('HMGET', s, 'b', 'w')
  if v[1] and v[2] then return tonumber(v[1]), tonumber(v[2]), false end
  if redis.call('EXISTS', n) == 0 then return 0, 0, true end
  return nil, nil, false
end
-- Raises the spans read before the write (sb, sw, fresh: cal_spans') by a
-- booking entry of blen ms and a window entry of wlen ms (0: none).
-- Unknown spans stay unknown.
local function cal_raise(s, sb, sw, fresh, blen, wlen)
  if not sb then return end
  local b, w = math.max(sb, blen), math.max(sw, wlen)
  if fresh or b ~= sb or w ~= sw then
    redis.call('HSET', s, 'b', string.format('%d', b), 'w', string.format('%d', w))
  end
end
-- The windows by end (keys::CalendarWindows we): window member m of
-- calendar n (at score start) goes on (add) or off there too. Kept only
-- beside known spans (cal_spans): unknown spans, unknown index.
local function cal_win(we, known, m, start, add)
  if not known or string.sub(m, 1, 3) ~= 'mw:' then return end
  if add then
    redis.call('ZADD', we, string.format('%d', cal_end(m, start)), m)
  else
    redis.call('ZREM', we, m)
  end
end
-- The entries of calendar n other than `except` that start before `below`
-- and end after `at` (a number), the latest start first (by member within
-- one start, as ZREVRANGEBYSCORE answers), as member, start pairs; with
-- `first`, only the first one's id (nil: none). Bookings' blocked
-- intervals are disjoint: of the bookings only the nearest one (not
-- `except`) starting before `below` can reach past `at`; the walk back to
-- it stops at at - sb (no booking starting there or before reaches past
-- at). A window's entry may lie inside or around a booking's block (a
-- lease with the lessee that a window left alone) or overlap another
-- window: every window that reaches past `at` and starts before `below`
-- ends in (at, below + sw), read from the windows by end (we). Unknown
-- spans (sb nil: a calendar an earlier version wrote): the walk goes back
-- without a bound to the nearest booking, windows included, as it did.
local function cal_walk(n, we, sb, sw, below, at, except, first)
  local found = {}
  local low = '-inf'
  if sb then low = '(' .. string.format('%d', at - sb) end
  local off, size, stop = 0, 2, false
  while not stop do
    local page = redis.call('ZREVRANGEBYSCORE', n, '(' .. below, low, 'WITHSCORES', 'LIMIT', off, size)
    for i = 1, #page, 2 do
      local id = cal_id(page[i])
      if id ~= except then
        local window = string.sub(id, 1, 3) == 'mw:'
        if not (window and sb) and cal_end(page[i], page[i + 1]) > at then
          found[#found + 1] = {page[i], tonumber(page[i + 1])}
        end
        if not window then
          stop = true
          break
        end
      end
    end
    if #page < size * 2 then break end
    off, size = off + size, 64
  end
  if sb and sw > 0 then
    local top = tonumber(below)
    local wins = redis.call('ZRANGEBYSCORE', we, '(' .. string.format('%d', at),
                            '(' .. string.format('%d', top + sw), 'WITHSCORES')
    for i = 1, #wins, 2 do
      local start = tonumber(wins[i + 1]) - cal_end(wins[i], 0)
      if start < top then found[#found + 1] = {wins[i], start} end
    end
  end
  table.sort(found, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return ls_bytes_less(b[1], a[1])
  end)
  if first then
    if found[1] then return cal_id(found[1][1]) end
    return nil
  end
  local out = {}
  for _, f in ipairs(found) do
    out[#out + 1] = f[1]
    out[#out + 1] = string.format('%d', f[2])
  end
  return out
end
-- What an older version's step meets instead of its calendar (c, e): a
-- string, so it fails (WRONGTYPE) before it writes anything. The shortest
-- value that says why (88 B of MEMORY USAGE a key; the calendar is n).
local function cal_plant(n, c, e)
  redis.call('SET', c, 'moved')
  redis.call('SET', e, 'moved')
end
-- An older version's calendar (c: id -> start, e: id -> end value) moves
-- into n once (its spans s raised and its windows put on we), and both
-- become sentinels (cal_plant). Returns an error, or whether the
-- instrument has no calendar of either form yet: then the caller plants
-- the sentinels once it writes (so an older replica cannot start one
-- beside n).
local function cal_fold(n, c, e, s, we)
  local te = redis.call('TYPE', e)['ok']
  if te == 'string' then return nil, false end
  local tc = redis.call('TYPE', c)['ok']
  if (te ~= 'none' and te ~= 'hash') or (tc ~= 'none' and tc ~= 'zset') or not ls_type_is(n, 'zset') or
     not ls_type_is(s, 'hash') or not ls_type_is(we, 'zset') then
    return 'WRONGTYPE calendar keys'
  end
  if te == 'none' and tc == 'none' then return nil, true end
  local ends = {}
  if te == 'hash' then
    local h = redis.call('HGETALL', e)
    for i = 1, #h, 2 do ends[h[i]] = h[i + 1] end
  end
  local sb, sw, fresh = cal_spans(n, s)
  local blen, wlen = 0, 0
  if tc == 'zset' then
    local m = redis.call('ZRANGE', c, 0, -1, 'WITHSCORES')
    for i = 1, #m, 2 do
      -- An entry without an end was on no older reader's calendar either.
      local v = ends[m[i]]
      local digits = v and string.match(v, '^%-?%d+')
      if digits then
        local len = tonumber(digits) - tonumber(m[i + 1])
        if string.sub(m[i], 1, 3) == 'mw:' then wlen = math.max(wlen, len) else blen = math.max(blen, len) end
        local member = m[i] .. '!' .. string.format('%d', len) .. string.sub(v, #digits + 1, #digits + 1)
        redis.call('ZADD', n, m[i + 1], member)
        cal_win(we, sb ~= nil, member, m[i + 1], true)
      end
    end
  end
  cal_raise(s, sb, sw, fresh, blen, wlen)
  cal_plant(n, c, e)
  return nil, false
end
)lua";

// KEYS: 1 idem (the doc itself: the record is in the document), 2 outbox,
//       3 doc, 4 calendar, 5 older calendar, 6 bystart, 7 the partition's swept
//       instruments, 8 guard document (or placeholder), 9 older calendar ends,
//       10 the calendar's spans, 11 its windows by end, 12.. counters, then
//       extra documents
// ARGV: 1 fingerprint, 2 doc, 3 ttl, 4 denied, 5 start, 6 end, 7 id,
//       8 reserved start ms (listing index score), 9 instrument id if the
//       sweep must look at the booking ('' no), 10 guard version ('' none),
//       11 replaced booking id ('' none), 12 response ('' = the doc), 13 n extra,
//       14 n events, 15 n counters, 16 the calendar member (CalendarMember),
//       17 the replaced booking's start ('' unknown),
//       then per counter (field, limit ms or 'hash', ms, on over
//       'fail'|'ask'|'allow', reason, project version ('' none: see
//       CounterCharge::project_version)), then per extra document (expected
//       version, 0: must not exist; data), then the events, then (always
//       the last two) the instrument etag the listing keys' operator was
//       read at ('' not checked) and that operator.
// KEYS after the extra documents, if any: the partition's listing span,
// the instrument's listing operator record, then the listing indexes (no
// ARGV of their own).
// Every check comes before the first write.
const RedisScript& CreateScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + kLuaBytesLess + kReplayLua + kCalendarLua + R"lua(
local in_doc = KEYS[1] == KEYS[3]
if in_doc then
  -- The id was derived from the request id: the document is the record.
  local rec = redis.call('HMGET', KEYS[3], 'f', 'r', 'd')
  if rec[1] and ARGV[1] ~= '' then
    if rec[1] == ARGV[1] then return {'REPLAY', rec[2] or rec[3]} end
    return {'REUSED'}
  end
  if rec[3] then return {'EXISTS'} end
else
  local seen = replay(KEYS[1], ARGV[1])
  if seen then return seen end
end
local n_extra, nc = tonumber(ARGV[13]), tonumber(ARGV[15])
local xk, xa = 11 + nc, 17 + nc * 6
-- A project budget checked against a project version: the project must
-- still be at it, and no UpdateProject may be checking or committing.
for i = 1, nc do
  local a = 17 + (i - 1) * 6
  if ARGV[a + 6] ~= '' then
    local c = redis.call('HMGET', KEYS[11 + i], ARGV[a + 1] .. ':budget_version', ARGV[a + 1] .. ':fence')
    if c[2] or tonumber(c[1] or '0') ~= tonumber(ARGV[a + 6]) then return {'PROJECT'} end
  end
end
if ARGV[4] == '1' then return {'DENIED'} end
if not in_doc and redis.call('EXISTS', KEYS[3]) == 1 then return {'EXISTS'} end
if ARGV[10] ~= '' and tonumber(redis.call('HGET', KEYS[8], 'v') or '0') ~= tonumber(ARGV[10]) then
  return {'STALE'}
end
local extra = {}
for i = 1, n_extra do
  local expected = tonumber(ARGV[xa + (i - 1) * 2 + 1])
  extra[i] = redis.call('HMGET', KEYS[xk + i], 'v', 'f', 'r', 'd')
  if tonumber(extra[i][1] or '0') ~= expected then
    if expected == 0 then return {'EXISTS'} end
    return {'CONFLICT'}
  end
end
local s, s_end = tonumber(ARGV[5]), tonumber(ARGV[6])
local folded, fresh = cal_fold(KEYS[4], KEYS[5], KEYS[9], KEYS[10], KEYS[11])
if folded then return redis.error_reply(folded) end
-- The entries starting before e that reach past s (not counting the
-- booking this one replaces): bounded by the calendar's spans (cal_walk).
local sb, sw, sfresh = cal_spans(KEYS[4], KEYS[10])
local taken = cal_walk(KEYS[4], KEYS[11], sb, sw, ARGV[6], s, ARGV[11], true)
if taken then return {'TAKEN', taken} end
local ask = false
for i = 1, nc do
  local a = 17 + (i - 1) * 6
  local f, mode = ARGV[a + 1], ARGV[a + 4]
  if mode ~= 'allow' then
    local c = redis.call('HMGET', KEYS[11 + i], f .. ':budget', f .. ':committed', f .. ':used')
    local limit = ARGV[a + 2]
    if limit == 'hash' then limit = c[1] end
    if not limit or tonumber(ARGV[a + 3]) > tonumber(limit) - tonumber(c[2] or '0') - tonumber(c[3] or '0') then
      if mode == 'fail' then return {'OVER', ARGV[a + 5]} end
      ask = true
    end
  end
end
if ask then return {'ASK'} end
-- Nothing below may fail (Redis does not roll back): keys of the types they
-- are written as, counters that stay exact int64s.
if not (ls_type_is(KEYS[4], 'zset') and ls_type_is(KEYS[6], 'zset') and ls_type_is(KEYS[10], 'hash') and
        (ARGV[9] == '' or ls_type_is(KEYS[7], 'set')) and
        (ARGV[14] == '0' or ls_type_is(KEYS[2], 'stream'))) then
  return redis.error_reply('WRONGTYPE a key of the booking step')
end
local ls = xk + n_extra + 1
if KEYS[ls] and ARGV[#ARGV - 1] ~= '' then
  -- The operator the listing keys name was read before a change the record
  -- has re-filed (or announced) for another operator.
  local rec = redis.call('HMGET', KEYS[ls + 1], 'org', 'etag', 'next_org', 'next')
  local seen, op = tonumber(ARGV[#ARGV - 1]), ARGV[#ARGV]
  if (rec[2] and tonumber(rec[2]) > seen and rec[1] ~= op) or
     (rec[4] and tonumber(rec[4]) > seen and rec[3] ~= op) then
    return {'OPERATOR'}
  end
end
if KEYS[ls] then
  local span = redis.call('TYPE', KEYS[ls])['ok']
  if (span ~= 'none' and span ~= 'string') or
     (span == 'string' and not string.match(redis.call('GET', KEYS[ls]), '^%d+$')) then
    return redis.error_reply('WRONGTYPE a listing span of the booking step')
  end
  for i = ls + 2, #KEYS do
    if not ls_type_is(KEYS[i], 'zset') then return redis.error_reply('WRONGTYPE a listing index of the booking step') end
  end
end
for i = 1, nc do
  local a = 17 + (i - 1) * 6
  if not ls_add(redis.call('HGET', KEYS[11 + i], ARGV[a + 1] .. ':committed'), ARGV[a + 3]) then
    return redis.error_reply('ERR counter overflow in ' .. KEYS[11 + i])
  end
end
if ARGV[11] ~= '' then
  local m = cal_find(KEYS[4], ARGV[11], ARGV[17], true)
  if m then redis.call('ZREM', KEYS[4], m) end
end
for i = 1, nc do
  local a = 17 + (i - 1) * 6
  redis.call('HINCRBY', KEYS[11 + i], ARGV[a + 1] .. ':committed', ARGV[a + 3])
end
-- Arguments go to Redis as the strings they came in: a Lua number would be
-- printed with %.17g on each call (measurably slower on this hot path).
if not in_doc or ARGV[1] == '' then
  redis.call('HSET', KEYS[3], 'v', '1', 'd', ARGV[2])
elseif ARGV[12] == '' then
  redis.call('HSET', KEYS[3], 'v', '1', 'd', ARGV[2], 'f', ARGV[1])
else
  redis.call('HSET', KEYS[3], 'v', '1', 'd', ARGV[2], 'f', ARGV[1], 'r', ARGV[12])
end
for i = 1, n_extra do
  local expected = tonumber(ARGV[xa + (i - 1) * 2 + 1])
  put(KEYS[xk + i], extra[i], expected + 1, ARGV[xa + (i - 1) * 2 + 2])
end
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[16])
cal_raise(KEYS[10], sb, sw, sfresh, s_end - s, 0)
if fresh then cal_plant(KEYS[4], KEYS[5], KEYS[9]) end
redis.call('ZADD', KEYS[6], ARGV[8], ARGV[7])
-- Usually already a member: then nothing is written (or logged to the AOF).
if ARGV[9] ~= '' then redis.call('SADD', KEYS[7], ARGV[9]) end
-- Listing indexes (ListBookings and friends) and the span that bounds a
-- time-range query's first score (their types were checked above).
if KEYS[ls] then
  local span = tonumber(ARGV[6]) - tonumber(ARGV[8])
  if span > tonumber(redis.call('GET', KEYS[ls]) or '0') then redis.call('SET', KEYS[ls], string.format('%d', span)) end
  for i = ls + 2, #KEYS do redis.call('ZADD', KEYS[i], ARGV[8], ARGV[7]) end
end
publish(KEYS[2], xa + n_extra * 2 + 1, tonumber(ARGV[14]))
if not in_doc then remember(KEYS[1], ARGV[1], ARGV[12] ~= '' and ARGV[12] or ARGV[2], ARGV[3]) end
return {'OK'}
)lua");
  return *s;
}

// KEYS: 1 idem, 2 outbox, 3 doc, 4 calendar, 5 older calendar, 6 due, 7 older
//       calendar ends, 8 the calendar's spans, 9 the withdrawn windows,
//       10 the calendar's windows by end, 11.. counters, then extra documents
// ARGV: 1 fingerprint, 2 doc ('' the doc stays as it is: checked against
//       the expected version, not rewritten; then 12 is set), 3 ttl,
//       4 expected version, 5 calendar op, 6 id, 7 new end, 8 guard from, 9 guard to, 10 due op ('remove': off
//       the older due set), 11 the busy reason's character after the end
//       ('' none; CalendarEndValue): written with a new end, and on 'keep'
//       beside the end an entry on the calendar has,
//       12 response ('' = the doc), 13 n extra, 14 n events, 15 n counters,
//       16 where the entry starts ('' unknown: looked for through the
//       calendar; known, 'remove' and 'end' still look there when it is
//       not at that start, 'keep' leaves it),
//       17 the guard's kind ('' no other entry starts in (from, to);
//       'overlap': no other entry overlaps [from, to)), 18 a window id
//       ('' none): WITHDRAWN, nothing written, when it is among the
//       withdrawn windows,
//       then per counter (field, committed delta, used delta), then per
//       extra document (expected version, data), then the events, then per
//       sorted-set op (KEYS after the extra documents; their number is what
//       KEYS holds past those, none from a caller without them) its op ('-'
//       remove, '+<score>' add at that score) and member.
const RedisScript& UpdateScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + kLuaBytesLess + kReplayLua + kCalendarLua + R"lua(
local seen = replay(KEYS[1], ARGV[1])
if seen then return seen end
local n_extra, nc = tonumber(ARGV[13]), tonumber(ARGV[15])
local xk, xa = 10 + nc, 18 + nc * 3
local cur = redis.call('HMGET', KEYS[3], 'v', 'f', 'r', 'd')
if tonumber(cur[1] or '0') ~= tonumber(ARGV[4]) then
  return {'CONFLICT'}
end
local extra = {}
for i = 1, n_extra do
  local expected = tonumber(ARGV[xa + (i - 1) * 2 + 1])
  extra[i] = redis.call('HMGET', KEYS[xk + i], 'v', 'f', 'r', 'd')
  if tonumber(extra[i][1] or '0') ~= expected then return {'CONFLICT'} end
end
-- The maintenance window the change is made for was cancelled meanwhile.
if ARGV[18] ~= '' and redis.call('SISMEMBER', KEYS[9], ARGV[18]) == 1 then return {'WITHDRAWN'} end
-- The sorted-set ops, checked before anything (the calendar fold too) is written.
local zk, za = xk + n_extra, xa + n_extra * 2 + tonumber(ARGV[14]) + 1
local nz = #KEYS - zk
for i = 1, nz do
  if not ls_type_is(KEYS[zk + i], 'zset') then return redis.error_reply('WRONGTYPE ' .. KEYS[zk + i]) end
  local op = ARGV[za + (i - 1) * 2]
  if op ~= '-' and not (string.sub(op, 1, 1) == '+' and tonumber(string.sub(op, 2))) then
    return redis.error_reply('ERR sorted-set op ' .. op)
  end
end
local folded, fresh = cal_fold(KEYS[4], KEYS[5], KEYS[7], KEYS[8], KEYS[10])
if folded then return redis.error_reply(folded) end
local sb, sw, sfresh = cal_spans(KEYS[4], KEYS[8])
if ARGV[9] ~= '0' and ARGV[17] == 'overlap' then
  local id = cal_walk(KEYS[4], KEYS[10], sb, sw, ARGV[9], tonumber(ARGV[8]), ARGV[6], true)
  if id then return {'TAKEN', id} end
elseif ARGV[9] ~= '0' then
  local inside = redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[8], '(' .. ARGV[9], 'LIMIT', 0, 2)
  for _, other in ipairs(inside) do
    local id = cal_id(other)
    if id ~= ARGV[6] then return {'TAKEN', id} end
  end
end
-- Nothing below may fail (Redis does not roll back).
if not (ls_type_is(KEYS[4], 'zset') and ls_type_is(KEYS[8], 'hash') and
        (ARGV[10] ~= 'remove' or ls_type_is(KEYS[6], 'zset')) and
        (ARGV[14] == '0' or ls_type_is(KEYS[2], 'stream'))) then
  return redis.error_reply('WRONGTYPE a key of the booking step')
end
for i = 1, nc do
  local a = 18 + (i - 1) * 3
  local c = redis.call('HMGET', KEYS[10 + i], ARGV[a + 1] .. ':committed', ARGV[a + 1] .. ':used')
  if not ls_add(c[1], ARGV[a + 2]) or not ls_add(c[2], ARGV[a + 3]) then
    return redis.error_reply('ERR counter overflow in ' .. KEYS[10 + i])
  end
end
if ARGV[2] ~= '' then put(KEYS[3], cur, tonumber(ARGV[4]) + 1, ARGV[2]) end
for i = 1, n_extra do
  local expected = tonumber(ARGV[xa + (i - 1) * 2 + 1])
  put(KEYS[xk + i], extra[i], expected + 1, ARGV[xa + (i - 1) * 2 + 2])
end
-- The booking's entry: found at its start, or (to take it off or move its
-- end, or with no start given) wherever it is; 'keep' leaves an entry not
-- at its known start alone.
local m, at = cal_find(KEYS[4], ARGV[6], ARGV[16], ARGV[5] ~= 'keep' or ARGV[16] == '')
if m and ARGV[5] == 'remove' then
  redis.call('ZREM', KEYS[4], m)
elseif m then
  -- 'end': the new end; 'keep': the end it has. Either with the new reason.
  local delta = ARGV[5] == 'end' and string.format('%d', tonumber(ARGV[7]) - tonumber(at))
                or string.match(string.sub(m, #ARGV[6] + 2), '^%-?%d+')
  local now = delta and ARGV[6] .. '!' .. delta .. ARGV[11]
  if now and now ~= m then
    redis.call('ZREM', KEYS[4], m)
    redis.call('ZADD', KEYS[4], at, now)
    cal_raise(KEYS[8], sb, sw, sfresh, tonumber(delta), 0)
  end
end
if fresh then cal_plant(KEYS[4], KEYS[5], KEYS[7]) end
if ARGV[10] == 'remove' then
  redis.call('ZREM', KEYS[6], ARGV[6])
end
for i = 1, nc do
  local a = 18 + (i - 1) * 3
  redis.call('HINCRBY', KEYS[10 + i], ARGV[a + 1] .. ':committed', ARGV[a + 2])
  redis.call('HINCRBY', KEYS[10 + i], ARGV[a + 1] .. ':used', ARGV[a + 3])
end
for i = 1, nz do
  local op, member = ARGV[za + (i - 1) * 2], ARGV[za + (i - 1) * 2 + 1]
  if op == '-' then
    redis.call('ZREM', KEYS[zk + i], member)
  else
    redis.call('ZADD', KEYS[zk + i], string.sub(op, 2), member)
  end
end
publish(KEYS[2], xa + n_extra * 2 + 1, tonumber(ARGV[14]))
remember(KEYS[1], ARGV[1], ARGV[12] ~= '' and ARGV[12] or ARGV[2], ARGV[3])
return {'OK'}
)lua");
  return *s;
}

constexpr int64_t kIdempotencyTtlSeconds = 7 * 24 * 3600;

absl::StatusOr<StepOutcome> Outcome(const RedisValue& v) {
  if (v.type != RedisValue::Type::kArray || v.elements.empty()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  const std::string& tag = v.elements[0].str;
  StepOutcome out;
  if (tag == "OK") {
    out.kind = StepOutcome::Kind::kApplied;
  } else if (tag == "REPLAY") {
    out.kind = StepOutcome::Kind::kReplayed;
    out.response = v.elements.size() > 1 ? v.elements[1].str : "";
  } else if (tag == "REUSED") {
    out.kind = StepOutcome::Kind::kRequestReused;
  } else if (tag == "TAKEN") {
    out.kind = StepOutcome::Kind::kSlotTaken;
    out.conflicting = v.elements.size() > 1 ? v.elements[1].str : "";
  } else if (tag == "EXISTS") {
    out.kind = StepOutcome::Kind::kExists;
  } else if (tag == "DENIED") {
    out.kind = StepOutcome::Kind::kDenied;
  } else if (tag == "OVER") {
    out.kind = v.elements.size() > 1 && v.elements[1].str == "QUOTA" ? StepOutcome::Kind::kOverQuota
                                                                     : StepOutcome::Kind::kOverBudget;
  } else if (tag == "ASK") {
    out.kind = StepOutcome::Kind::kNeedsApproval;
  } else if (tag == "STALE") {
    out.kind = StepOutcome::Kind::kGuardMoved;
  } else if (tag == "OPERATOR") {
    out.kind = StepOutcome::Kind::kOperatorMoved;
  } else if (tag == "WITHDRAWN") {
    out.kind = StepOutcome::Kind::kWindowWithdrawn;
  } else if (tag == "PROJECT") {
    out.kind = StepOutcome::Kind::kProjectMoved;
  } else {
    out.kind = StepOutcome::Kind::kConflict;
  }
  return out;
}

}  // namespace

// The busy reasons' characters after a calendar end (CalendarEndValue).
constexpr char kBusyCodes[] = " \t\n\v\f\r";
static_assert(sizeof(kBusyCodes) - 1 == kMaxBusyReason, "one character per busy reason");

namespace {
std::string BusyCode(int busy_reason) {
  if (busy_reason < 1 || busy_reason > kMaxBusyReason) return "";
  return std::string(1, kBusyCodes[busy_reason - 1]);
}
}  // namespace

std::string CalendarEndValue(int64_t end_ms, int busy_reason) {
  return absl::StrCat(end_ms, BusyCode(busy_reason));
}

namespace {
// absl::SimpleAtoi's answer, quicker for what a calendar holds (an optional
// '-' and at most 18 digits: no overflow); anything else is SimpleAtoi's.
// Every QueryAvailability reads two numbers per entry in its range.
bool CalendarAtoi(absl::string_view text, int64_t* out) {
  const size_t sign = !text.empty() && text[0] == '-' ? 1 : 0;
  const size_t digits = text.size() - sign;
  if (digits == 0 || digits > 18) return absl::SimpleAtoi(text, out);
  int64_t v = 0;
  for (size_t i = sign; i < text.size(); ++i) {
    const unsigned d = static_cast<unsigned>(static_cast<unsigned char>(text[i])) - '0';
    if (d > 9) return absl::SimpleAtoi(text, out);
    v = v * 10 + static_cast<int64_t>(d);
  }
  *out = sign ? -v : v;
  return true;
}
}  // namespace

bool ParseCalendarEnd(absl::string_view value, int64_t* end_ms, int* busy_reason) {
  *busy_reason = 0;
  const size_t code = value.empty() ? absl::string_view::npos : absl::string_view(kBusyCodes).find(value.back());
  if (code != absl::string_view::npos) {
    *busy_reason = static_cast<int>(code) + 1;
    value.remove_suffix(1);
  }
  // Digits only around the number (SimpleAtoi alone would take whitespace).
  return !value.empty() && absl::ascii_isdigit(static_cast<unsigned char>(value.back())) &&
         (value[0] == '-' || absl::ascii_isdigit(static_cast<unsigned char>(value[0]))) &&
         CalendarAtoi(value, end_ms);
}

std::string CalendarMember(absl::string_view entry_id, int64_t start_ms, int64_t end_ms, int busy_reason) {
  return absl::StrCat(entry_id, absl::string_view(&kCalendarSeparator, 1),
                      CalendarEndValue(end_ms - start_ms, busy_reason));
}

bool ParseCalendarMember(absl::string_view member, int64_t start_ms, CalendarEntry* entry) {
  const size_t sep = member.find(kCalendarSeparator);
  int64_t length = 0;
  if (sep == absl::string_view::npos || !ParseCalendarEnd(member.substr(sep + 1), &length, &entry->busy_reason)) {
    return false;
  }
  entry->booking_id = std::string(member.substr(0, sep));
  entry->start_ms = start_ms;
  entry->end_ms = start_ms + length;
  return true;
}

namespace {
// A start-up migration over keys of an older layout, one per instrument:
// unless `marker` is set, `each` (partition, instrument, key) for every key
// of type `type` that SCAN matches with `pattern` and `shape` names, then
// the marker (so later starts skip the keyspace scan). The sum of `each`.
absl::StatusOr<int64_t> ForEachOlderKey(
    RedisPool* pool, const std::string& marker, const std::string& pattern, const std::string& type,
    std::string (*shape)(int, absl::string_view),
    const std::function<absl::StatusOr<int64_t>(int, const std::string&, const std::string&)>& each) {
  LS_ASSIGN_OR_RETURN(RedisValue done, pool->Command({"EXISTS", marker}));
  if (done.integer == 1) return 0;
  int64_t sum = 0;
  std::string cursor = "0";
  do {
    LS_ASSIGN_OR_RETURN(RedisValue v,
                        pool->Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000", "TYPE", type}));
    if (v.type != RedisValue::Type::kArray || v.elements.size() != 2) {
      return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected SCAN reply");
    }
    cursor = v.elements[0].str;
    for (const auto& key : v.elements[1].elements) {
      // "{bk:<p>}:<word>:<instrument>"
      const size_t close = key.str.find('}');
      int p = 0;
      if (close == std::string::npos || !absl::SimpleAtoi(key.str.substr(4, close - 4), &p) || p < 0 ||
          p >= kPartitions) {
        continue;
      }
      const size_t prefix = shape(p, "").size();
      const std::string instrument = key.str.size() > prefix ? key.str.substr(prefix) : "";
      if (instrument.empty() || key.str != shape(p, instrument)) continue;  // not one of ours
      LS_ASSIGN_OR_RETURN(int64_t n, each(p, instrument, key.str));
      sum += n;
    }
  } while (cursor != "0");
  LS_RETURN_IF_ERROR(pool->Command({"SET", marker, "1"}).status());
  return sum;
}

// A calendar step's keys: the calendar, the older version's two, its spans,
// its windows by end.
std::vector<std::string> CalendarKeys(int partition, absl::string_view instrument_id) {
  return {keys::Calendar(partition, instrument_id), keys::LegacyCalendar(partition, instrument_id),
          keys::LegacyCalendarEnds(partition, instrument_id), keys::CalendarSpan(partition, instrument_id),
          keys::CalendarWindows(partition, instrument_id)};
}
}  // namespace

std::string WindowEntry(absl::string_view window_id) { return absl::StrCat("mw:", window_id); }
bool IsWindowEntry(absl::string_view entry) { return entry.substr(0, 3) == "mw:"; }

namespace {
// One calendar entry put on (a member given) or taken off (none), after the
// fold (a window's also on or off the windows by end). KEYS: CalendarKeys,
// then the withdrawn windows. ARGV: entry id,
// where it starts ('' unknown), the member ('' take it off), its length
// (ms), 'block' (a window's: nothing written when the window, ARGV 6, is
// withdrawn) | 'unblock' (a window's: taken off and withdrawn) | ''. An
// entry placed again may have moved: its member goes wherever it is.
// Returns 0 when a withdrawn window was not blocked, else 1.
absl::StatusOr<bool> PutCalendarEntry(RedisPool* pool, int partition, absl::string_view instrument_id,
                                      std::string entry, std::string start, std::string member, int64_t length,
                                      const char* mode, std::string window_id = "") {
  static const RedisScript* script = new RedisScript(std::string(kLuaGuards) + kLuaBytesLess + kCalendarLua + R"lua(
if ARGV[5] == 'block' and redis.call('SISMEMBER', KEYS[6], ARGV[6]) == 1 then return 0 end
local folded, fresh = cal_fold(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
if folded then return redis.error_reply(folded) end
if not (ls_type_is(KEYS[1], 'zset') and ls_type_is(KEYS[4], 'hash') and ls_type_is(KEYS[5], 'zset') and
        ls_type_is(KEYS[6], 'set')) then
  return redis.error_reply('WRONGTYPE calendar keys')
end
local sb, sw, sfresh = cal_spans(KEYS[1], KEYS[4])
local m, at = cal_find(KEYS[1], ARGV[1], ARGV[2], true)
if m then
  redis.call('ZREM', KEYS[1], m)
  cal_win(KEYS[5], sb ~= nil, m, at, false)
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  cal_win(KEYS[5], sb ~= nil, ARGV[3], ARGV[2], true)
  local len = tonumber(ARGV[4])
  if string.sub(ARGV[1], 1, 3) == 'mw:' then cal_raise(KEYS[4], sb, sw, sfresh, 0, len)
  else cal_raise(KEYS[4], sb, sw, sfresh, len, 0) end
end
if ARGV[5] == 'unblock' then redis.call('SADD', KEYS[6], ARGV[6]) end
if fresh then cal_plant(KEYS[1], KEYS[2], KEYS[3]) end
return 1
)lua");
  std::vector<std::string> keys = CalendarKeys(partition, instrument_id);
  keys.push_back(keys::WithdrawnWindows(partition, instrument_id));
  LS_ASSIGN_OR_RETURN(RedisValue v, pool->Eval(*script, keys,
                                               {std::move(entry), std::move(start), std::move(member),
                                                std::to_string(length), mode, std::move(window_id)}));
  return v.integer == 1;
}
}  // namespace

absl::StatusOr<bool> BookingStore::BlockWindow(int partition, absl::string_view instrument_id,
                                               absl::string_view window_id, int64_t start_ms,
                                               int64_t end_ms, int busy_reason) const {
  std::string entry = WindowEntry(window_id);
  std::string member = CalendarMember(entry, start_ms, end_ms, busy_reason);
  return PutCalendarEntry(pool_, partition, instrument_id, std::move(entry), std::to_string(start_ms),
                          std::move(member), end_ms - start_ms, "block", std::string(window_id));
}

absl::Status BookingStore::UnblockWindow(int partition, absl::string_view instrument_id,
                                         absl::string_view window_id, int64_t start_ms) const {
  return PutCalendarEntry(pool_, partition, instrument_id, WindowEntry(window_id),
                          start_ms > 0 ? std::to_string(start_ms) : "", "", 0, "unblock", std::string(window_id))
      .status();
}

absl::Status BookingStore::RemoveCalendarEntry(int partition, absl::string_view instrument_id,
                                               absl::string_view entry, int64_t start_ms) const {
  return PutCalendarEntry(pool_, partition, instrument_id, std::string(entry),
                          start_ms > 0 ? std::to_string(start_ms) : "", "", 0, "")
      .status();
}

namespace {
// KEYS as BlockWindow's; returns the entries the older calendar held.
const RedisScript& FoldScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + kLuaBytesLess + kCalendarLua + R"lua(
local n = 0
if redis.call('TYPE', KEYS[2])['ok'] == 'zset' then
  n = redis.call('ZCARD', KEYS[2])
  -- An older calendar beside a sentinel end key is no state either version
  -- writes (keys changed by hand): an error, not a fold that leaves it be
  -- and a reader that asks again.
  if redis.call('TYPE', KEYS[3])['ok'] == 'string' then
    return redis.error_reply('WRONGTYPE calendar keys: ' .. KEYS[2] .. ' beside the sentinel ' .. KEYS[3])
  end
end
local folded = cal_fold(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
if folded then return redis.error_reply(folded) end
return n
)lua");
  return *s;
}
}  // namespace

absl::StatusOr<int64_t> BookingStore::FoldCalendar(int partition, absl::string_view instrument_id) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(FoldScript(), CalendarKeys(partition, instrument_id), {}));
  return v.integer;
}

absl::StatusOr<int64_t> BookingStore::MigrateCalendars() const {
  return ForEachOlderKey(pool_, "{booking}:migrated:calendar", "{bk:*}:cal:*", "zset", keys::LegacyCalendar,
                         [this](int p, const std::string& instrument, const std::string&) {
                           return FoldCalendar(p, instrument);
                         });
}

absl::StatusOr<int64_t> BookingStore::MigrateCalendarSpans() const {
  // KEYS: the calendar, its spans, its windows by end. Once per calendar
  // an earlier version wrote: every entry's length and every window, in one
  // step (steps of this version keep both only once the spans exist).
  static const RedisScript* script = new RedisScript(std::string(kLuaGuards) + kLuaBytesLess + kCalendarLua + R"lua(
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if not (ls_type_is(KEYS[1], 'zset') and ls_type_is(KEYS[3], 'zset')) then
  return redis.error_reply('WRONGTYPE calendar keys')
end
redis.call('DEL', KEYS[3])  -- built anew: nothing kept it beside unknown spans
local b, w = 0, 0
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  local m = all[i]
  local len = cal_end(m, 0)
  if string.sub(m, 1, 3) == 'mw:' then
    w = math.max(w, len)
    cal_win(KEYS[3], true, m, all[i + 1], true)
  else
    b = math.max(b, len)
  end
end
redis.call('HSET', KEYS[2], 'b', string.format('%d', b), 'w', string.format('%d', w))
return 1
)lua");
  return ForEachOlderKey(pool_, "{booking}:migrated:calspan", "{bk:*}:cl:*", "zset", keys::Calendar,
                         [this](int p, const std::string& instrument, const std::string&) -> absl::StatusOr<int64_t> {
                           LS_ASSIGN_OR_RETURN(RedisValue v,
                                               pool_->Eval(*script, {keys::Calendar(p, instrument),
                                                                     keys::CalendarSpan(p, instrument),
                                                                     keys::CalendarWindows(p, instrument)},
                                                           {}));
                           return v.integer;
                         });
}

absl::Status BookingStore::Publish(int partition, const std::string& event) const {
  return pool_->Command({"XADD", keys::Outbox(partition), "*", "type",
                         "labshare.booking.v1.BookingEvent", "payload", event})
      .status();
}

absl::Status BookingStore::SetBudget(absl::string_view project_id, absl::string_view instrument_id,
                                     int64_t budget_ms, int64_t project_version, bool overwrite) const {
  const std::string key = keys::Budget(keys::Partition(instrument_id), project_id);
  if (project_version <= 0) {
    return pool_->Command({"HSET", key, absl::StrCat(instrument_id, ":budget"), std::to_string(budget_ms)}).status();
  }
  if (overwrite) {
    return pool_->Command({"HSET", key, absl::StrCat(instrument_id, ":budget"), std::to_string(budget_ms),
                           absl::StrCat(instrument_id, ":budget_version"), std::to_string(project_version)})
        .status();
  }
  // KEYS: the budget hash. ARGV: instrument id, budget (ms), project version.
  static const RedisScript* script = new RedisScript(R"lua(
local at = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':budget_version') or '0')
if at and at >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':budget', ARGV[2], ARGV[1] .. ':budget_version', ARGV[3])
return 1
)lua");
  return pool_->Eval(*script, {key}, {std::string(instrument_id), std::to_string(budget_ms),
                                      std::to_string(project_version)})
      .status();
}

absl::StatusOr<BookingStore::ProjectClaim> BookingStore::ClaimProjectId(const std::string& idempotency_key,
                                                                      const std::string& fingerprint,
                                                                      absl::string_view project_id,
                                                                      absl::string_view owner) const {
  // KEYS: idempotency record (or the document as placeholder), document,
  // reservation. ARGV: fingerprint ('' without an idempotency key), owner.
  static const RedisScript* script = new RedisScript(std::string(kReplayLua) + R"lua(
local answer = replay(KEYS[1], ARGV[1])
if answer then return answer end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'TAKEN'} end
local mine = 'claim:' .. ARGV[2]
local d = redis.call('HGET', KEYS[3], 'd')
if d then
  if d == mine then return {'CLAIMED'} end
  if string.sub(d, 1, 6) == 'claim:' then return {'TAKEN', 'claim'} end
  return {'TAKEN'}
end
redis.call('HSET', KEYS[3], 'v', 1, 'd', mine)
return {'CLAIMED'}
)lua");
  const bool has_idem = !idempotency_key.empty();
  const std::string doc = keys::Project(project_id);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(*script, {has_idem ? idempotency_key : doc, doc,
                                                          keys::ProjectIdReservation(project_id)},
                                                {has_idem ? fingerprint : "", std::string(owner)}));
  if (v.type != RedisValue::Type::kArray || v.elements.empty()) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  ProjectClaim out;
  const std::string& tag = v.elements[0].str;
  if (tag == "REPLAY" && v.elements.size() > 1) {
    out.kind = ProjectClaim::Kind::kReplayed;
    out.response = v.elements[1].str;
  } else if (tag == "REUSED") {
    out.kind = ProjectClaim::Kind::kRequestReused;
  } else if (tag == "TAKEN") {
    out.kind = ProjectClaim::Kind::kTaken;
    out.claim_only = v.elements.size() > 1 && v.elements[1].str == "claim";
  } else if (tag != "CLAIMED") {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  return out;
}

absl::StatusOr<BookingStore::BudgetUse> BookingStore::GetBudget(
    absl::string_view project_id, absl::string_view instrument_id) const {
  const std::string f(instrument_id);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HMGET", keys::Budget(keys::Partition(instrument_id), project_id),
                                                    f + ":budget", f + ":committed", f + ":used",
                                                    f + ":budget_version", f + ":fence"}));
  BudgetUse out;
  int64_t* fields[] = {&out.budget_ms, &out.committed_ms, &out.used_ms, &out.version, &out.fence};
  for (size_t i = 0; i < 5 && i < v.elements.size(); ++i) {
    if (!v.elements[i].is_nil()) absl::SimpleAtoi(v.elements[i].str, fields[i]);
  }
  return out;
}

// The fence fields hold integers only ("<instr>:fence" the owner,
// "<instr>:fence_until" ms of Redis's clock), as every field of the hash
// does: labshare-archive copies them with the counters.
absl::StatusOr<bool> BookingStore::FenceBudget(absl::string_view project_id, absl::string_view instrument_id,
                                               int64_t owner, absl::Duration ttl) const {
  // KEYS: the budget hash. ARGV: instrument id, owner, ttl (ms).
  static const RedisScript* script = new RedisScript(R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], ARGV[1] .. ':fence', ARGV[1] .. ':fence_until')
if f[1] and f[1] ~= ARGV[2] and tonumber(f[2] or '0') > now then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':fence', ARGV[2], ARGV[1] .. ':fence_until',
           string.format('%d', now + tonumber(ARGV[3])))
return 1
)lua");
  LS_ASSIGN_OR_RETURN(RedisValue v,
                      pool_->Eval(*script, {keys::Budget(keys::Partition(instrument_id), project_id)},
                                  {std::string(instrument_id), std::to_string(owner),
                                   std::to_string(absl::ToInt64Milliseconds(ttl))}));
  return v.integer == 1;
}

absl::StatusOr<bool> BookingStore::FenceLapsed(absl::string_view project_id, absl::string_view instrument_id,
                                               int64_t owner) const {
  // KEYS: the budget hash. ARGV: instrument id, owner.
  static const RedisScript* script = new RedisScript(R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], ARGV[1] .. ':fence', ARGV[1] .. ':fence_until')
if f[1] == ARGV[2] and tonumber(f[2] or '0') <= now then return 1 end
return 0
)lua");
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(*script, {keys::Budget(keys::Partition(instrument_id), project_id)},
                                                {std::string(instrument_id), std::to_string(owner)}));
  return v.integer == 1;
}

absl::Status BookingStore::LiftBudgetFence(absl::string_view project_id, absl::string_view instrument_id,
                                           int64_t owner, int64_t budget_ms, int64_t project_version) const {
  // KEYS: the budget hash. ARGV: instrument id, owner, budget (ms), project
  // version ('' none: the budget is not written).
  static const RedisScript* script = new RedisScript(R"lua(
if ARGV[4] ~= '' then
  local at = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':budget_version') or '0')
  if not at or at < tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[1], ARGV[1] .. ':budget', ARGV[3], ARGV[1] .. ':budget_version', ARGV[4])
  end
end
if redis.call('HGET', KEYS[1], ARGV[1] .. ':fence') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1] .. ':fence', ARGV[1] .. ':fence_until')
end
return 1
)lua");
  return pool_->Eval(*script, {keys::Budget(keys::Partition(instrument_id), project_id)},
                     {std::string(instrument_id), std::to_string(owner), std::to_string(budget_ms),
                      project_version > 0 ? std::to_string(project_version) : ""})
      .status();
}

std::string NewBookingId(int partition) {
  thread_local absl::BitGen gen;
  return absl::StrFormat("p%02d-%012x", partition,
                         absl::Uniform<uint64_t>(gen) & 0xffffffffffffULL);
}

std::string DerivedBookingId(int partition, absl::string_view method, absl::string_view request_id) {
  // FNV-1a over method, a separator and the request id, then a 64-bit
  // finalizer (splitmix64) to spread the bits: stable across processes and
  // versions, and cheap. A collision only ever makes the later request
  // REQUEST_ID_REUSED; it never touches the earlier booking.
  uint64_t h = 14695981039346656037ULL;
  auto mix = [&h](absl::string_view bytes) {
    for (unsigned char c : bytes) {
      h ^= c;
      h *= 1099511628211ULL;
    }
  };
  mix(method);
  mix(absl::string_view("\n", 1));
  mix(request_id);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return absl::StrFormat("p%02d-%016x", partition, h);
}

bool IsGeneratedId(absl::string_view id) {
  if ((id.size() != 16 && id.size() != 20) || id[0] != 'p' || id[3] != '-') return false;
  int p = 0;
  if (!absl::SimpleAtoi(id.substr(1, 2), &p) || p < 0 || p >= kPartitions) return false;
  for (char c : id.substr(4)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

namespace {
const char* OnOverArg(CounterCharge::OnOver o) {
  switch (o) {
    case CounterCharge::OnOver::kFail: return "fail";
    case CounterCharge::OnOver::kAskApproval: return "ask";
    case CounterCharge::OnOver::kAllow: return "allow";
  }
  return "fail";
}

void AppendDocsAndEvents(const std::vector<ExtraDoc>& docs, const std::vector<std::string>& events,
                         std::vector<std::string>& keys, std::vector<std::string>& args) {
  for (const auto& d : docs) {
    keys.push_back(d.key);
    args.push_back(std::to_string(d.expected_version));
    args.push_back(d.data);
  }
  args.insert(args.end(), events.begin(), events.end());
}

void CreateArgs(const CreateStep& s, std::vector<std::string>& keys, std::vector<std::string>& args) {
  const std::string swept = keys::SweepInstruments(s.partition);
  std::string doc = keys::Booking(s.partition, s.booking_id);
  // No idempotency key but a fingerprint: the record is the document.
  const bool in_doc = s.idempotency_key.empty() && !s.fingerprint.empty();
  // swept also stands in for the keys a step does not use (same slot).
  keys = {in_doc ? doc : s.idempotency_key.empty() ? swept : s.idempotency_key,
          keys::Outbox(s.partition),
          std::move(doc),
          keys::Calendar(s.partition, s.instrument_id),
          keys::LegacyCalendar(s.partition, s.instrument_id),
          keys::ByInstrument(s.partition, s.instrument_id),
          swept,
          s.guard_key.empty() ? swept : s.guard_key,
          keys::LegacyCalendarEnds(s.partition, s.instrument_id),
          keys::CalendarSpan(s.partition, s.instrument_id),
          keys::CalendarWindows(s.partition, s.instrument_id)};
  args = {s.idempotency_key.empty() && !in_doc ? "" : s.fingerprint,
          s.booking,
          std::to_string(kIdempotencyTtlSeconds),
          s.denied ? "1" : "0",
          std::to_string(s.blocked_start_ms),
          std::to_string(s.blocked_end_ms),
          s.booking_id,
          std::to_string(s.reserved_start_ms),
          s.swept ? s.instrument_id : "",
          s.guard_key.empty() ? "" : std::to_string(s.guard_version),
          s.replaces_booking_id,
          s.response,  // empty: the document is the answer (sent once)
          std::to_string(s.extra_docs.size()),
          std::to_string(s.events.size()),
          std::to_string(s.counters.size()),
          CalendarMember(s.booking_id, s.blocked_start_ms, s.blocked_end_ms, s.busy_reason),
          s.replaces_start_ms > 0 ? std::to_string(s.replaces_start_ms) : ""};
  for (const auto& c : s.counters) {
    keys.push_back(c.key);
    args.push_back(c.field);
    args.push_back(c.limit_ms < 0 ? "hash" : std::to_string(c.limit_ms));
    args.push_back(std::to_string(c.ms));
    args.push_back(OnOverArg(c.on_over));
    args.push_back(c.over_reason);
    args.push_back(c.project_version > 0 ? std::to_string(c.project_version) : "");
  }
  AppendDocsAndEvents(s.extra_docs, s.events, keys, args);
  args.push_back(s.operator_etag > 0 ? std::to_string(s.operator_etag) : "");
  args.push_back(s.operator_org);
  if (!s.listing_keys.empty()) {
    keys.push_back(keys::ListSpan(s.partition));
    keys.push_back(keys::ListOperator(s.partition, s.instrument_id));
    keys.insert(keys.end(), s.listing_keys.begin(), s.listing_keys.end());
  }
}
}  // namespace

absl::StatusOr<StepOutcome> BookingStore::Create(const CreateStep& s) const {
  std::vector<std::string> keys, args;
  CreateArgs(s, keys, args);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(CreateScript(), keys, args));
  return Outcome(v);
}

void BookingStore::CreateAsync(const CreateStep& s,
                               std::function<void(absl::StatusOr<StepOutcome>)> done) const {
  if (pipeline_ == nullptr) return done(Create(s));
  std::vector<std::string> keys, args;
  CreateArgs(s, keys, args);
  pipeline_->Eval(CreateScript(), std::move(keys), std::move(args),
                  [done = std::move(done)](absl::StatusOr<RedisValue> v) {
                    if (!v.ok()) return done(v.status());
                    done(Outcome(*v));
                  });
}

absl::StatusOr<StepOutcome> BookingStore::Update(const UpdateStep& s) const {
  const std::string due = keys::Due(s.partition);
  std::vector<std::string> keys = {s.idempotency_key.empty() ? due : s.idempotency_key,
                                   keys::Outbox(s.partition),
                                   keys::Booking(s.partition, s.booking_id),
                                   keys::Calendar(s.partition, s.instrument_id),
                                   keys::LegacyCalendar(s.partition, s.instrument_id),
                                   due,
                                   keys::LegacyCalendarEnds(s.partition, s.instrument_id),
                                   keys::CalendarSpan(s.partition, s.instrument_id),
                                   keys::WithdrawnWindows(s.partition, s.instrument_id),
                                   keys::CalendarWindows(s.partition, s.instrument_id)};
  const char* op = s.calendar == UpdateStep::Calendar::kRemove   ? "remove"
                   : s.calendar == UpdateStep::Calendar::kSetEnd ? "end"
                                                                 : "keep";
  std::vector<std::string> args = {s.idempotency_key.empty() ? "" : s.fingerprint,
                                   s.booking,
                                   std::to_string(kIdempotencyTtlSeconds),
                                   std::to_string(s.expected_version),
                                   op,
                                   s.booking_id,
                                   std::to_string(s.new_end_ms),
                                   std::to_string(s.guard_from_ms),
                                   std::to_string(s.guard_to_ms),
                                   s.due == UpdateStep::Due::kRemove ? "remove" : "keep",
                                   BusyCode(s.busy_reason),
                                   s.response,  // empty: the document is the answer (sent once)
                                   std::to_string(s.extra_docs.size()),
                                   std::to_string(s.events.size()),
                                   std::to_string(s.counters.size()),
                                   s.blocked_start_ms > 0 ? std::to_string(s.blocked_start_ms) : "",
                                   s.guard_overlap ? "overlap" : "",
                                   s.window_guard};
  for (const auto& c : s.counters) {
    keys.push_back(c.key);
    args.push_back(c.field);
    args.push_back(std::to_string(c.committed_delta_ms));
    args.push_back(std::to_string(c.used_delta_ms));
  }
  AppendDocsAndEvents(s.extra_docs, s.events, keys, args);
  for (const auto& op : s.index_ops) {
    keys.push_back(op.key);
    args.push_back(op.remove ? "-" : absl::StrCat("+", op.score));
    args.push_back(op.member);
  }
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(UpdateScript(), keys, args));
  return Outcome(v);
}

absl::StatusOr<std::optional<StoredDoc>> BookingStore::Get(int partition,
                                                           absl::string_view booking_id) const {
  return docs_.Get(keys::Booking(partition, booking_id));
}

absl::StatusOr<std::vector<std::optional<StoredDoc>>> BookingStore::GetMany(
    int partition, const std::vector<std::string>& booking_ids) const {
  std::vector<std::string> k;
  k.reserve(booking_ids.size());
  for (const auto& id : booking_ids) k.push_back(keys::Booking(partition, id));
  return docs_.GetMany(k);
}

namespace {

// A score as whole milliseconds (written as integers; one written otherwise
// is read too).
int64_t ScoreMs(const std::string& score) {
  int64_t ms = 0;
  if (!CalendarAtoi(score, &ms)) ms = static_cast<int64_t>(std::stod(score));
  return ms;
}

// CalendarRange's commands, shared by the synchronous and the pipelined
// reads: the entry before from_ms, the entries starting in the range, and
// (always last) whether an older version's calendar is still to be folded.
// One round trip.
std::vector<std::string> LegacyProbe(int partition, absl::string_view instrument_id) {
  return {"TYPE", keys::LegacyCalendar(partition, instrument_id)};
}
bool NeedsFold(const RedisValue& probe) { return probe.str == "zset"; }

// The look back: the entries starting before from_ms, the latest first,
// up to kLookBack of them, for the nearest booking's (bookings' blocked
// intervals are disjoint: only that one can reach past from_ms), and the
// windows ending after from_ms, the earliest end first, up to
// kWindowProbe of them (a window may lie inside or around a booking's
// block, or overlap another window); the calendar's spans tell whether
// that was all (CalendarHead), else LookBackScript reads the rest.
constexpr int kLookBack = 4;
constexpr int kWindowProbe = 8;
std::vector<std::vector<std::string>> CalendarHeadCommands(int partition, absl::string_view instrument_id,
                                                           int64_t from_ms, int64_t to_ms) {
  const std::string cal = keys::Calendar(partition, instrument_id);
  return {{"ZREVRANGEBYSCORE", cal, "(" + std::to_string(from_ms), "-inf", "WITHSCORES", "LIMIT", "0",
           std::to_string(kLookBack)},
          {"ZRANGEBYSCORE", cal, std::to_string(from_ms), "(" + std::to_string(to_ms), "WITHSCORES"},
          {"HMGET", keys::CalendarSpan(partition, instrument_id), "b", "w"},
          {"ZRANGEBYSCORE", keys::CalendarWindows(partition, instrument_id), "(" + std::to_string(from_ms), "+inf",
           "WITHSCORES", "LIMIT", "0", std::to_string(kWindowProbe)},
          LegacyProbe(partition, instrument_id)};
}
// Replies: the look back, the range, the spans, the windows by end, the
// probe (always last).
constexpr size_t kCalendarCommands = 5;
constexpr size_t kSpansReply = 2;
constexpr size_t kWindowsReply = 3;

// The calendar's spans (keys::CalendarSpan) from an HMGET b w reply:
// false when unknown (absent: a calendar an earlier version wrote).
bool SpansOf(const RedisValue& v, int64_t* booking_ms, int64_t* window_ms) {
  return v.type == RedisValue::Type::kArray && v.elements.size() == 2 && !v.elements[0].is_nil() &&
         !v.elements[1].is_nil() && absl::SimpleAtoi(v.elements[0].str, booking_ms) &&
         absl::SimpleAtoi(v.elements[1].str, window_ms);
}

// The entry a member names, its id moved out of the member (no copy), at
// score `start_ms`; false when the member is not of CalendarMember's form.
bool TakeEntry(std::string& member, int64_t start_ms, CalendarEntry* entry) {
  const size_t sep = member.find(kCalendarSeparator);
  int64_t length = 0;
  // ParseCalendarMember's reading.
  if (sep == std::string::npos ||
      !ParseCalendarEnd(absl::string_view(member).substr(sep + 1), &length, &entry->busy_reason)) {
    return false;
  }
  entry->start_ms = start_ms;
  entry->end_ms = start_ms + length;
  member.resize(sep);
  entry->booking_id = std::move(member);
  return true;
}

// The entries of CalendarHeadCommands' replies that end after from_ms, by
// start (then id). *complete is false when the look back may have stopped
// short of an entry that reaches past from_ms: read again with the whole
// look back (LookBackScript). `whole`: replies[0] is that, every entry
// before from_ms that reaches past it.
std::vector<CalendarEntry> CalendarHead(RedisValue* replies, int64_t from_ms, bool whole, bool* complete) {
  std::vector<CalendarEntry> entries;
  entries.reserve(replies[1].elements.size() / 2 + 1);
  *complete = true;
  int64_t booking_span = 0, window_span = 0;
  // Unknown spans: the look back up to the nearest booking, windows
  // included, as an earlier version read it.
  const bool known = !whole && SpansOf(replies[kSpansReply], &booking_span, &window_span);
  auto& back = replies[0].elements;
  bool booking_seen = false;
  int64_t oldest_ms = 0;
  for (size_t i = 0; i + 1 < back.size(); i += 2) {
    const int64_t start_ms = ScoreMs(back[i + 1].str);
    oldest_ms = start_ms;
    const bool window = IsWindowEntry(back[i].str);
    // Only the nearest booking can reach past from_ms; with known spans the
    // windows come from the windows by end.
    if ((!window && booking_seen && !whole) || (window && known)) continue;
    booking_seen |= !window;
    CalendarEntry entry;
    if (TakeEntry(back[i].str, start_ms, &entry) && entry.end_ms > from_ms) entries.push_back(std::move(entry));
  }
  if (known) {
    auto& wins = replies[kWindowsReply].elements;
    int64_t last_end_ms = 0;
    for (size_t i = 0; i + 1 < wins.size(); i += 2) {
      const int64_t end_ms = ScoreMs(wins[i + 1].str);
      last_end_ms = end_ms;
      CalendarEntry entry;
      // Windows starting in the range are the range's.
      if (TakeEntry(wins[i].str, 0, &entry) && end_ms - entry.end_ms < from_ms) {
        entry.start_ms = end_ms - entry.end_ms;
        entry.end_ms = end_ms;
        entries.push_back(std::move(entry));
      }
    }
    // A window not read ends after last_end_ms, so starts after
    // last_end_ms - window_span; a booking not read starts at or before
    // oldest_ms.
    const bool bookings_read = booking_seen || back.size() < 2 * static_cast<size_t>(kLookBack) ||
                               oldest_ms <= from_ms - booking_span;
    const bool windows_read =
        wins.size() < 2 * static_cast<size_t>(kWindowProbe) || last_end_ms - window_span >= from_ms;
    *complete = bookings_read && windows_read;
  } else if (!whole) {
    *complete = booking_seen || back.size() < 2 * static_cast<size_t>(kLookBack);
  }
  std::sort(entries.begin(), entries.end(), [](const CalendarEntry& a, const CalendarEntry& b) {
    return a.start_ms != b.start_ms ? a.start_ms < b.start_ms : a.booking_id < b.booking_id;
  });
  auto& range = replies[1].elements;
  for (size_t i = 0; i + 1 < range.size(); i += 2) {
    CalendarEntry entry;
    if (TakeEntry(range[i].str, ScoreMs(range[i + 1].str), &entry) && entry.end_ms > from_ms) {
      entries.push_back(std::move(entry));
    }
  }
  return entries;
}

// The whole look back when CalendarHeadCommands' stopped short: the
// entries starting before ARGV[1] that end after it, the latest first
// (ZREVRANGEBYSCORE's reply shape), as far back as the calendar's spans
// say one may (cal_walk). KEYS: the calendar, its spans, its windows by end.
const RedisScript& LookBackScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaGuards) + kLuaBytesLess + kCalendarLua + R"lua(
local sb, sw = cal_spans(KEYS[1], KEYS[2])
return cal_walk(KEYS[1], KEYS[3], sb, sw, ARGV[1], tonumber(ARGV[1]), nil, false)
)lua", RedisScript::Access::kReadOnly);
  return *s;
}
std::vector<std::string> LookBackKeys(int partition, absl::string_view instrument_id) {
  return {keys::Calendar(partition, instrument_id), keys::CalendarSpan(partition, instrument_id),
          keys::CalendarWindows(partition, instrument_id)};
}

// CalendarHead's answer `first` (complete false) with LookBackScript's
// reply `back` in place of its look back.
std::vector<CalendarEntry> WithWholeLookBack(std::vector<CalendarEntry> first, RedisValue back, int64_t from_ms) {
  RedisValue replies[kCalendarCommands];
  replies[0] = std::move(back);
  bool complete = true;
  std::vector<CalendarEntry> out = CalendarHead(replies, from_ms, true, &complete);
  for (auto& e : first) {
    if (e.start_ms >= from_ms) out.push_back(std::move(e));
  }
  return out;
}

// Runs reads of one calendar with LegacyProbe last, in one round trip;
// when the probe finds an older calendar, folds it and reads once more.
// The probe's reply stays in the answer.
absl::StatusOr<std::vector<RedisValue>> ReadCalendar(RedisPool* pool, const BookingStore& store, int partition,
                                                     absl::string_view instrument_id,
                                                     const std::vector<std::vector<std::string>>& commands) {
  for (int round = 0;; ++round) {
    LS_ASSIGN_OR_RETURN(auto replies, pool->Pipeline(commands));
    if (replies.size() != commands.size()) {
      return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
    }
    for (const auto& r : replies) {
      if (r.is_error()) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", r.str);
    }
    if (round > 0 || !NeedsFold(replies.back())) return replies;
    LS_RETURN_IF_ERROR(store.FoldCalendar(partition, instrument_id).status());
  }
}

// A document's HMGET d v reply (as DocStore reads it).
absl::StatusOr<std::optional<StoredDoc>> DocOf(RedisValue&& v) {
  if (v.type != RedisValue::Type::kArray || v.elements.size() != 2) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  if (v.elements[0].is_nil()) return std::optional<StoredDoc>();
  StoredDoc doc;
  doc.data = std::move(v.elements[0].str);
  doc.version = std::strtoll(v.elements[1].str.c_str(), nullptr, 10);
  return std::optional<StoredDoc>(std::move(doc));
}

// A document's bytes from an HGET d reply, for readers that need no version
// (left 0): one bulk reply instead of DocOf's array.
std::vector<std::string> DocBytesCommand(std::string key) { return {"HGET", std::move(key), "d"}; }
absl::StatusOr<std::optional<StoredDoc>> DocBytesOf(RedisValue&& v) {
  if (v.is_nil()) return std::optional<StoredDoc>();
  if (v.type != RedisValue::Type::kString) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  StoredDoc doc;
  doc.data = std::move(v.str);
  return std::optional<StoredDoc>(std::move(doc));
}

}  // namespace

absl::StatusOr<std::vector<CalendarEntry>> BookingStore::CalendarRange(
    int partition, absl::string_view instrument_id, int64_t from_ms, int64_t to_ms) const {
  LS_ASSIGN_OR_RETURN(auto replies, ReadCalendar(pool_, *this, partition, instrument_id,
                                                 CalendarHeadCommands(partition, instrument_id, from_ms, to_ms)));
  bool complete = true;
  auto entries = CalendarHead(replies.data(), from_ms, false, &complete);
  if (complete) return entries;
  LS_ASSIGN_OR_RETURN(RedisValue back, pool_->Eval(LookBackScript(), LookBackKeys(partition, instrument_id),
                                                   {std::to_string(from_ms)}));
  return WithWholeLookBack(std::move(entries), std::move(back), from_ms);
}

void BookingStore::PartitionOfAsync(std::string id, Done<std::optional<int>> done) const {
  int p = 0;
  if (IsGeneratedId(id) && absl::SimpleAtoi(id.substr(1, 2), &p)) return done(std::optional<int>(p));
  if (pipeline_ == nullptr) return done(PartitionOf(id));
  pipeline_->Command({"GET", keys::IdLookup(id)}, [done = std::move(done)](absl::StatusOr<RedisValue> v) {
    if (!v.ok()) return done(v.status());
    int p = 0;
    if (v->is_nil() || !absl::SimpleAtoi(v->str, &p)) return done(std::optional<int>());
    done(std::optional<int>(p));
  });
}

void BookingStore::GetDocAsync(std::string key, Done<std::optional<StoredDoc>> done) const {
  if (pipeline_ == nullptr) return done(docs_.Get(key));
  pipeline_->Command({"HMGET", std::move(key), "d", "v"}, [done = std::move(done)](absl::StatusOr<RedisValue> v) {
    if (!v.ok()) return done(v.status());
    done(DocOf(*std::move(v)));
  });
}

namespace {
// The entries whose busy reason only their document tells (an end an older
// version wrote); a maintenance window's is known from its id.
std::vector<size_t> WithoutReason(const std::vector<CalendarEntry>& entries) {
  std::vector<size_t> out;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].busy_reason == 0 && !IsWindowEntry(entries[i].booking_id)) out.push_back(i);
  }
  return out;
}
}  // namespace

absl::StatusOr<BookingStore::CalendarWithDocs> BookingStore::ReadCalendarWithDocs(int partition,
                                                                                  absl::string_view instrument_id,
                                                                                  int64_t from_ms,
                                                                                  int64_t to_ms) const {
  CalendarWithDocs out;
  LS_ASSIGN_OR_RETURN(out.entries, CalendarRange(partition, instrument_id, from_ms, to_ms));
  out.docs.resize(out.entries.size());
  const std::vector<size_t> missing = WithoutReason(out.entries);
  if (missing.empty()) return out;
  std::vector<std::string> ids;
  for (size_t i : missing) ids.push_back(out.entries[i].booking_id);
  LS_ASSIGN_OR_RETURN(auto docs, GetMany(partition, ids));
  for (size_t k = 0; k < missing.size() && k < docs.size(); ++k) out.docs[missing[k]] = std::move(docs[k]);
  return out;
}

void BookingStore::CalendarWithDocsAsync(int partition, std::string instrument_id, int64_t from_ms, int64_t to_ms,
                                         Done<CalendarWithDocs> done) const {
  if (pipeline_ == nullptr) return done(ReadCalendarWithDocs(partition, instrument_id, from_ms, to_ms));
  RedisPipeline* pipe = pipeline_;
  auto head_commands = CalendarHeadCommands(partition, instrument_id, from_ms, to_ms);  // before the move below
  pipe->Pipeline(
      std::move(head_commands),
      [this, pipe, partition, instrument_id = std::move(instrument_id), from_ms, to_ms,
       done = std::move(done)](absl::StatusOr<std::vector<RedisValue>> head) mutable {
        if (!head.ok()) return done(head.status());
        if (head->size() != kCalendarCommands) {
          return done(MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply"));
        }
        if (NeedsFold(head->back())) {
          // An older version's calendar: folded, then read again.
          auto keys = CalendarKeys(partition, instrument_id);  // before the move below
          return pipe->Eval(FoldScript(), std::move(keys), {},
                            [this, partition, instrument_id = std::move(instrument_id), from_ms, to_ms,
                             done = std::move(done)](absl::StatusOr<RedisValue> folded) mutable {
                              if (!folded.ok()) return done(folded.status());
                              CalendarWithDocsAsync(partition, std::move(instrument_id), from_ms, to_ms,
                                                    std::move(done));
                            });
        }
        auto out = std::make_shared<CalendarWithDocs>();
        bool complete = true;
        out->entries = CalendarHead(head->data(), from_ms, false, &complete);
        if (!complete) {
          // Window entries only in the first look back: the whole one, then on.
          return pipe->Eval(LookBackScript(), LookBackKeys(partition, instrument_id), {std::to_string(from_ms)},
                            [this, partition, from_ms, out, done = std::move(done)](
                                absl::StatusOr<RedisValue> back) mutable {
                              if (!back.ok()) return done(back.status());
                              out->entries = WithWholeLookBack(std::move(out->entries), *std::move(back), from_ms);
                              WithDocs(partition, out, std::move(done));
                            });
        }
        WithDocs(partition, out, std::move(done));
      });
}

void BookingStore::WithDocs(int partition, std::shared_ptr<CalendarWithDocs> out, Done<CalendarWithDocs> done) const {
  RedisPipeline* pipe = pipeline_;
  out->docs.resize(out->entries.size());
  std::vector<size_t> missing = WithoutReason(out->entries);
  if (missing.empty()) return done(std::move(*out));
  // Ends an older version wrote: their documents tell the reason.
  std::vector<std::vector<std::string>> reads;
  reads.reserve(missing.size());
  for (size_t i : missing) reads.push_back(DocBytesCommand(keys::Booking(partition, out->entries[i].booking_id)));
  pipe->Pipeline(std::move(reads), [out, missing = std::move(missing), done = std::move(done)](
                                       absl::StatusOr<std::vector<RedisValue>> r) mutable {
    if (!r.ok()) return done(r.status());
    for (size_t k = 0; k < missing.size() && k < r->size(); ++k) {
      auto doc = DocBytesOf(std::move((*r)[k]));
      if (!doc.ok()) return done(doc.status());
      out->docs[missing[k]] = *std::move(doc);
    }
    done(std::move(*out));
  });
}

void BookingStore::CalendarsAsync(std::vector<CalendarRead> reads,
                                  Done<std::vector<std::vector<CalendarEntry>>> done) const {
  using Lists = std::vector<std::vector<CalendarEntry>>;
  if (pipeline_ == nullptr || reads.empty()) {
    Lists out;
    for (const auto& r : reads) {
      auto entries = CalendarRange(r.partition, r.instrument_id, r.from_ms, r.to_ms);
      if (!entries.ok()) return done(entries.status());
      out.push_back(*std::move(entries));
    }
    return done(std::move(out));
  }
  std::vector<std::vector<std::string>> heads;
  heads.reserve(kCalendarCommands * reads.size());
  for (const auto& r : reads) {
    for (auto& c : CalendarHeadCommands(r.partition, r.instrument_id, r.from_ms, r.to_ms)) heads.push_back(std::move(c));
  }
  RedisPipeline* pipe = pipeline_;
  pipe->Pipeline(std::move(heads), [this, pipe, reads = std::move(reads),
                                    done = std::move(done)](absl::StatusOr<std::vector<RedisValue>> head) mutable {
    if (!head.ok()) return done(head.status());
    if (head->size() != kCalendarCommands * reads.size()) {
      return done(MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply"));
    }
    std::vector<size_t> unfolded;  // reads that met an older version's calendar
    std::vector<size_t> short_back;  // reads whose first look back met window entries only
    Lists lists(reads.size());
    for (size_t i = 0; i < reads.size(); ++i) {
      RedisValue* replies = head->data() + i * kCalendarCommands;
      if (NeedsFold(replies[kCalendarCommands - 1])) unfolded.push_back(i);
      bool complete = true;
      lists[i] = CalendarHead(replies, reads[i].from_ms, false, &complete);
      if (!complete) short_back.push_back(i);
    }
    if (unfolded.empty() && !short_back.empty()) {
      // The whole look back of those, then the answer.
      auto left = std::make_shared<std::atomic<size_t>>(short_back.size());
      auto failed = std::make_shared<std::atomic<bool>>(false);
      auto shared_reads = std::make_shared<std::vector<CalendarRead>>(std::move(reads));
      auto shared_lists = std::make_shared<Lists>(std::move(lists));
      auto finish = std::make_shared<Done<Lists>>(std::move(done));
      for (size_t i : short_back) {
        const CalendarRead& r = (*shared_reads)[i];
        pipe->Eval(LookBackScript(), LookBackKeys(r.partition, r.instrument_id), {std::to_string(r.from_ms)},
                   [i, left, failed, shared_reads, shared_lists, finish](absl::StatusOr<RedisValue> back) {
                     if (!back.ok()) {
                       if (!failed->exchange(true)) (*finish)(back.status());
                     } else if (!failed->load()) {
                       (*shared_lists)[i] = WithWholeLookBack(std::move((*shared_lists)[i]), *std::move(back),
                                                              (*shared_reads)[i].from_ms);
                     }
                     if (left->fetch_sub(1) != 1 || failed->load()) return;
                     (*finish)(std::move(*shared_lists));
                   });
      }
      return;
    }
    if (unfolded.empty()) return done(std::move(lists));
    // Folded, then everything read again (once: a fold leaves sentinels).
    auto left = std::make_shared<std::atomic<size_t>>(unfolded.size());
    auto failed = std::make_shared<std::atomic<bool>>(false);
    auto again = std::make_shared<std::vector<CalendarRead>>(std::move(reads));
    auto finish = std::make_shared<Done<Lists>>(std::move(done));
    for (size_t i : unfolded) {
      pipe->Eval(FoldScript(), CalendarKeys((*again)[i].partition, (*again)[i].instrument_id), {},
                 [this, left, failed, again, finish](absl::StatusOr<RedisValue> folded) {
                   if (!folded.ok() && !failed->exchange(true)) (*finish)(folded.status());
                   if (left->fetch_sub(1) != 1 || failed->load()) return;
                   CalendarsAsync(std::move(*again), std::move(*finish));
                 });
    }
  });
}

absl::StatusOr<std::vector<std::string>> BookingStore::Due(int partition, int64_t now_ms, int offset,
                                                           int limit) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"ZRANGEBYSCORE", keys::Due(partition), "-inf",
                                                    std::to_string(now_ms), "LIMIT",
                                                    std::to_string(offset), std::to_string(limit)}));
  std::vector<std::string> out;
  for (auto& e : v.elements) out.push_back(std::move(e.str));
  return out;
}

absl::Status BookingStore::RememberDue(int partition, absl::string_view booking_id, int64_t due_ms) const {
  return pool_->Command({"ZADD", keys::Due(partition), std::to_string(due_ms), std::string(booking_id)}).status();
}

absl::StatusOr<std::optional<int64_t>> BookingStore::NextCalendarStart(int partition,
                                                                       absl::string_view instrument_id,
                                                                       int64_t after_ms,
                                                                       absl::string_view except) const {
  // Two at most: `except` itself may be the first.
  LS_ASSIGN_OR_RETURN(auto replies,
                      ReadCalendar(pool_, *this, partition, instrument_id,
                                   {{"ZRANGEBYSCORE", keys::Calendar(partition, instrument_id),
                                     "(" + std::to_string(after_ms), "+inf", "WITHSCORES", "LIMIT", "0", "2"},
                                    LegacyProbe(partition, instrument_id)}));
  const auto& v = replies[0];
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) {
    CalendarEntry entry;
    if (!ParseCalendarMember(v.elements[i].str, ScoreMs(v.elements[i + 1].str), &entry) ||
        entry.booking_id == except) {
      continue;
    }
    return std::optional<int64_t>(entry.start_ms);
  }
  return std::optional<int64_t>();
}

absl::StatusOr<std::vector<BookingStore::ReportDueEntry>> BookingStore::ReportsDue(int partition, int64_t now_ms,
                                                                                   int offset, int limit) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"ZRANGEBYSCORE", keys::ReportDue(partition), "-inf",
                                                    std::to_string(now_ms), "WITHSCORES", "LIMIT",
                                                    std::to_string(offset), std::to_string(limit)}));
  if (v.type != RedisValue::Type::kArray || v.elements.size() % 2 != 0) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  std::vector<ReportDueEntry> out;
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) {
    out.push_back({v.elements[i].str, ScoreMs(v.elements[i + 1].str)});
  }
  return out;
}

absl::Status BookingStore::ForgetDue(int partition, absl::string_view booking_id) const {
  return pool_->Command({"ZREM", keys::Due(partition), std::string(booking_id)}).status();
}

absl::StatusOr<int64_t> BookingStore::AddDueIfAbsent(const std::vector<DueEntry>& entries) const {
  std::vector<std::vector<std::string>> commands;
  for (const auto& e : entries) {
    commands.push_back({"ZADD", keys::Due(e.partition), "NX", std::to_string(e.due_ms), e.booking_id});
  }
  if (commands.empty()) return 0;
  LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(commands));
  int64_t added = 0;
  for (const auto& r : replies) {
    if (r.is_error()) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "due set write failed");
    added += r.integer;
  }
  return added;
}

absl::StatusOr<std::vector<BookingStore::SweepRange>> BookingStore::SweepRanges(int partition, int64_t now_ms,
                                                                                int limit) const {
  LS_ASSIGN_OR_RETURN(auto head, pool_->Pipeline({{"SMEMBERS", keys::SweepInstruments(partition)},
                                                  {"HGETALL", keys::SweepCursors(partition)}}));
  if (head.size() != 2 || head[0].type != RedisValue::Type::kArray || head[1].type != RedisValue::Type::kArray) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  absl::flat_hash_map<std::string, std::string> cursors;
  for (size_t i = 0; i + 1 < head[1].elements.size(); i += 2) {
    cursors[head[1].elements[i].str] = head[1].elements[i + 1].str;
  }
  std::vector<SweepRange> out;
  std::vector<std::vector<std::string>> reads;
  for (const auto& member : head[0].elements) {
    SweepRange range;
    range.instrument_id = member.str;
    auto it = cursors.find(member.str);
    range.has_cursor = it != cursors.end() && absl::SimpleAtoi(it->second, &range.cursor_ms);
    reads.push_back({"ZRANGEBYSCORE", keys::ByInstrument(partition, member.str),
                     range.has_cursor ? std::to_string(range.cursor_ms) : "-inf", std::to_string(now_ms),
                     "WITHSCORES", "LIMIT", "0", std::to_string(limit)});
    out.push_back(std::move(range));
  }
  if (reads.empty()) return out;
  LS_ASSIGN_OR_RETURN(auto ranges, pool_->Pipeline(reads));
  for (size_t r = 0; r < ranges.size() && r < out.size(); ++r) {
    const auto& e = ranges[r].elements;
    for (size_t i = 0; i + 1 < e.size(); i += 2) {
      SweepEntry entry;
      entry.booking_id = e[i].str;
      if (!absl::SimpleAtoi(e[i + 1].str, &entry.start_ms)) {
        return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected index score");
      }
      out[r].entries.push_back(std::move(entry));
    }
  }
  return out;
}

absl::Status BookingStore::SetSweepCursor(int partition, absl::string_view instrument_id, int64_t ms) const {
  return pool_->Command({"HSET", keys::SweepCursors(partition), std::string(instrument_id), std::to_string(ms)})
      .status();
}

absl::Status BookingStore::RecordInstrumentChange(absl::string_view instrument_id,
                                                  const InstrumentChange& change) const {
  const int64_t ns = absl::ToUnixNanos(change.time);
  const std::string key = keys::InstrumentChanges(keys::Partition(instrument_id), instrument_id);
  LS_RETURN_IF_ERROR(pool_
                         ->Command({"ZADD", key, std::to_string(absl::ToUnixMillis(change.time)),
                                    absl::StrCat(ns, "|", change.kind, "|", change.state_before, "|",
                                                 change.state_after, "|", change.version)})
                         .status());
  // Kept for kInstrumentChangeRetention before the latest, and the latest
  // change older than that (the one in force then: the state at a later
  // moment is known only with the change before it). A sweep later than
  // that after a check-in closed finds the state then unknown (the booking
  // is cancelled, never charged on a guess). Housekeeping only: a trim
  // that fails (a Redis user without ZREMRANGEBYSCORE) leaves the change
  // recorded, and the next change trims again. Not atomic with another
  // replica's ZADD: a change recorded meanwhile below the kept one may go
  // (the kept one is newer), one above it stays.
  const int64_t cutoff_ms = absl::ToUnixMillis(change.time - kInstrumentChangeRetention);
  absl::StatusOr<RedisValue> older = pool_->Command({"ZREVRANGEBYSCORE", key, absl::StrCat("(", cutoff_ms), "-inf",
                                                     "WITHSCORES", "LIMIT", "0", "1"});
  if (older.ok() && older->type == RedisValue::Type::kArray && older->elements.size() == 2) {
    (void)pool_->Command({"ZREMRANGEBYSCORE", key, "-inf", "(" + older->elements[1].str});
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BookingStore::InstrumentChange>> BookingStore::InstrumentChanges(
    absl::string_view instrument_id) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"ZRANGEBYSCORE",
                                                    keys::InstrumentChanges(keys::Partition(instrument_id),
                                                                            instrument_id),
                                                    "-inf", "+inf"}));
  if (v.type != RedisValue::Type::kArray) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  std::vector<InstrumentChange> out;
  for (const auto& m : v.elements) {
    std::vector<absl::string_view> parts = absl::StrSplit(m.str, '|');
    int64_t ns = 0;
    InstrumentChange c;
    if ((parts.size() != 4 && parts.size() != 5) || !absl::SimpleAtoi(parts[0], &ns) ||
        !absl::SimpleAtoi(parts[1], &c.kind) || !absl::SimpleAtoi(parts[2], &c.state_before) ||
        !absl::SimpleAtoi(parts[3], &c.state_after) || (parts.size() == 5 && !absl::SimpleAtoi(parts[4], &c.version))) {
      return MakeError(absl::StatusCode::kInternal, "CORRUPT_DOCUMENT", "an instrument change is unreadable");
    }
    c.time = absl::FromUnixNanos(ns);
    out.push_back(c);
  }
  // Members of one millisecond sort by their text: by time, as the score
  // does not tell them apart.
  std::stable_sort(out.begin(), out.end(),
                   [](const InstrumentChange& a, const InstrumentChange& b) { return a.time < b.time; });
  return out;
}

absl::StatusOr<std::vector<std::string>> BookingStore::IndexRange(int partition,
                                                                  absl::string_view instrument_id,
                                                                  const std::string& after,
                                                                  int limit) const {
  // Continues right after `after`'s own entry (entries are never removed);
  // should it be missing, after every entry up to its start.
  static const RedisScript* script = new RedisScript(R"lua(
local from = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
  if rank then from = rank + 1 else from = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[2]) end
end
return redis.call('ZRANGE', KEYS[1], from, from + tonumber(ARGV[3]) - 1, 'WITHSCORES')
)lua", RedisScript::Access::kReadOnly);
  std::string after_id, after_start = "0";
  if (!after.empty()) {
    const size_t bar = after.find('|');
    int64_t start = 0;
    if (bar == std::string::npos || !absl::SimpleAtoi(after.substr(0, bar), &start)) {
      return InvalidField("page_token",
                          "not a token from the previous page of this same query; start again without page_token",
                          "INVALID_PAGE_TOKEN");
    }
    after_id = after.substr(bar + 1);
    after_start = std::to_string(start);
  }
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(*script, {keys::ByInstrument(partition, instrument_id)},
                                                {after_id, after_start, std::to_string(limit)}));
  if (v.type != RedisValue::Type::kArray || v.elements.size() % 2 != 0) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected storage reply");
  }
  std::vector<std::string> out;
  out.reserve(v.elements.size() / 2);
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) {
    int64_t start = 0;
    if (!absl::SimpleAtoi(v.elements[i + 1].str, &start)) {
      return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected index score");
    }
    out.push_back(keys::IndexMember(start, v.elements[i].str));
  }
  return out;
}

absl::StatusOr<int64_t> BookingStore::MigrateIndexes() const {
  // One older index at a time: its "<start>|<id>" members become id ->
  // start in the current index, and the older key goes, in one step.
  static const RedisScript* script = new RedisScript(R"lua(
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, m in ipairs(members) do
  local bar = string.find(m, '|', 1, true)
  if bar then redis.call('ZADD', KEYS[2], string.sub(m, 1, bar - 1), string.sub(m, bar + 1)) end
end
redis.call('DEL', KEYS[1])
return #members
)lua");
  auto move = [this](int p, const std::string& instrument, const std::string& key) -> absl::StatusOr<int64_t> {
    LS_ASSIGN_OR_RETURN(RedisValue n, pool_->Eval(*script, {key, keys::ByInstrument(p, instrument)}, {}));
    return n.integer;
  };
  return ForEachOlderKey(pool_, "{booking}:migrated:bystart", "{bk:*}:byinstr:*", "zset", keys::LegacyByInstrument,
                         move);
}

namespace {
// Scored listing index: the entries of ranks [first, last] around a cursor.
// KEYS[1] index; ARGV: 1 'asc'|'desc', 2 lowest score (inclusive, or
// '-inf'), 3 highest score (exclusive, or '+inf'), 4 cursor score ('':
// none), 5 cursor id, 6 limit. Members compare as bytes, as Redis orders
// them (Lua's < on strings follows the locale).
const RedisScript& ListingScript() {
  static const RedisScript* s = new RedisScript(std::string(kLuaBytesLess) + R"lua(
local key, limit = KEYS[1], tonumber(ARGV[6])
local function below(score) return redis.call('ZCOUNT', key, '-inf', '(' .. score) end
-- First rank whose (score, member) comes after the cursor (strict) or not
-- before it; ties of one score are ranked by member, so bisect them.
local function position(score, id, strict)
  local a = below(score)
  local b = a + redis.call('ZCOUNT', key, score, score)
  while a < b do
    local mid = math.floor((a + b) / 2)
    local m = redis.call('ZRANGE', key, mid, mid)[1]
    if ls_bytes_less(m, id) or (strict and m == id) then a = mid + 1 else b = mid end
  end
  return a
end
local from, to = below(ARGV[2]), below(ARGV[3])
if ARGV[1] == 'asc' then
  if ARGV[4] ~= '' then from = math.max(from, position(ARGV[4], ARGV[5], true)) end
  to = math.min(to, from + limit)
else
  if ARGV[4] ~= '' then to = math.min(to, position(ARGV[4], ARGV[5], false)) end
  from = math.max(from, to - limit)
end
if from >= to then return {} end
return redis.call('ZRANGE', key, from, to - 1, 'WITHSCORES')
)lua", RedisScript::Access::kReadOnly);
  return *s;
}

std::string LexBound(char open, int64_t ms) { return absl::StrFormat("%c%015d", open, std::max<int64_t>(ms, 0)); }
}  // namespace

namespace {

// ListingPages' commands: ZRANGEBYLEX for lex sources, the listing script
// (EVALSHA) for scored ones.
std::vector<std::vector<std::string>> ListingCommands(const std::vector<ListingSource>& sources, bool descending,
                                                      int64_t lo_ms, int64_t hi_ms,
                                                      const std::optional<ListingEntry>& after, int limit) {
  const std::string lo = lo_ms == std::numeric_limits<int64_t>::min() ? "-inf" : std::to_string(lo_ms);
  const std::string hi = hi_ms == std::numeric_limits<int64_t>::max() ? "+inf" : std::to_string(hi_ms);
  std::vector<std::vector<std::string>> commands;
  for (const auto& src : sources) {
    if (src.lex) {
      // Members "<ms>|<id>" at one score: a byte range, the cursor its edge.
      std::string min = lo == "-inf" ? "-" : LexBound('[', lo_ms);
      std::string max = hi == "+inf" ? "+" : LexBound('(', hi_ms);
      if (after) {
        const std::string edge = "(" + keys::IndexMember(after->ms, after->id);
        (descending ? max : min) = edge;
      }
      if (descending) {
        commands.push_back({"ZREVRANGEBYLEX", src.key, max, min, "LIMIT", "0", std::to_string(limit)});
      } else {
        commands.push_back({"ZRANGEBYLEX", src.key, min, max, "LIMIT", "0", std::to_string(limit)});
      }
    } else if (!after && !descending) {
      // A first page in ascending order needs no cursor arithmetic: the
      // script's answer is exactly this range read (no Lua step per source).
      commands.push_back({"ZRANGEBYSCORE", src.key, lo, hi == "+inf" ? hi : "(" + hi, "WITHSCORES", "LIMIT", "0",
                          std::to_string(limit)});
    } else {
      commands.push_back({"EVALSHA", ListingScript().sha1(), "1", src.key, descending ? "desc" : "asc", lo, hi,
                          after ? std::to_string(after->ms) : "", after ? after->id : "", std::to_string(limit)});
    }
  }
  return commands;
}

// A score as Redis formats one ("%.17g" of a whole number of ms): plain
// digits read here, anything else by SimpleAtoi (which refuses what is not
// a whole number).
bool ScoreMs(const std::string& text, int64_t* ms) {
  const size_t sign = !text.empty() && text[0] == '-' ? 1 : 0;
  if (text.size() <= sign || text.size() - sign > 18) return absl::SimpleAtoi(text, ms);
  int64_t v = 0;
  for (size_t i = sign; i < text.size(); ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') return absl::SimpleAtoi(text, ms);
    v = v * 10 + (c - '0');
  }
  *ms = sign != 0 ? -v : v;
  return true;
}

// The replies' strings are moved into the entries.
absl::StatusOr<std::vector<std::vector<ListingEntry>>> ParseListingPages(const std::vector<ListingSource>& sources,
                                                                          bool descending,
                                                                          std::vector<RedisValue>& replies) {
  auto unexpected = [] { return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected listing reply"); };
  std::vector<std::vector<ListingEntry>> out(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    if (i >= replies.size() || replies[i].type != RedisValue::Type::kArray) return unexpected();
    auto& e = replies[i].elements;
    out[i].reserve(sources[i].lex ? e.size() : e.size() / 2);
    if (sources[i].lex) {
      for (const auto& m : e) {
        const size_t bar = m.str.find('|');
        ListingEntry entry;
        if (bar == std::string::npos || !absl::SimpleAtoi(m.str.substr(0, bar), &entry.ms)) continue;
        entry.id = m.str.substr(bar + 1);
        entry.partition = sources[i].partition;
        out[i].push_back(std::move(entry));
      }
    } else {
      if (e.size() % 2 != 0) return unexpected();
      for (size_t j = 0; j + 1 < e.size(); j += 2) {
        ListingEntry entry;
        entry.id = std::move(e[j].str);
        if (!ScoreMs(e[j + 1].str, &entry.ms)) return unexpected();
        entry.partition = sources[i].partition;
        out[i].push_back(std::move(entry));
      }
      if (descending) std::reverse(out[i].begin(), out[i].end());
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<ListingEntry>>> BookingStore::ListingPages(
    const std::vector<ListingSource>& sources, bool descending, int64_t lo_ms, int64_t hi_ms,
    const std::optional<ListingEntry>& after, int limit) const {
  std::vector<std::vector<std::string>> commands = ListingCommands(sources, descending, lo_ms, hi_ms, after, limit);
  if (commands.empty()) return std::vector<std::vector<ListingEntry>>();
  LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(commands));
  const bool unknown = std::any_of(replies.begin(), replies.end(), [](const RedisValue& v) {
    return v.is_error() && absl::StartsWith(v.str, "NOSCRIPT");
  });
  if (unknown) {
    // First use on a server: load it there, then once more. On Redis
    // Cluster each master has its own script cache, so load it through the
    // key of every source that was refused (an empty page: limit 0).
    std::set<int> loaded;  // slots
    for (size_t i = 0; i < sources.size() && i < replies.size(); ++i) {
      if (!replies[i].is_error() || !absl::StartsWith(replies[i].str, "NOSCRIPT")) continue;
      if (!loaded.insert(RedisKeySlot(sources[i].key)).second) continue;
      LS_RETURN_IF_ERROR(pool_->Eval(ListingScript(), {sources[i].key}, {"asc", "0", "0", "", "", "0"}).status());
    }
    LS_ASSIGN_OR_RETURN(replies, pool_->Pipeline(commands));
  }
  return ParseListingPages(sources, descending, replies);
}

void BookingStore::ListingPagesAsync(std::vector<ListingSource> sources, bool descending, int64_t lo_ms,
                                     int64_t hi_ms, std::optional<ListingEntry> after, int limit,
                                     Done<std::vector<std::vector<ListingEntry>>> done) const {
  if (pipeline_ == nullptr) return done(ListingPages(sources, descending, lo_ms, hi_ms, after, limit));
  std::vector<std::vector<std::string>> commands = ListingCommands(sources, descending, lo_ms, hi_ms, after, limit);
  if (commands.empty()) return done(std::vector<std::vector<ListingEntry>>());
  // Every source's read at once (one write per shard); the scripts as Eval
  // calls, which load the script on a node that does not know it.
  std::vector<RedisPipeline::Request> requests(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    std::vector<std::string>& c = commands[i];
    if (c[0] == "EVALSHA") {  // EVALSHA sha 1 key args...
      requests[i].script = &ListingScript();
      requests[i].keys = 1;
      requests[i].argv.assign(std::make_move_iterator(c.begin() + 3), std::make_move_iterator(c.end()));
    } else {
      requests[i].argv = std::move(c);
    }
  }
  pipeline_->Batch(std::move(requests), [sources = std::move(sources), descending, done = std::move(done)](
                                            std::vector<absl::StatusOr<RedisValue>> replies) {
    std::vector<RedisValue> values;
    values.reserve(replies.size());
    for (auto& r : replies) {
      if (!r.ok()) return done(r.status());
      values.push_back(*std::move(r));
    }
    done(ParseListingPages(sources, descending, values));
  });
}

void BookingStore::ListingSizesAsync(std::vector<ListingSource> sources, Done<std::vector<int64_t>> done) const {
  if (pipeline_ == nullptr || sources.empty()) return done(ListingSizes(sources));
  std::vector<std::vector<std::string>> commands;
  for (const auto& src : sources) commands.push_back({"ZCARD", src.key});
  pipeline_->Pipeline(std::move(commands), [done = std::move(done)](absl::StatusOr<std::vector<RedisValue>> replies) {
    if (!replies.ok()) return done(replies.status());
    std::vector<int64_t> out;
    for (const auto& r : *replies) out.push_back(r.type == RedisValue::Type::kInteger ? r.integer : 0);
    done(std::move(out));
  });
}

void BookingStore::ListingSpansAsync(Done<std::vector<int64_t>> done) const {
  if (pipeline_ == nullptr) return done(ListingSpans());
  std::vector<std::vector<std::string>> commands;
  for (int p = 0; p < kPartitions; ++p) commands.push_back({"GET", keys::ListSpan(p)});
  pipeline_->Pipeline(std::move(commands), [done = std::move(done)](absl::StatusOr<std::vector<RedisValue>> replies) {
    if (!replies.ok()) return done(replies.status());
    std::vector<int64_t> out(kPartitions, 0);
    for (size_t p = 0; p < replies->size() && p < out.size(); ++p) {
      if (!(*replies)[p].is_nil()) absl::SimpleAtoi((*replies)[p].str, &out[p]);
    }
    done(std::move(out));
  });
}

void BookingStore::GetDocsAsync(std::vector<std::string> doc_keys,
                                Done<std::vector<std::optional<StoredDoc>>> done) const {
  if (pipeline_ == nullptr || doc_keys.empty()) return done(docs_.GetMany(doc_keys));
  std::vector<std::vector<std::string>> commands;
  commands.reserve(doc_keys.size());
  for (auto& k : doc_keys) commands.push_back(DocBytesCommand(std::move(k)));
  pipeline_->Pipeline(std::move(commands), [done = std::move(done)](absl::StatusOr<std::vector<RedisValue>> replies) {
    if (!replies.ok()) return done(replies.status());
    std::vector<std::optional<StoredDoc>> out;
    out.reserve(replies->size());
    for (auto& r : *replies) {
      auto doc = DocBytesOf(std::move(r));
      if (!doc.ok()) return done(doc.status());
      out.push_back(*std::move(doc));
    }
    done(std::move(out));
  });
}

absl::StatusOr<std::vector<int64_t>> BookingStore::ListingSizes(const std::vector<ListingSource>& sources) const {
  std::vector<std::vector<std::string>> commands;
  for (const auto& src : sources) commands.push_back({"ZCARD", src.key});
  std::vector<int64_t> out;
  if (commands.empty()) return out;
  LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(commands));
  for (const auto& r : replies) out.push_back(r.type == RedisValue::Type::kInteger ? r.integer : 0);
  return out;
}

absl::StatusOr<std::vector<int64_t>> BookingStore::ListingSpans() const {
  // One GET per partition (each its own slot on Redis Cluster), pipelined.
  std::vector<std::vector<std::string>> commands;
  for (int p = 0; p < kPartitions; ++p) commands.push_back({"GET", keys::ListSpan(p)});
  LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(commands));
  std::vector<int64_t> out(kPartitions, 0);
  for (size_t p = 0; p < replies.size() && p < out.size(); ++p) {
    if (!replies[p].is_nil()) absl::SimpleAtoi(replies[p].str, &out[p]);
  }
  return out;
}

absl::Status BookingStore::RaiseListingSpan(int partition, int64_t ms) const {
  static const RedisScript* script = new RedisScript(R"lua(
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
)lua");
  return pool_->Eval(*script, {keys::ListSpan(partition)}, {std::to_string(ms)}).status();
}

absl::StatusOr<ListingOperator> BookingStore::GetListingOperator(int partition,
                                                                absl::string_view instrument_id) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HMGET", keys::ListOperator(partition, instrument_id), "org",
                                                    "etag", "next_org", "next", "v", "cand"}));
  ListingOperator out;
  if (v.type != RedisValue::Type::kArray || v.elements.size() != 6) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected HMGET reply");
  }
  auto number = [&](size_t i, int64_t* n) { return v.elements[i].is_nil() || absl::SimpleAtoi(v.elements[i].str, n); };
  if (!number(1, &out.etag) || !number(3, &out.next_etag) || !number(4, &out.version)) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected listing operator record");
  }
  out.known = !v.elements[1].is_nil();
  out.org = v.elements[0].str;
  out.next_org = v.elements[2].str;
  if (!v.elements[5].is_nil()) out.announced = absl::StrSplit(v.elements[5].str, '\n', absl::SkipEmpty());
  return out;
}

bool ListingOperator::Outdates(const std::string& operator_org, int64_t read_etag) const {
  return (known && etag > read_etag && org != operator_org) ||
         (next_etag > read_etag && next_org != operator_org);
}

absl::StatusOr<BookingStore::RefileOutcome> BookingStore::RefileStep(
    int partition, absl::string_view instrument_id, const ListingOperator& seen, const std::string& to_org,
    int64_t etag, const std::vector<RefileOp>& ops, RefilePhase phase) const {
  // KEYS: the record, then one index per op. ARGV: etag, seen known (1/0),
  // seen org, seen etag, to org, phase (a: announce, b: batch, f: finish),
  // then per op: +/-, score, member.
  static const RedisScript* script = new RedisScript(std::string(kLuaGuards) + R"lua(
local cur = redis.call('HMGET', KEYS[1], 'org', 'etag')
if cur[2] and tonumber(cur[2]) >= tonumber(ARGV[1]) then return 1 end
if (cur[2] and ARGV[2] ~= '1') or (not cur[2] and ARGV[2] == '1') then return 2 end
if cur[2] and (cur[1] ~= ARGV[3] or cur[2] ~= ARGV[4]) then return 2 end
-- Every write below must succeed once begun.
for i = 2, #KEYS do
  if not ls_type_is(KEYS[i], 'zset') then
    return redis.error_reply('WRONGTYPE a listing index of the re-filing step')
  end
end
local nx = redis.call('HGET', KEYS[1], 'next')
if ARGV[6] == 'a' then
  -- Creates from an operator read before this change answer OPERATOR.
  if not nx or tonumber(nx) < tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'next', ARGV[1], 'next_org', ARGV[5])
    redis.call('HINCRBY', KEYS[1], 'v', 1)
  end
  -- Every operator announced until one completes (the re-filings that may
  -- have filed entries under it meanwhile, and stop once a later one is
  -- announced: the later one re-files from them too).
  local cand = redis.call('HGET', KEYS[1], 'cand') or ''
  if not string.find('\n' .. cand .. '\n', '\n' .. ARGV[5] .. '\n', 1, true) then
    redis.call('HSET', KEYS[1], 'cand', cand .. '\n' .. ARGV[5])
  end
  return 0
end
-- A later change is under way: it re-files every document (from what this
-- one wrote so far too), nothing more to do here.
if nx and tonumber(nx) > tonumber(ARGV[1]) then return 1 end
local k = 2
for i = 7, #ARGV, 3 do
  if ARGV[i] == '-' then
    redis.call('ZREM', KEYS[k], ARGV[i + 2])
  else
    redis.call('ZADD', KEYS[k], ARGV[i + 1], ARGV[i + 2])
  end
  k = k + 1
end
if ARGV[6] == 'f' then
  redis.call('HSET', KEYS[1], 'org', ARGV[5], 'etag', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'v', 1)
  redis.call('HDEL', KEYS[1], 'cand')
  if nx and tonumber(nx) <= tonumber(ARGV[1]) then redis.call('HDEL', KEYS[1], 'next', 'next_org') end
end
return 0
)lua");
  std::vector<std::string> keys = {keys::ListOperator(partition, instrument_id)};
  const char* phase_arg = phase == RefilePhase::kAnnounce ? "a" : phase == RefilePhase::kBatch ? "b" : "f";
  std::vector<std::string> args = {std::to_string(etag), seen.known ? "1" : "0", seen.org,
                                   std::to_string(seen.etag), to_org, phase_arg};
  for (const RefileOp& op : ops) {
    keys.push_back(op.key);
    args.insert(args.end(), {op.remove ? "-" : "+", std::to_string(op.score), op.member});
  }
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Eval(*script, keys, args));
  if (v.type != RedisValue::Type::kInteger) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected re-filing reply");
  }
  switch (v.integer) {
    case 0: return RefileOutcome::kApplied;
    case 1: return RefileOutcome::kDone;
    case 2: return RefileOutcome::kMoved;
    default: return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected re-filing reply");
  }
}

absl::Status BookingStore::AddListings(const std::vector<std::pair<ListingSource, ListingEntry>>& entries) const {
  std::vector<std::vector<std::string>> commands;
  for (const auto& [src, e] : entries) {
    if (src.lex) {
      commands.push_back({"ZADD", src.key, "0", keys::IndexMember(e.ms, e.id)});
    } else {
      commands.push_back({"ZADD", src.key, std::to_string(e.ms), e.id});
    }
  }
  if (commands.empty()) return absl::OkStatus();
  LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(commands));
  for (const auto& r : replies) {
    if (r.is_error()) return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "listing index write failed");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, std::vector<std::string>>> BookingStore::ScanKeys(
    const std::string& cursor, const std::string& pattern) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}));
  if (v.type != RedisValue::Type::kArray || v.elements.size() != 2) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected SCAN reply");
  }
  std::vector<std::string> found;
  for (auto& k : v.elements[1].elements) found.push_back(std::move(k.str));
  return std::make_pair(v.elements[0].str, std::move(found));
}

absl::StatusOr<std::vector<bool>> BookingStore::HoldAny(
    const std::vector<std::pair<std::string, std::vector<std::string>>>& sets) const {
  std::vector<std::vector<std::string>> commands;
  for (const auto& [key, members] : sets) {
    if (members.empty()) continue;
    commands.push_back({"ZMSCORE", key});
    commands.back().insert(commands.back().end(), members.begin(), members.end());
  }
  std::vector<bool> out(sets.size(), false);
  if (commands.empty()) return out;
  LS_ASSIGN_OR_RETURN(auto replies, pool_->Pipeline(commands));
  size_t r = 0;
  for (size_t i = 0; i < sets.size(); ++i) {
    if (sets[i].second.empty()) continue;
    if (r >= replies.size() || replies[r].type != RedisValue::Type::kArray) {
      return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected ZMSCORE reply");
    }
    for (const auto& score : replies[r].elements) out[i] = out[i] || !score.is_nil();
    ++r;
  }
  return out;
}

absl::StatusOr<std::optional<int>> BookingStore::PartitionOf(absl::string_view id) const {
  int p = 0;
  if (IsGeneratedId(id) && absl::SimpleAtoi(id.substr(1, 2), &p)) return std::optional<int>(p);
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"GET", keys::IdLookup(id)}));
  if (v.is_nil() || !absl::SimpleAtoi(v.str, &p)) return std::optional<int>();
  return std::optional<int>(p);
}

absl::StatusOr<bool> BookingStore::ReserveId(absl::string_view id, int partition) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"SET", keys::IdLookup(id),
                                                    std::to_string(partition), "NX"}));
  return !v.is_nil();
}

absl::Status BookingStore::ReleaseId(absl::string_view id) const {
  return pool_->Command({"DEL", keys::IdLookup(id)}).status();
}

namespace {

std::vector<std::string> ClaimCommand(const std::string& key, const std::string& fingerprint) {
  return {"SET", key, fingerprint, "NX", "GET", "EX", std::to_string(kIdempotencyTtlSeconds)};
}

absl::StatusOr<std::optional<std::string>> ClaimHolder(const RedisValue& v) {
  if (v.is_nil()) return std::optional<std::string>();
  if (v.type != RedisValue::Type::kString && v.type != RedisValue::Type::kStatus) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected reply to a request_id claim");
  }
  return std::optional<std::string>(v.str);
}

const RedisScript& ReleaseClaimScript() {
  static const RedisScript* s = new RedisScript(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua");
  return *s;
}

}  // namespace

absl::StatusOr<std::optional<std::string>> BookingStore::ClaimRequest(const std::string& key,
                                                                      const std::string& fingerprint) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command(ClaimCommand(key, fingerprint)));
  return ClaimHolder(v);
}

void BookingStore::ClaimRequestAsync(const std::string& key, const std::string& fingerprint,
                                     std::function<void(absl::StatusOr<std::optional<std::string>>)> done) const {
  if (pipeline_ == nullptr) return done(ClaimRequest(key, fingerprint));
  pipeline_->Command(ClaimCommand(key, fingerprint), [done = std::move(done)](absl::StatusOr<RedisValue> v) {
    if (!v.ok()) return done(v.status());
    done(ClaimHolder(*v));
  });
}

absl::Status BookingStore::ReleaseRequest(const std::string& key, const std::string& fingerprint) const {
  return pool_->Eval(ReleaseClaimScript(), {key}, {fingerprint}).status();
}

absl::StatusOr<std::optional<std::string>> BookingStore::FindReplayInDocument(const std::string& key,
                                                                              const std::string& fingerprint) const {
  LS_ASSIGN_OR_RETURN(RedisValue v, pool_->Command({"HMGET", key, "f", "r", "d"}));
  if (v.type != RedisValue::Type::kArray || v.elements.size() != 3) {
    return MakeError(absl::StatusCode::kInternal, "STORAGE_ERROR", "unexpected reply to a record read");
  }
  if (v.elements[0].is_nil() || fingerprint.empty()) return std::optional<std::string>();
  if (v.elements[0].str != fingerprint) return RequestIdReused();
  return std::optional<std::string>(v.elements[v.elements[1].is_nil() ? 2 : 1].str);
}

void BookingStore::ReleaseRequestAsync(const std::string& key, const std::string& fingerprint,
                                       std::function<void()> then) const {
  if (pipeline_ == nullptr) {
    ReleaseRequest(key, fingerprint).IgnoreError();
    return then();
  }
  pipeline_->Eval(ReleaseClaimScript(), {key}, {fingerprint},
                  [then = std::move(then)](absl::StatusOr<RedisValue>) { then(); });
}

}  // namespace labshare::booking
