-- register: instance id starts session. An older session of the same id (a
-- process restarted under a stable ID) is claimed for the caller, which
-- sweeps it at once.
--
-- KEYS    live, sessions, claims (see registry.lua)
-- ARGV    id, session, claim ms, ttl ms
-- Returns {status, older session or '', Redis time in ms}: status 1
--         registered, 3 superseded (the registry holds a newer session of
--         id: another live process uses the same instance ID)
local live, sessions, claims = KEYS[1], KEYS[2], KEYS[3]
local id, session = ARGV[1], ARGV[2]
local now = hc_now()
local cur = redis.call('HGET', sessions, id)
local older = ''
if cur then
  if tonumber(cur) > tonumber(session) then
    return {3, cur, hc_fmt(now)}
  end
  if tonumber(cur) < tonumber(session) then
    older = cur
    hc_claim(claims, cur, id, now, tonumber(ARGV[3]))
  end
end
redis.call('HSET', sessions, id, session)
redis.call('ZADD', live, now, id)
hc_keep(KEYS, tonumber(ARGV[4]))
return {1, older, hc_fmt(now)}
