-- drop: instance id's slices leave their counters, on a graceful close and
-- when a sweeper removes a dead session's slices. Only slices of the given
-- session or an older one go: a newer session of the same instance ID (a
-- restart, or a swept instance that came back) keeps what it wrote. A drop
-- is idempotent, so two sweepers, or a retry, never subtract twice.
--
-- The slice leaves a tombstone: the session stays, with a sequence no
-- write reaches, so that a write of that session still in flight (held by
-- a stalled link, delivered after the drop) is refused as stale instead of
-- bringing the slice back. A newer session writes over it. The tombstone
-- keeps a lease stamp, so scripts on the counter remove it a lease later.
--
-- KEYS    h1, z1, h2, z2, ... (counter hash and lease set, see assert.lua)
-- ARGV    id, session, the presence spec (see presence.lua; '' off) with
--         the reason drained (the instance closes) or crashed (a sweeper
--         removes it)
-- Returns per counter the slice removed, '0' when there was none.
local id, session = ARGV[1], tonumber(ARGV[2])
hc_set_spec(ARGV[3])
local now = hc_now()
local out = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local s = redis.call('HGET', h, 's:' .. id)
  local removed = '0'
  if s and tonumber(s) <= session then
    removed = hc_drop(h, id, hc_spec.reason)
    redis.call('HSET', h, 's:' .. id, s, 'c:' .. id, hc_swept)
    redis.call('ZADD', z, now, id)
  end
  out[i] = removed
end
return out
