-- Shared helpers, prepended to every script. Counter values travel as decimal
-- strings and change only through HINCRBY/INCRBY, so they stay exact 64-bit
-- integers; Lua numbers (doubles) hold only times, epochs and sequence parts.

-- hc_neg negates a normalised decimal integer string.
local function hc_neg(s)
  if not s or s == '0' then return '0' end
  if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  return '-' .. s
end

-- hc_cmp compares two normalised decimal integer strings exactly: -1, 0, 1.
local function hc_cmp(a, b)
  local an, bn = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if an ~= bn then
    if an then return -1 end
    return 1
  end
  if an then a, b = string.sub(a, 2), string.sub(b, 2) end
  local r = 0
  if #a ~= #b then
    if #a < #b then r = -1 else r = 1 end
  elseif a ~= b then
    if a < b then r = -1 else r = 1 end
  end
  if an then r = -r end
  return r
end

-- hc_holds evaluates "total <op> operand" for the condition names of
-- internal/cond; an empty op always holds.
local function hc_holds(op, total, operand)
  if op == '' then return true end
  local c = hc_cmp(total, operand)
  if op == 'eq' then return c == 0 end
  if op == 'ne' then return c ~= 0 end
  if op == 'lt' then return c < 0 end
  if op == 'le' then return c <= 0 end
  if op == 'gt' then return c > 0 end
  if op == 'ge' then return c >= 0 end
  error('headcount: unknown condition ' .. op)
end

-- hc_now is the Redis server's clock in milliseconds: one clock for every
-- node, whatever their own clocks say.
local function hc_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function hc_fmt(n)
  return string.format('%d', n)
end

-- hc_exact turns an integer reply (a Lua double) into its decimal string,
-- reading the field back when the double may have lost digits.
local function hc_exact(n, h, field)
  if n > -9007199254740992 and n < 9007199254740992 then
    return hc_fmt(n)
  end
  return redis.call('HGET', h, field)
end

-- hc_hincr adds the decimal string delta to an integer hash field and
-- returns the new value as a decimal string.
local function hc_hincr(h, field, delta)
  return hc_exact(redis.call('HINCRBY', h, field, delta), h, field)
end

-- hc_move changes field from holding old to holding new (both decimal
-- strings), given its current value cur, and returns the new value: one
-- HINCRBY when the difference is surely exact as a double, two otherwise.
local function hc_move(h, field, cur, old, new)
  if old == new then return cur end
  if #old < 16 and #new < 16 then
    return hc_hincr(h, field, hc_fmt(tonumber(new) - tonumber(old)))
  end
  if old ~= '0' then redis.call('HINCRBY', h, field, hc_neg(old)) end
  return hc_hincr(h, field, new)
end

-- hc_expire makes sure key lives at least ttl ms from now. A longer TTL (a
-- reset tombstone's) is kept.
local function hc_expire(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- hc_swept is the sequence of a swept session's tombstone (see drop.lua):
-- above any sequence an instance sends.
local hc_swept = '9007199254740992'
