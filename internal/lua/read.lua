-- read: the counter's total and the caller's own slice, after reaping.
-- A read never stamps anyone alive: only an instance's own assertions keep
-- its slices. A slice left by an older session of the caller's own
-- instance ID (a process restarted under a stable ID) is the predecessor's:
-- the read takes it over by dropping it, as the predecessor's next write
-- would be refused anyway.
--
-- KEYS[1] counter hash, KEYS[2] last-seen sorted set (see assert.lua)
-- ARGV    id, session, threshold ms, reap limit
-- Returns {total, slice, epoch (-1: no such counter), reaped}
local h, z = KEYS[1], KEYS[2]
local id, session = ARGV[1], tonumber(ARGV[2])
local stored = redis.call('HGET', h, 'e')
if not stored then
  return {'0', '0', -1, 0}
end
local reaped = hc_reap(h, z, hc_now(), tonumber(ARGV[3]), tonumber(ARGV[4]), id)
local prev = redis.call('HGET', h, 's:' .. id)
if prev and tonumber(prev) < session then
  if hc_drop(h, id) ~= '0' then
    reaped = reaped + 1
  end
  redis.call('ZREM', z, id)
end
local mine = redis.call('HGET', h, 'v:' .. id)
return {redis.call('HGET', h, 't'), mine or '0', tonumber(stored), reaped}
