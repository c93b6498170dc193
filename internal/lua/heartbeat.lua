-- heartbeat: instance id, session, is alive. One short script per node per
-- tick, whatever the number of its counters. It also hands the caller the
-- dead sessions to sweep: instances unseen for the threshold, and claims
-- whose sweeper died, each claimed for the caller.
--
-- KEYS    live, sessions, claims, resets, renewed (see registry.lua)
-- ARGV    id, session, threshold ms, claim ms, ttl ms, limit, since ms (the
--         time of the caller's previous heartbeat; 0: none), gap ms (a
--         longer pause since then means the caller could not heartbeat),
--         doubt ms (0: none; see below)
-- Returns {status, Redis time in microseconds, Redis time in ms, a new
--         doubt in ms (0: none), n, id1, session1, ..., idn, sessionn,
--         reset counter hashes since since...}
--   status 1 alive, 2 gone (the registry holds no session for id: it was
--   swept as dead, or Redis lost the registry; or only an older one, whose
--   registration of the caller's failed), 3 superseded (a newer session of
--   id is registered)
local live, sessions, claims = KEYS[1], KEYS[2], KEYS[3]
local id, session = ARGV[1], tonumber(ARGV[2])
local threshold, claimMs, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local status = 1
local cur = redis.call('HGET', sessions, id)
if not cur or tonumber(cur) < session then
  -- Gone, or registered under an older session: a predecessor's (a restart
  -- whose registration failed) or this process's own before it renewed.
  -- Either way the caller registers again, which claims the older session
  -- for a sweep; stamping it alive here would keep its slices forever.
  status = 2
elseif tonumber(cur) > session then
  status = 3
else
  redis.call('ZADD', live, now, id)
end
-- A caller that could not heartbeat for a while (this call is late, or
-- the ones before it failed) may have been cut off with everyone else: a
-- Redis outage stops every heartbeat, and once it ends the instances seen
-- last before it are no deader than the caller. So the outage counts
-- against no one seen within a threshold of the caller's previous
-- heartbeat: the reply hands the caller that doubt, which it passes back
-- for a threshold more, by which time every live instance has stamped
-- again.
local since = tonumber(ARGV[7])
local cutoff = now - threshold
local doubt = tonumber(ARGV[9])
local tripped = 0
if since > 1 and now - since > tonumber(ARGV[8]) then
  tripped = since - threshold
  if doubt == 0 or tripped < doubt then
    doubt = tripped
  end
end
if doubt > 0 then
  cutoff = math.min(cutoff, doubt)
end
local out = {status, hc_fmt(tonumber(t[1]) * 1000000 + tonumber(t[2])), hc_fmt(now), hc_fmt(tripped), 0}
local dead = redis.call('ZRANGEBYSCORE', live, '-inf', '(' .. hc_fmt(cutoff), 'LIMIT', 0, limit)
for i = 1, #dead do
  redis.call('ZREM', live, dead[i])
  local s = redis.call('HGET', sessions, dead[i])
  if s then
    redis.call('HDEL', sessions, dead[i])
    redis.call('HDEL', KEYS[5], dead[i])
    hc_claim(claims, s, dead[i], now, claimMs)
    out[#out + 1] = dead[i]
    out[#out + 1] = s
  end
end
local lapsed = redis.call('ZRANGEBYSCORE', claims, '-inf', '(' .. hc_fmt(now), 'LIMIT', 0, limit)
for i = 1, #lapsed do
  local m = lapsed[i]
  local colon = string.find(m, ':', 1, true)
  redis.call('ZADD', claims, now + claimMs, m)
  out[#out + 1] = string.sub(m, colon + 1)
  out[#out + 1] = string.sub(m, 1, colon - 1)
end
out[5] = (#out - 5) / 2
-- Resets are kept for the ttl, so that an instance cut off for less than
-- that learns of them; one cut off for longer was swept and re-asserts all.
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. hc_fmt(now - tonumber(ARGV[5])))
if since > 0 then
  local resets = redis.call('ZRANGEBYSCORE', KEYS[4], since, '+inf', 'LIMIT', 0, 1000)
  if #resets == 1000 then
    resets = {'*'}
  end
  for i = 1, #resets do
    out[#out + 1] = resets[i]
  end
end
hc_keep(KEYS, tonumber(ARGV[5]))
return out
