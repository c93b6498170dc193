-- register: instance id starts session. An older session of the same id (a
-- process restarted under a stable ID) is claimed for the caller, which
-- sweeps it at once.
--
-- KEYS    live, sessions, claims, resets, renewed (see registry.lua)
-- ARGV    id, session, claim ms, ttl ms, '1' when the caller is a running
--         process taking a new session (it asserts every slice it holds
--         again), '0' for a process starting, and for a running process
--         the session it held
-- Returns {status, older session or '' (status 3: the newer one), Redis
--         time in ms}: status 1 registered, 3 superseded (another live
--         process uses the same instance ID: the registry holds a session
--         newer than the caller's, or, for a running process, one newer
--         than it held that is not its own)
local live, sessions, claims = KEYS[1], KEYS[2], KEYS[3]
local id, session = ARGV[1], ARGV[2]
local now = hc_now()
local cur = redis.call('HGET', sessions, id)
local older = ''
if cur then
  -- A running process renews when the registry forgot it or a sweep took
  -- its slices; a session registered after its own is another process's,
  -- which its new session (a later time) must not sweep.
  if tonumber(cur) > tonumber(session) or
      (ARGV[5] == '1' and cur ~= ARGV[6] and tonumber(cur) > tonumber(ARGV[6])) then
    return {3, cur, hc_fmt(now)}
  end
  if tonumber(cur) < tonumber(session) then
    older = cur
    hc_claim(claims, cur, id, now, tonumber(ARGV[3]))
  end
end
redis.call('HSET', sessions, id, session)
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[5], id, session)
else
  redis.call('HDEL', KEYS[5], id)
end
redis.call('ZADD', live, now, id)
hc_keep(KEYS, tonumber(ARGV[4]))
return {1, older, hc_fmt(now)}
