-- members: one page of a group's member list, with the group's member
-- count and last event sequence read at the same instant (a snapshot that
-- the events after that sequence continue). See presence.lua.
--
-- KEYS    G:pu, G:pp, G:pl, G:pe
-- ARGV    after (the encoded name the page starts after; '' from the
--         start), limit, the tag ("q:v") of the whole list the caller
--         holds a copy of ('' none)
-- Returns {n, q, more ('0'/'1'), form, tag, ...}, by form:
--   '1'  a page in name order: name1, entry1, ... (entry: "total\tmeta")
--   '0'  the whole list, in no order (the caller sorts it): likewise
--   '2'  nothing more: the whole list is still the caller's copy
--   '3'  the caller's copy changed by joins and leaves alone (the version
--        v is the same): those events, kind1, name1, total1, meta1,
--        listed1, ... (total, meta and listed are '' on leaves)
local pu, pp, pl, pe = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit = tonumber(ARGV[2])
local st = redis.call('HMGET', pp, 'n', 'q', 'v')
local head = {st[1] or '0', st[2] or '0'}
local v = st[3] or '0'
local tag = head[2] .. ':' .. v
if ARGV[1] == '' and redis.call('ZCARD', pu) <= limit then
  if ARGV[3] == tag then
    return {head[1], head[2], '0', '2', tag}
  end
  -- At most 64 events behind, all in the history: send those. An entry
  -- holds one event, or two with a group event (field g); the entries must
  -- hold every event from hq + 1 on.
  local hq, hv = string.match(ARGV[3], '^(%d+):(%d+)$')
  local q = tonumber(head[2])
  if hq and hv == v and tonumber(hq) < q and q - tonumber(hq) <= 64 then
    hq = tonumber(hq)
    local evs = redis.call('XRANGE', pe, '(' .. hc_fmt(hq) .. '-0', head[2] .. '-0')
    local out, seen = {head[1], head[2], '0', '3', tag}, hq
    for _, e in ipairs(evs) do
      local f = {}
      for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
      local last, n = tonumber(string.match(e[1], '^(%d+)')), 1
      if f.g and f.g ~= '' then n = 2 end
      if last - n ~= seen then
        out = nil
        break
      end
      seen = last
      for _, x in ipairs({f.e, f.m, f.c or '', f.d or '', f.l or ''}) do out[#out + 1] = x end
    end
    if out and seen == q then
      return out
    end
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
  local vals = redis.call('HMGET', pl, unpack(chunk))
  for j = 1, #chunk do
    out[#out + 1] = chunk[j]
    out[#out + 1] = vals[j] or '0\t'
  end
end
return out
