-- The assertion of one instance's slice of one counter, shared by
-- assert.lua (one counter) and assert_many.lua (several, one call). Every
-- Lua statement costs Redis CPU on the hot path, so the common case (an
-- existing counter, a newer sequence of the same session) runs few of them.

-- hc_fields returns the hash fields of instance id's slice: session,
-- sequence, value, lease stamp. A script asserting several counters makes
-- them once.
local function hc_fields(id)
  return {'s:' .. id, 'c:' .. id, 'v:' .. id, 'l:' .. id}
end

-- hc_read reads what an assertion needs of counter hash h (and, with
-- presence on, the member's metadata).
local function hc_read(h, f)
  if hc_spec.on then
    return redis.call('HMGET', h, 'e', 't', f[1], f[2], f[3], 'x', f[4], 'd')
  end
  return redis.call('HMGET', h, 'e', 't', f[1], f[2], f[3], 'x', f[4])
end

-- hc_assert applies one assertion (see assert.lua) at time now, f being
-- hc_fields(id), and returns status, total, slice, epoch, reaped,
-- condition held: six values, not a table, so that assert_many puts them in
-- its reply as they come.
local function hc_assert(h, z, id, f, sessionArg, counterArg, epoch, slice, onReset,
                         lease, ttl, limit, op, operand, delta, now, meta)
  local status, reaped = 1, 0
  local cur = hc_read(h, f)
  local stored = cur[1]
  -- Every ttl/2 (a lease) an assertion renews the TTLs and drops the
  -- slices whose lease ran out; in between it costs two commands.
  local due = not cur[6] or now >= tonumber(cur[6])
  if stored then
    stored = tonumber(stored)
    if due then
      local removed
      reaped, removed = hc_reap(h, z, now, lease, limit, id)
      if removed > 0 then
        cur = hc_read(h, f)
      end
    end
    if epoch > stored then
      -- Redis lost the reset that made our epoch: what it holds is older.
      redis.call('DEL', h, z)
      stored = nil
    end
  end
  if not stored and cur[4] == hc_swept and tonumber(cur[3]) >= tonumber(sessionArg) then
    -- A sweeper dropped this session here before its first write landed
    -- (see drop.lua).
    return 4, '0', '0', 0, reaped, 0
  end
  if not stored then
    -- A new counter, or Redis lost it: this assertion re-creates it.
    if epoch < 0 then epoch = 0 end
    redis.call('HSET', h, 'e', hc_fmt(epoch), 't', '0')
    stored = epoch
    cur = {false, '0', false, false, false, false, false, false}
    due = true
  end
  if epoch < 0 then epoch = stored end
  if epoch < stored then
    status, slice = 2, onReset
  end

  local total, old = cur[2] or '0', cur[5] or '0'
  local before = total
  local same = false -- the stored sequence is of this session
  if cur[3] then
    local prev, session = tonumber(cur[3]), tonumber(sessionArg)
    if prev > session then
      return 3, total, old, stored, reaped, 0
    end
    same = prev == session
    if same and tonumber(cur[4]) >= tonumber(counterArg) then
      if cur[4] == hc_swept then
        -- A sweeper dropped this session here (see drop.lua).
        return 4, total, old, stored, reaped, 0
      end
      return 0, total, old, stored, reaped, 0
    end
  end

  -- An assertion that changes nothing still stores its sequence: a change
  -- sent before it, whose outcome its writer did not learn (a timeout),
  -- may still be on its way, and must find itself older when it lands.
  local fields, n
  if old ~= slice then
    if #total < 16 and #old < 16 and #slice < 16 then
      -- Exact as doubles: the new total goes with the other fields.
      total = hc_fmt(tonumber(total) - tonumber(old) + tonumber(slice))
      fields, n = {'t', total, f[3], slice, f[1], sessionArg, f[2], counterArg}, 8
    else
      total = hc_move(h, 't', total, old, slice)
      fields, n = {f[3], slice, f[1], sessionArg, f[2], counterArg}, 6
    end
  elseif not same or op ~= '' then
    fields, n = {f[3], slice, f[1], sessionArg, f[2], counterArg}, 6
  else
    fields, n = {f[2], counterArg}, 2
  end
  local held = 1
  if op ~= '' and not hc_holds(op, total, operand) then
    held = 0
  end
  -- The lease is stamped in z at most every lease/8: in between, l says
  -- when it last was.
  if not cur[7] or now - tonumber(cur[7]) >= lease / 8 then
    redis.call('ZADD', z, now, id)
    fields[n + 1], fields[n + 2], n = f[4], hc_fmt(now), n + 2
  end
  local newMeta
  if meta and meta ~= '' then
    -- A member's metadata, set with the assertion that may make it present:
    -- '=' and the metadata, which may be empty (an empty d is no d).
    meta = string.sub(meta, 2)
    if meta ~= (cur[8] or '') then
      fields[n + 1], fields[n + 2], n = 'd', meta, n + 2
      newMeta = meta
    end
  end
  if due then
    hc_expire(h, ttl)
    redis.call('PEXPIRE', z, ttl)
    fields[n + 1], fields[n + 2], n = 'x', hc_fmt(now + math.floor(ttl / 2)), n + 2
  end
  if n > 0 then
    redis.call('HSET', h, unpack(fields))
  end
  if op ~= '' and held == 1 then
    slice = hc_hincr(h, f[3], delta)
    total = hc_hincr(h, 't', delta)
  end
  if hc_spec.on then
    hc_changed(h, before, total, id, nil, ttl, due and now, newMeta, cur[8])
  end
  return status, total, slice, stored, reaped, held
end
