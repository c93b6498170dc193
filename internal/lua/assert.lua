-- assert: "my slice of this counter is L", sent by instance id with sequence
-- (session, counter) in epoch E. Idempotent and order-safe: it applies only
-- when the sequence is newer than the stored one.
--
-- KEYS[1] counter hash: b base, t total, e epoch, and per instance
--         v:<id> slice, s:<id> session, c:<id> counter
-- KEYS[2] sorted set: instance id -> last seen (ms, Redis time)
-- ARGV    id, session, counter, epoch (-1: adopt the stored one), L, D (the
--         slice to take instead of L when the epoch moved on: changes not
--         made before the reset), threshold ms, ttl ms, reap limit,
--         condition op ('' none), operand, conditional delta
-- Returns {status, total, slice, epoch, reaped, condition held (0/1)}
--   status 1 applied, 2 applied after an epoch reset (slice = D),
--          0 stale (a newer assertion is stored), 3 superseded (another
--          session of the same instance id is newer)
local h, z = KEYS[1], KEYS[2]
local id = ARGV[1]
local session, counter = tonumber(ARGV[2]), tonumber(ARGV[3])
local epoch = tonumber(ARGV[4])
local slice, onReset = ARGV[5], ARGV[6]
local threshold, ttl, limit = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local op, operand, delta = ARGV[10], ARGV[11], ARGV[12]

local now = hc_now()
local status, reaped = 1, 0
local stored = redis.call('HGET', h, 'e')
if stored then
  stored = tonumber(stored)
  reaped = hc_reap(h, z, now, threshold, limit)
  if epoch > stored then
    -- Redis lost the reset that made our epoch: what it holds is older.
    redis.call('DEL', h, z)
    stored = nil
  end
end
if not stored then
  -- A new counter, or Redis lost it: this assertion re-creates it.
  if epoch < 0 then epoch = 0 end
  redis.call('HSET', h, 'e', hc_fmt(epoch), 't', '0')
  stored = epoch
end
if epoch < 0 then epoch = stored end
if epoch < stored then
  status, slice = 2, onReset
end

local sf, cf, vf = 's:' .. id, 'c:' .. id, 'v:' .. id
local prev = redis.call('HGET', h, sf)
if prev then
  local verdict = nil
  prev = tonumber(prev)
  if prev > session then
    verdict = 3
  elseif prev == session and tonumber(redis.call('HGET', h, cf)) >= counter then
    verdict = 0
  end
  if verdict then
    return {verdict, redis.call('HGET', h, 't'), redis.call('HGET', h, vf) or '0', stored, reaped, 0}
  end
end

local old = redis.call('HGET', h, vf) or '0'
if old ~= slice then
  if old ~= '0' then redis.call('HINCRBY', h, 't', hc_neg(old)) end
  if slice ~= '0' then redis.call('HINCRBY', h, 't', slice) end
end
redis.call('HSET', h, vf, slice, sf, ARGV[2], cf, ARGV[3])
local held = 1
if op ~= '' then
  if hc_holds(op, redis.call('HGET', h, 't'), operand) then
    redis.call('HINCRBY', h, vf, delta)
    redis.call('HINCRBY', h, 't', delta)
  else
    held = 0
  end
end
redis.call('ZADD', z, now, id)
hc_expire(h, ttl)
hc_expire(z, ttl)
return {status, redis.call('HGET', h, 't'), redis.call('HGET', h, vf), stored, reaped, held}
