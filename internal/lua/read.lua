-- read: the counter's total and the caller's own slice, after reaping.
-- Reading stamps the caller's liveness when it holds a slice here.
--
-- KEYS[1] counter hash, KEYS[2] last-seen sorted set (see assert.lua)
-- ARGV    id, threshold ms, reap limit
-- Returns {total, slice, epoch (-1: no such counter), reaped}
local h, z = KEYS[1], KEYS[2]
local id = ARGV[1]
local stored = redis.call('HGET', h, 'e')
if not stored then
  return {'0', '0', -1, 0}
end
local now = hc_now()
local reaped = hc_reap(h, z, now, tonumber(ARGV[2]), tonumber(ARGV[3]))
local mine = redis.call('HGET', h, 'v:' .. id)
if mine then
  redis.call('ZADD', z, now, id)
end
return {redis.call('HGET', h, 't'), mine or '0', tonumber(stored), reaped}
