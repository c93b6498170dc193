-- The registry of one namespace: which instances are alive, under which
-- session, and which dead sessions a sweeper has claimed.
--
--   live      sorted set: instance id -> last heartbeat (ms, Redis time)
--   sessions  hash: instance id -> its current session
--   claims    sorted set: "<session>:<id>" -> when the claim lapses (ms)
--   resets    sorted set: counter hash ('*': all) -> when it was reset (ms),
--             so that instances holding slices there zero them at their
--             next heartbeat
--   renewed   hash: instance id -> its current session, when a running
--             process took it (it was swept, or Redis lost the registry):
--             that process asserts its slices again under it, so a
--             reconcile leaves its older sessions' slices to it for a while
--
-- A dead session stays claimed until its sweeper has dropped every slice
-- of its index; a claim that lapses (the sweeper died) is handed out again.

-- hc_claim claims session s of instance id for the caller until now + ms.
local function hc_claim(claims, s, id, now, ms)
  redis.call('ZADD', claims, now + ms, s .. ':' .. id)
end

-- hc_keep makes the registry outlive its instances by ttl ms.
local function hc_keep(keys, ttl)
  for i = 1, #keys do
    redis.call('PEXPIRE', keys[i], ttl)
  end
end
