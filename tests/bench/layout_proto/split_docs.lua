-- Linear hashing of the document buckets: splits bucket s into s and
-- s + 2^L, then advances (L, s). A step of its own, every key declared.
-- KEYS: 1 meta {L, s, n}, 2 bucket s, 3 bucket s + 2^L
-- ARGV: 1 L, 2 s (what the caller saw; else nothing happens)
-- Fields are the id's 8 bytes for generated and derived ids; h is their
-- first 4 (big-endian). A client-chosen id (stored as itself) would hash
-- with FNV-1a 32 (not in the prototype).
local m = redis.call('HMGET', KEYS[1], 'L', 's')
local L, sp = tonumber(m[1] or '0'), tonumber(m[2] or '0')
if L ~= tonumber(ARGV[1]) or sp ~= tonumber(ARGV[2]) then return -1 end
local size2 = 2 ^ (L + 1)
local all = redis.call('HGETALL', KEYS[2])
-- Both halves written whole (one HSET each) rather than field by field.
local keep, move = {}, {}
for i = 1, #all, 2 do
  local a, b, c, d = string.byte(all[i], 1, 4)
  local h = ((a * 256 + b) * 256 + c) * 256 + d
  local t = (h % size2 == sp) and keep or move
  t[#t + 1] = all[i]
  t[#t + 1] = all[i + 1]
end
if #move > 0 then
  redis.call('DEL', KEYS[2])
  if #keep > 0 then redis.call('HSET', KEYS[2], unpack(keep)) end
  redis.call('HSET', KEYS[3], unpack(move))
end
sp = sp + 1
if sp == 2 ^ L then
  L = L + 1
  sp = 0
end
redis.call('HSET', KEYS[1], 'L', string.format('%d', L), 's', string.format('%d', sp))
return #move / 2
