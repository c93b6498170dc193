-- Removing slices: shared by the scripts that drop or reap them.

-- hc_drop removes instance id's slice from counter hash h and takes it out
-- of the total. It returns the removed value ('0' when there was none).
local function hc_drop(h, id, reason)
  local v = redis.call('HGET', h, 'v:' .. id)
  if v and v ~= '0' then
    local total = hc_hincr(h, 't', hc_neg(v))
    hc_changed(h, hc_fmt(tonumber(total) + tonumber(v)), total, id, reason)
  end
  redis.call('HDEL', h, 'v:' .. id, 's:' .. id, 'c:' .. id, 'l:' .. id)
  return v or '0'
end

-- hc_reap drops the slices of at most limit instances whose lease on the
-- counter ran out: whose last assertion there, by z, is older than now -
-- lease. This is the backstop of the sweeper (which removes a dead
-- instance's slices everywhere within a threshold and a heartbeat of its
-- death): a lease
-- runs for minutes and is renewed rarely. The bound keeps every call cheap;
-- the remaining expired slices go with the next calls. It returns how many non-zero
-- slices of instances other than id it removed (the reaps worth reporting:
-- an idle counter's own zero slice ageing out is none), and how many
-- instances it removed in all.
local function hc_reap(h, z, now, lease, limit, id)
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. hc_fmt(now - lease), 'LIMIT', 0, limit)
  local n = 0
  for i = 1, #dead do
    if hc_drop(h, dead[i], 'crashed') ~= '0' and dead[i] ~= id then
      n = n + 1
    end
    redis.call('ZREM', z, dead[i])
  end
  return n, #dead
end
