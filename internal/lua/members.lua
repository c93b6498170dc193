-- members: one page of a group's member list, with the group's member
-- count and last event sequence read at the same instant (a snapshot that
-- the events after that sequence continue). See presence.lua.
--
-- KEYS    G:pu, G:pp, G:pm, G:pd
-- ARGV    after (the encoded name the page starts after; '' from the
--         start), limit
-- Returns {n, q, more ('0'/'1'), names, connections, metadata}
local pu, pp, pm, pd = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit = tonumber(ARGV[2])
local from = '-'
if ARGV[1] ~= '' then from = '(' .. ARGV[1] end
local names = redis.call('ZRANGEBYLEX', pu, from, '+', 'LIMIT', 0, limit + 1)
local st = redis.call('HMGET', pp, 'n', 'q')
local more = '0'
if #names > limit then
  more = '1'
  names[#names] = nil
end
-- HMGET in chunks: unpack has a bound on how many values it spreads.
local conns, metas = {}, {}
for i = 1, #names, 1000 do
  local chunk = {unpack(names, i, math.min(i + 999, #names))}
  local c = redis.call('HMGET', pm, unpack(chunk))
  local d = redis.call('HMGET', pd, unpack(chunk))
  for j = 1, #chunk do
    conns[#conns + 1] = c[j] or '0'
    metas[#metas + 1] = d[j] or ''
  end
end
return {st[1] or '0', st[2] or '0', more, names, conns, metas}
