-- drop: instance id's slices leave their counters, on a graceful close and
-- when a sweeper removes a dead session's slices. Only slices of the given
-- session or an older one go: a newer session of the same instance ID (a
-- restart, or a swept instance that came back) keeps what it wrote. A drop
-- is idempotent, so two sweepers, or a retry, never subtract twice.
--
-- KEYS    h1, z1, h2, z2, ... (counter hash and lease set, see assert.lua)
-- ARGV    id, session
-- Returns per counter the slice removed, '0' when there was none.
local id, session = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local s = redis.call('HGET', h, 's:' .. id)
  local removed = '0'
  if s and tonumber(s) <= session then
    removed = hc_drop(h, id)
    redis.call('ZREM', z, id)
  end
  out[i] = removed
end
return out
