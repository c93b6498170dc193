-- Presence: a member counter (a user inside a room; see
-- internal/keyspace/member.go) is named G#n, where G is its group's main
-- key and n the member's encoded name. Whenever a member's total becomes
-- non-zero or zero, the script making that change updates the group's
-- presence keys, in the same slot, and emits the event:
--
--   G:pu  sorted set of the names present (score 0: in name order), holding
--         at most hc_spec.cap names; those beyond it are counted, not listed
--   G:pp  hash: n names present, q the group's last event sequence
--   G:pe  stream of the events, entry ID <q>-0, fields e (kind), m (name),
--         r (reason), i (instance), d (the member's metadata, joins only),
--         s ("1" on the first event of a sequence: nothing precedes it)
--   G:pc  the channel each event is published on (SPUBLISH where Redis
--         has it, PUBLISH on 6.2), as "q\te\tr\ti\ts\tm\td"
--
-- Events: join and leave (a member), occupied and vacated (the group's
-- first member in, last out). The reason is that of the change: closed
-- (the instance released it), drained (the instance is shutting down) or
-- crashed (a sweeper or an expired lease removed a dead instance's slice).

-- hc_spec is set by the scripts that take it from their arguments.
local hc_spec = {reason = 'closed', cap = 0, hist = 1000}

local function hc_set_spec(reason, cap, hist)
  hc_spec.reason, hc_spec.cap, hc_spec.hist = reason, tonumber(cap), tonumber(hist)
end

local function hc_publish(ch, msg)
  local r = redis.pcall('SPUBLISH', ch, msg)
  if type(r) == 'table' and r.err then
    redis.call('PUBLISH', ch, msg)
  end
end

-- hc_event appends one event to group g's stream and publishes it.
local function hc_event(g, kind, name, reason, id, meta, ttl)
  local pp, pe = g .. ':pp', g .. ':pe'
  local q = redis.call('HGET', pp, 'q')
  local start = '0'
  if q then
    q = tonumber(q) + 1
  else
    -- A new sequence (the group's keys expired or were lost): it starts
    -- above any sequence Redis TIME could have given before.
    q, start = hc_now() * 1000, '1'
  end
  redis.call('HSET', pp, 'q', hc_fmt(q))
  local entry = {'XADD', pe, 'MAXLEN', '~', hc_spec.hist, hc_fmt(q) .. '-0',
    'e', kind, 'm', name, 'r', reason, 'i', id, 's', start}
  if meta then
    entry[#entry + 1] = 'd'
    entry[#entry + 1] = meta
  end
  redis.call(unpack(entry))
  if ttl then
    redis.call('PEXPIRE', pp, ttl)
    redis.call('PEXPIRE', pe, ttl)
  end
  hc_publish(g .. ':pc', table.concat({hc_fmt(q), kind, reason, id, start, name, meta or ''}, '\t'))
end

-- hc_changed is called whenever a change of instance id's slice of
-- counter h may have made its total zero or non-zero (wasZero, isZero), for
-- reason. The group's presence keys live ttl ms from their last event (nil:
-- as long as h); renew sets them to live that long from now.
local function hc_changed(h, wasZero, isZero, id, reason, ttl, renew)
  local i = string.find(h, '}#', 1, true)
  if not i then return end
  local g, name = string.sub(h, 1, i), string.sub(h, i + 2)
  local pu, pp = g .. ':pu', g .. ':pp'
  if renew then
    redis.call('PEXPIRE', pu, ttl)
    redis.call('PEXPIRE', pp, ttl)
    redis.call('PEXPIRE', g .. ':pe', ttl)
  end
  if wasZero == isZero then return end
  ttl = ttl or tonumber(redis.call('PTTL', h))
  if ttl < 0 then ttl = nil end
  reason = reason or hc_spec.reason
  local n
  if wasZero then
    n = redis.call('HINCRBY', pp, 'n', 1)
    if hc_spec.cap <= 0 or redis.call('ZCARD', pu) < hc_spec.cap then
      redis.call('ZADD', pu, 0, name)
      if ttl then redis.call('PEXPIRE', pu, ttl) end
    end
    if n == 1 then hc_event(g, 'occupied', '', reason, id, nil, ttl) end
    hc_event(g, 'join', name, reason, id, redis.call('HGET', h, 'd') or '', ttl)
  else
    n = redis.call('HINCRBY', pp, 'n', -1)
    redis.call('ZREM', pu, name)
    hc_event(g, 'leave', name, reason, id, nil, ttl)
    if n <= 0 then
      redis.call('HDEL', pp, 'n')
      hc_event(g, 'vacated', '', reason, id, nil, ttl)
    end
  end
end
