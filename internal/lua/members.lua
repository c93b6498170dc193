-- members: one page of a group's member list, with the group's member
-- count and last event sequence read at the same instant (a snapshot that
-- the events after that sequence continue). See presence.lua.
--
-- KEYS    G:pu, G:pp
-- ARGV    after (the encoded name the page starts after; '' from the
--         start), limit
-- Returns {n, q, more (0/1), name1, connections1, metadata1, ...}
local pu, pp = KEYS[1], KEYS[2]
local g = string.sub(pu, 1, #pu - 3)
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
local out = {st[1] or '0', st[2] or '0', more}
for i = 1, #names do
  local f = redis.call('HMGET', g .. '#' .. names[i], 't', 'd')
  out[#out + 1] = names[i]
  out[#out + 1] = f[1] or '0'
  out[#out + 1] = f[2] or ''
end
return out
