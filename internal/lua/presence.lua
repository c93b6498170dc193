-- Presence: a member counter (a user inside a room; see
-- internal/keyspace/member.go) is named G#n (listed) or G!n (counted only),
-- where G is its group's main key and n the member's encoded name.
-- Whenever a member's total becomes non-zero or zero, the script making
-- that change updates the group's presence keys, in the same slot:
--
--   G:pp  hash: n members present (0 or none when empty); for listed groups also q, the group's
--         last event sequence, v, the version of its list (one more at
--         every change of G:pl that no event announces: q and v together
--         change with every change of the list), and x, when the keys'
--         TTLs are next renewed
--   G:pu  sorted set of the names listed (score 0: in name order), at most
--         hc_spec.cap; members beyond it are counted, not listed
--   G:pl  hash: name -> "<total>\t<metadata>" of each member listed: a
--         whole list is one HGETALL
--   G:pe  stream of the events, an entry per member change: ID <q>-0, q
--         its last event's sequence, fields e (join or leave), m (name), r
--         (reason), i (instance), s ("1" when its first event starts a
--         sequence: nothing precedes it), g (occupied: the group's first
--         member came in, an event at q-1 before the join; vacated: its
--         last left, an event at q after the leave at q-1; '' neither),
--         and d (metadata), c (the member's total) and l ("1" when
--         listed), which leaves have empty
--   G:pc  the channel each event is published on (SPUBLISH where Redis
--         allows it, PUBLISH otherwise: 6.2), as "q\te\tr\ti\ts\tm\td";
--         with an all-groups channel in the spec, each is also PUBLISHed
--         there (a namespace-wide channel: on a Cluster, every node gets
--         it), as "G\tq\te\tr\ti\ts\tm\td"
--
-- Listed groups emit events: join and leave (a member), occupied and
-- vacated (the group's first member in, last out). The reason is that of
-- the change: closed (the instance released it), drained (the instance is
-- shutting down) or crashed (a sweeper or an expired lease removed a dead
-- instance's slice).

-- hc_spec is set by the scripts that take it from their arguments: a
-- presence spec "reason\tcap\thistory\tall" (all: the all-groups channel,
-- or empty), or '' (or none) when the caller has presence off (its
-- counters have no members: nothing to look for).
local hc_spec = {on = true, reason = 'closed', cap = 0, hist = '1000', all = ''}

local function hc_set_spec(spec)
  if spec == nil or spec == '' then
    hc_spec.on = false
    return
  end
  local reason, cap, hist, all = string.match(spec, '^(%a+)\t(%d+)\t(%d+)\t(.*)$')
  if not reason then error('headcount: bad presence spec ' .. spec) end
  -- hist stays a string: it only goes back to Redis, and a Lua number
  -- passed to redis.call is formatted with %.17g, a cost on every event.
  hc_spec.reason, hc_spec.cap, hc_spec.hist, hc_spec.all = reason, tonumber(cap), hist, all
end

-- hc_publish publishes one event of group g on its channel ch, as
-- "q\te\tr\ti\ts\tm\td" (ri is "\tr\ti\t"), and, if there is one, on the
-- all-groups channel.
local function hc_publish(g, ch, q, kind, ri, start, name, meta)
  local msg = q .. '\t' .. kind .. ri .. start .. '\t' .. name .. '\t' .. meta
  local r = redis.pcall('SPUBLISH', ch, msg)
  if type(r) == 'table' and r.err then
    redis.call('PUBLISH', ch, msg)
  end
  if hc_spec.all ~= '' then
    redis.call('PUBLISH', hc_spec.all, g .. '\t' .. msg)
  end
end

-- hc_events appends a member's join or leave (kind) to group g's stream
-- and publishes it; ge, when set, is the group's occupied (the first member
-- in, just before the join) or vacated (the last out, just after the
-- leave), sent in the same entry (field g) and published on its own. The
-- entry's ID is its last event's sequence; with ge, the other event has
-- the one before. A new sequence starts above any that Redis TIME could
-- have given before, and gives the group's keys their TTL. join, on joins,
-- is {metadata, total, listed ('1' or '0')}; leaves store those fields
-- empty, so that every entry has the same fields. Every statement here
-- runs per member change: few calls, no tables.
local function hc_events(g, kind, ge, name, reason, id, join, ttl)
  local pp, pe = g .. ':pp', g .. ':pe'
  local k, ks = 1, '1'
  if ge then k, ks = 2, '2' end
  local q = redis.call('HINCRBY', pp, 'q', ks)
  local start = '0'
  if q == k then
    q, start = hc_now() * 1000 + k - 1, '1'
    redis.call('HSET', pp, 'q', hc_fmt(q))
  end
  local qs, meta, total, listed = hc_fmt(q), '', '', ''
  if join then meta, total, listed = join[1], join[2], join[3] end
  redis.call('XADD', pe, 'MAXLEN', '~', hc_spec.hist, qs .. '-0', 'e', kind, 'm', name, 'r', reason,
    'i', id, 's', start, 'g', ge or '', 'd', meta, 'c', total, 'l', listed)
  if start == '1' and ttl then
    redis.call('PEXPIRE', pp, ttl)
    redis.call('PEXPIRE', pe, ttl)
  end
  local pc, ri = g .. ':pc', '\t' .. reason .. '\t' .. id .. '\t'
  if ge == 'occupied' then
    hc_publish(g, pc, hc_fmt(q - 1), ge, ri, start, '', '')
    hc_publish(g, pc, qs, kind, ri, '0', name, meta)
  elseif ge then
    hc_publish(g, pc, hc_fmt(q - 1), kind, ri, start, name, meta)
    hc_publish(g, pc, qs, ge, ri, '0', '', '')
  else
    hc_publish(g, pc, qs, kind, ri, start, name, meta)
  end
end

-- hc_renew gives group g's keys ttl ms from now, at most every ttl/2.
local function hc_renew(g, listed, ttl, now)
  local pp = g .. ':pp'
  local x = redis.call('HGET', pp, 'x')
  if x and now < tonumber(x) then return end
  redis.call('HSET', pp, 'x', hc_fmt(now + math.floor(ttl / 2)))
  redis.call('PEXPIRE', pp, ttl)
  if listed then
    for _, s in ipairs({':pu', ':pl', ':pe'}) do
      redis.call('PEXPIRE', g .. s, ttl)
    end
  end
end

-- hc_changed is called after a change of instance id's slice of counter h,
-- for reason, with h's total before and after (decimal strings); meta is
-- the member's metadata when the change set a new one, stored the one h
-- held before (false: not read). The group's keys live ttl ms (nil: as
-- long as h); renew, if set, is the time now, at which a renewal may be
-- due.
local function hc_changed(h, before, total, id, reason, ttl, renew, meta, stored)
  if not hc_spec.on then return end
  local i = string.find(h, '}', 1, true)
  local mark = string.sub(h, i + 1, i + 1)
  if mark ~= '#' and mark ~= '!' then return end
  local g, name, listed = string.sub(h, 1, i), string.sub(h, i + 2), mark == '#'
  local wasZero, isZero = before == '0', total == '0'
  if wasZero ~= isZero then
    ttl = ttl or tonumber(redis.call('PTTL', h))
    if ttl < 0 then ttl = nil end
    reason = reason or hc_spec.reason
    local pp = g .. ':pp'
    local n = redis.call('HINCRBY', pp, 'n', isZero and '-1' or '1')
    if not listed then
      if n <= 0 then redis.call('HDEL', pp, 'n') end
      if n == 1 and ttl then redis.call('PEXPIRE', pp, ttl) end
    elseif wasZero then
      local pu = g .. ':pu'
      meta = meta or stored or redis.call('HGET', h, 'd') or ''
      -- With at most cap members, every one is listed: no need to count.
      local isListed = '0'
      if hc_spec.cap <= 0 or n <= hc_spec.cap or redis.call('ZCARD', pu) < hc_spec.cap then
        redis.call('ZADD', pu, '0', name)
        redis.call('HSET', g .. ':pl', name, total .. '\t' .. meta)
        isListed = '1'
      end
      local ge
      if n == 1 then
        if ttl then
          redis.call('PEXPIRE', pu, ttl)
          redis.call('PEXPIRE', g .. ':pl', ttl)
        end
        ge = 'occupied'
      end
      hc_events(g, 'join', ge, name, reason, id, {meta, total, isListed}, ttl)
    else
      if redis.call('ZREM', g .. ':pu', name) == 1 then
        redis.call('HDEL', g .. ':pl', name)
      end
      local ge
      if n <= 0 then ge = 'vacated' end
      hc_events(g, 'leave', ge, name, reason, id, nil, ttl)
    end
  elseif listed and not isZero and (before ~= total or meta) then
    local pl = g .. ':pl'
    local cur = redis.call('HGET', pl, name)
    if cur then
      local tab = string.find(cur, '\t', 1, true)
      redis.call('HSET', pl, name, total .. '\t' .. (meta or string.sub(cur, tab + 1)))
      redis.call('HINCRBY', g .. ':pp', 'v', 1)
    end
  end
  if renew and ttl then
    hc_renew(g, listed, ttl, renew)
  end
end
