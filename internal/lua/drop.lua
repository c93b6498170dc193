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
-- A counter with no slice of the instance gets the tombstone too: the
-- index entry of a first write goes ahead of the write (on a Cluster, in
-- a round trip of its own), so the sweep can find the entry while the
-- write is still held by a stalled link; landing after the drop, it would
-- create a slice no sweep comes back for. On a counter that does not
-- exist yet the tombstone lives ttl ms.
--
-- KEYS    h1, z1, h2, z2, ... (counter hash and lease set, see assert.lua)
-- ARGV    id, session, the presence spec (see presence.lua; '' off) with
--         the reason drained (the instance closes) or crashed (a sweeper
--         removes it), ttl ms
-- Returns per counter the slice removed, '0' when there was none.
local id, session = ARGV[1], tonumber(ARGV[2])
hc_set_spec(ARGV[3])
local ttl = tonumber(ARGV[4])
local now = hc_now()
local out = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local s = redis.call('HGET', h, 's:' .. id)
  local removed = '0'
  if not s or tonumber(s) <= session then
    if s then removed = hc_drop(h, id, hc_spec.reason) end
    redis.call('HSET', h, 's:' .. id, s or ARGV[2], 'c:' .. id, hc_swept)
    redis.call('ZADD', z, now, id)
    if not s then
      hc_expire(h, ttl)
      hc_expire(z, ttl)
    end
  end
  out[i] = removed
end
return out
