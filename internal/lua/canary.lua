-- canary: one small key per instance on every Redis master. The node sets
-- it and expects to find it at the next heartbeat; when it is gone, or
-- holds another session, that master lost data (a restart without
-- persistence, a failover that lost writes, FLUSHALL) and the node
-- re-asserts its slices.
--
-- KEYS[1] the canary
-- ARGV    session, ttl ms
-- Returns 1 when the canary was there as set, 2 when it held another
-- session (of the same instance id: its own earlier one, or another
-- process's), 0 when it was not there.
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if v == ARGV[1] then
  return 1
end
if v then
  return 2
end
return 0
