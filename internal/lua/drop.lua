-- drop: instance id leaves the counter (graceful close). Its slice is
-- removed unless a newer session of the same instance id has taken it over.
--
-- KEYS[1] counter hash, KEYS[2] last-seen sorted set (see assert.lua)
-- ARGV    id, session
-- Returns the total after.
local h, z = KEYS[1], KEYS[2]
local id = ARGV[1]
local s = redis.call('HGET', h, 's:' .. id)
if s and tonumber(s) <= tonumber(ARGV[2]) then
  hc_drop(h, id)
  redis.call('ZREM', z, id)
end
return redis.call('HGET', h, 't') or '0'
