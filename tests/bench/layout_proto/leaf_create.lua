-- Candidate CreateBooking step (issue 17 layout prototype; not used by the
-- service). Every key is declared: the caller computes leaf keys from its
-- cached directories and the script verifies them (MOVED when stale).
--
-- Layout (T = "{bk:P}"):
--   doc, mode 's'     T:b:<id>            STRING  value (below)
--   doc, mode 'b'     T:dm                HASH    L, s, n (linear hashing state)
--                     T:d:<bucket>        HASH    field -> value (listpack): field
--                                         is the id's 8 bytes for generated ids
--   value             fplen(1) fp vlen(1) version(decimal) Booking bytes
--   index leaves      <prefix>:<bound>    ZSET    listpack (<= 128 members)
--                     <prefix>#           ZSET    bound -> bound, the leaves but 0
--     merged ('1')    T:i:<instr>  member "<id>!<blocked end - start>" while on
--                     the calendar, "<id>!-" once off it; score: start
--     separate ('0')  calendar T:c:<instr> "<id>!<end - start>" (on the calendar
--                     only) and the instrument listing T:i:<instr> member id
--     listings        T:l:a, T:l:u:<user>, T:l:o:<org>: member id, score start
--   T:lv              STRING  leaf epoch: +1 by every split (verify mode 'e')
--
-- KEYS: 1 doc (string key or bucket), 2 doc meta (or any key of the slot),
--       3 outbox, 4 swept instruments, 5 span, 6 leaf epoch,
--       7 calendar dir, 8..7+nc calendar leaves from the one holding e-1
--       backwards (as the caller's cache sees them),
--       then per other index: dir, leaf (the leaf holding the score)
-- ARGV: 1 doc mode 's'|'b', 2 merged '1'|'0', 3 fingerprint (raw, '' none),
--       4 value, 5 id, 6 s, 7 e, 8 reserved start, 9 instrument ('' when the
--       caller knows it is in the swept set), 10 event payload, 11 h, 12 bucket
--       (bucket mode), 13 doc field (bucket mode), 14 leaf epoch the caller's
--       cache is at ('': verify each directory instead), 15 leaf max,
--       16 nc, 17.. calendar leaf bounds (nc of them), then per other index
--       its leaf bound
-- Returns {'OK', n docs, oversize index positions (0: the calendar leaf)...}
-- or {'REPLAY', booking bytes} {'REUSED'} {'EXISTS'} {'TAKEN', id} {'MOVED', what}.
local mode, merged = ARGV[1], ARGV[2] == '1'
local fp, id = ARGV[3], ARGV[5]
local s, e = tonumber(ARGV[6]), tonumber(ARGV[7])
local epoch = ARGV[14]
local leafmax = tonumber(ARGV[15])
local nc = tonumber(ARGV[16])
local first_other = 7 + nc  -- KEYS index of the first other index's dir
local nidx = (#KEYS - 7 - nc) / 2
local cb = 16               -- ARGV[cb + i]: calendar leaf bound i
local ob = 16 + nc          -- ARGV[ob + j]: other index j's leaf bound

-- 1. Replay, reuse, existence.
local cur
if mode == 's' then
  cur = redis.call('GET', KEYS[1])
else
  local m = redis.call('HMGET', KEYS[2], 'L', 's')
  local L, sp = tonumber(m[1] or '0'), tonumber(m[2] or '0')
  local h, size = tonumber(ARGV[11]), 2 ^ L
  local b = h % size
  if b < sp then b = h % (2 * size) end
  if b ~= tonumber(ARGV[12]) then return {'MOVED', 'doc'} end
  cur = redis.call('HGET', KEYS[1], ARGV[13])
end
if cur then
  local n = string.byte(cur, 1)
  if fp ~= '' and n > 0 then
    if string.sub(cur, 2, 1 + n) == fp then
      return {'REPLAY', string.sub(cur, 3 + n + string.byte(cur, 2 + n))}
    end
    return {'REUSED'}
  end
  return {'EXISTS'}
end
if epoch ~= '' and (redis.call('GET', KEYS[6]) or '0') ~= epoch then return {'MOVED', 'epoch'} end

-- 2. No overlap: the latest live entry starting before e must end by s
-- (live blocked intervals are disjoint, so no other can reach past s).
-- Leaves are walked from the one holding e - 1 backwards; each must be the
-- one the directory names (else the caller's cache was stale: MOVED). A
-- leaf whose bound is at or before s - span (the partition's longest
-- booking) ends the walk: nothing starting earlier reaches s.
local dir = KEYS[7]
local function bound_below(x, i)
  if epoch ~= '' then return ARGV[cb + i] end
  return redis.call('ZREVRANGEBYSCORE', dir, '(' .. x, '-inf', 'LIMIT', 0, 1)[1] or '0'
end
local span = tonumber(redis.call('GET', KEYS[5]) or '0')
local function overlap()
  local want = bound_below(ARGV[7], 1)
  for i = 1, nc do
    if ARGV[cb + i] ~= want then return {'MOVED', 'cal'} end
    local off, n = 0, 1  -- usually the first entry decides; then 8 at a time
    while true do
      local r = redis.call('ZREVRANGEBYSCORE', KEYS[7 + i], '(' .. ARGV[7], '-inf', 'WITHSCORES', 'LIMIT', off, n)
      if #r == 0 then break end
      for j = 1, #r, 2 do
        local bang = string.find(r[j], '!', 1, true)
        local d = string.sub(r[j], bang + 1)
        local start = tonumber(r[j + 1])
        if d ~= '-' then
          if start + tonumber(d) > s then return {'TAKEN', string.sub(r[j], 1, bang - 1)} end
          return nil
        end
        -- off the calendar (merged layout): look on while one could reach s
        if start + span <= s then return nil end
      end
      off, n = off + n, 8
    end
    if want == '0' or tonumber(want) + span <= s then return nil end
    if i == nc then break end
    want = bound_below(want, i + 1)
  end
  return {'MOVED', 'cal-deeper'}
end
local taken = overlap()
if taken then return taken end
-- The leaf s goes to: the first one walked whose bound is at or before s
-- (it is among those verified above).
local insert_leaf
for i = 1, nc do
  if tonumber(ARGV[cb + i]) <= s then
    insert_leaf = KEYS[7 + i]
    break
  end
end
if not insert_leaf then return {'MOVED', 'cal-insert'} end

-- 3. The other indexes: the leaf each score goes to, and its size (ZCARD
-- also proves the type before any write).
local sizes = {}
for j = 1, nidx do
  if epoch == '' then
    local b = redis.call('ZREVRANGEBYSCORE', KEYS[first_other + 2 * j - 1], ARGV[8], '-inf', 'LIMIT', 0, 1)[1] or '0'
    if b ~= ARGV[ob + j] then return {'MOVED', 'idx' .. j} end
  end
  sizes[j] = redis.call('ZCARD', KEYS[first_other + 2 * j])
end
local cal_size = redis.call('ZCARD', insert_leaf)
-- The swept set: only when the caller does not know the instrument is in it.
local swept = ARGV[9] == '' and 1 or redis.call('SISMEMBER', KEYS[4], ARGV[9])

-- 4. Writes. The outbox entry first: it is the one write whose key was not
-- read above, so if it fails nothing has been written; every later write
-- goes to a key whose type a read above proved.
redis.call('XADD', KEYS[3], '*', 'type', 'labshare.booking.v1.BookingEvent', 'payload', ARGV[10])
local docs = 0
if mode == 's' then
  redis.call('SET', KEYS[1], ARGV[4])
else
  redis.call('HSET', KEYS[1], ARGV[13], ARGV[4])
  docs = redis.call('HINCRBY', KEYS[2], 'n', 1)
end
redis.call('ZADD', insert_leaf, ARGV[6], id .. '!' .. string.format('%d', e - s))
local out = {'OK', docs}
if cal_size + 1 > leafmax then out[#out + 1] = 0 end
for j = 1, nidx do
  redis.call('ZADD', KEYS[first_other + 2 * j], ARGV[8], id)
  if sizes[j] + 1 > leafmax then out[#out + 1] = j end
end
if swept == 0 then redis.call('SADD', KEYS[4], ARGV[9]) end
local sp_ = tonumber(ARGV[7]) - tonumber(ARGV[8])
if sp_ > span then redis.call('SET', KEYS[5], string.format('%d', sp_)) end
return out
