-- members: one page of a group's member list, with the group's member
-- count and last event sequence read at the same instant (a snapshot that
-- the events after that sequence continue). See presence.lua.
--
-- KEYS    G:pu, G:pp, G:pl
-- ARGV    after (the encoded name the page starts after; '' from the
--         start), limit, the list's tag ("q:v") the caller holds a whole
--         copy of ('' none)
-- Returns {n, q, more ('0'/'1'), form, tag, name1, entry1, ...}: form '1'
-- is the page in name order; '0' the whole list, in no order (the caller
-- sorts it); '2' nothing more: the whole list is still the caller's copy.
local pu, pp, pl = KEYS[1], KEYS[2], KEYS[3]
local limit = tonumber(ARGV[2])
local st = redis.call('HMGET', pp, 'n', 'q', 'v')
local head = {st[1] or '0', st[2] or '0'}
local tag = head[2] .. ':' .. (st[3] or '0')
if ARGV[1] == '' and redis.call('ZCARD', pu) <= limit then
  if ARGV[3] == tag then
    return {head[1], head[2], '0', '2', tag}
  end
  local all = redis.call('HGETALL', pl)
  local out = {head[1], head[2], '0', '0', tag}
  for i = 1, #all do out[i + 5] = all[i] end
  return out
end
local from = '-'
if ARGV[1] ~= '' then from = '(' .. ARGV[1] end
local names = redis.call('ZRANGEBYLEX', pu, from, '+', 'LIMIT', 0, limit + 1)
local more = '0'
if #names > limit then
  more = '1'
  names[#names] = nil
end
local out = {head[1], head[2], more, '1', tag}
-- HMGET in chunks: unpack has a bound on how many values it spreads.
for i = 1, #names, 1000 do
  local chunk = {unpack(names, i, math.min(i + 999, #names))}
  local v = redis.call('HMGET', pl, unpack(chunk))
  for j = 1, #chunk do
    out[#out + 1] = chunk[j]
    out[#out + 1] = v[j] or '0\t'
  end
end
return out
