-- Listing over a leafed index, ascending, after the cursor (ms, id): the
-- same positions (and page tokens) as today's ListingScript. Read-only.
-- KEYS: 1 directory; ARGV: 1 leaf prefix, 2 cursor ms ('' from the first),
-- 3 cursor id, 4 limit, 5 '1' when members are "<id>!<end>" (merged)
-- Returns id, score, id, score...
local prefix, limit, merged = ARGV[1], tonumber(ARGV[4]), ARGV[5] == '1'
local function less(a, c)
  local n = math.min(#a, #c)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(c, i)
    if x ~= y then return x < y end
  end
  return #a < #c
end
local out = {}
local b, from = '0', '-inf'
if ARGV[2] ~= '' then
  b = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], '-inf', 'LIMIT', 0, 1)[1] or '0'
  from = ARGV[2]
end
while b do
  local r = redis.call('ZRANGEBYSCORE', prefix .. ':' .. b, from, '+inf', 'WITHSCORES')
  for i = 1, #r, 2 do
    local id = r[i]
    if merged then id = string.sub(id, 1, string.find(id, '!', 1, true) - 1) end
    if ARGV[2] == '' or tonumber(r[i + 1]) > tonumber(ARGV[2]) or less(ARGV[3], id) then
      out[#out + 1] = id
      out[#out + 1] = r[i + 1]
      if #out >= 2 * limit then return out end
    end
  end
  b = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. b, '+inf', 'LIMIT', 0, 1)[1]
end
return out
