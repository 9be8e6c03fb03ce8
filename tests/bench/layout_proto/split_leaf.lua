-- Splits an index leaf that grew past the listpack limit (a step of its own,
-- issued by the caller after a create reported the leaf; every key declared).
-- KEYS: 1 directory, 2 the leaf, 3 the new leaf <prefix>:<m>, 4 the partition's leaf epoch
-- ARGV: 1 the leaf's bound, 2 m (a score of the leaf above its lowest), 3 leaf max
-- Returns the partition's new leaf epoch, or 0 when nothing was split.
-- Entries with score >= m move to the new leaf; m joins the directory. All
-- entries of one score stay in one leaf (ties are ranked by member inside it).
local b, m = ARGV[1], ARGV[2]
if b ~= '0' and not redis.call('ZSCORE', KEYS[1], b) then return 0 end
if redis.call('ZCARD', KEYS[2]) <= tonumber(ARGV[3]) then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local low = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2]
if tonumber(m) <= tonumber(low) or tonumber(m) <= tonumber(b) then return 0 end
-- Server-side copy (no Lua strings, no score formatting), then the cut.
local moved = redis.call('ZRANGESTORE', KEYS[3], KEYS[2], m, '+inf', 'BYSCORE')
if moved == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], m, '+inf')
-- A zset past the limit became a skiplist and stays one when it shrinks:
-- write the lower half again so that both halves are listpacks.
if redis.call('OBJECT', 'ENCODING', KEYS[2]) == 'skiplist' then
  local keep = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local again = {}
  for i = 1, #keep, 2 do
    again[#again + 1] = keep[i + 1]
    again[#again + 1] = keep[i]
  end
  redis.call('DEL', KEYS[2])
  redis.call('ZADD', KEYS[2], unpack(again))
end
redis.call('ZADD', KEYS[1], m, m)
-- The new epoch: callers whose caches are at the previous one may take it.
return redis.call('INCR', KEYS[4])
