// Lua helpers for the checks a multi-write step makes before its first
// write. Redis does not roll a script back: a command that fails halfway
// leaves the writes before it in place. So a step first proves that none of
// its writes can fail (each key has the type it is written as, each counter
// stays an exact int64), and only then writes. Prepend kLuaGuards to a
// script's source.
//
//   ls_type_is(key, want)  true when KEYS' key is absent or of type `want`
//                          ('hash', 'zset', 'set', 'list', 'stream', 'string')
//   ls_add(a, b)           a + b as a decimal string, exact over int64, or nil
//                          when a or b is not an integer Redis' HINCRBY takes
//                          or the sum leaves int64 (a nil/false counts as 0)
//
// kLuaBytesLess (prepend it too where needed):
//   ls_bytes_less(a, b)    whether string a ranks before b as Redis orders
//                          sorted-set members of one score: as bytes (Lua's
//                          < on strings follows the locale)
#ifndef LABSHARE_COMMON_LUA_GUARDS_H_
#define LABSHARE_COMMON_LUA_GUARDS_H_

namespace labshare {

inline constexpr char kLuaGuards[] = R"lua(
local function ls_type_is(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == want
end
-- An integer string as (hi, lo) with value hi * 1e9 + lo, both exact doubles.
local function ls_split(s)
  if type(s) ~= 'string' then return nil end
  if s ~= '0' and not string.match(s, '^%-?[1-9]%d*$') then return nil end
  local neg = string.sub(s, 1, 1) == '-'
  local d = neg and string.sub(s, 2) or s
  local n = #d
  if n > 19 then return nil end
  local lo = tonumber(string.sub(d, math.max(1, n - 8)))
  local hi = n > 9 and tonumber(string.sub(d, 1, n - 9)) or 0
  if neg then return -hi, -lo end
  return hi, lo
end
local function ls_add(a, b)
  local ah, al = ls_split(a or '0')
  local bh, bl = ls_split(b or '0')
  if not ah or not bh then return nil end
  if ah > 9223372036 or (ah == 9223372036 and al > 854775807) then return nil end
  if bh > 9223372036 or (bh == 9223372036 and bl > 854775807) then return nil end
  if ah < -9223372036 or (ah == -9223372036 and al < -854775808) then return nil end
  if bh < -9223372036 or (bh == -9223372036 and bl < -854775808) then return nil end
  local h, l = ah + bh, al + bl
  local carry = math.floor(l / 1e9)
  h, l = h + carry, l - carry * 1e9
  if h > 9223372036 or (h == 9223372036 and l > 854775807) then return nil end
  if h < -9223372037 or (h == -9223372037 and l < 145224192) then return nil end
  if h >= 0 then
    if h == 0 then return string.format('%d', l) end
    return string.format('%d%09d', h, l)
  end
  if l == 0 then return string.format('%d000000000', h) end
  local mh, ml = -h - 1, 1e9 - l
  if mh == 0 then return string.format('-%d', ml) end
  return string.format('-%d%09d', mh, ml)
end
)lua";

inline constexpr char kLuaBytesLess[] = R"lua(
local function ls_bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
)lua";

}  // namespace labshare

#endif  // LABSHARE_COMMON_LUA_GUARDS_H_
