-- assert_many: several assertions of one instance in one script run (see
-- assert.lua), for flushes, heartbeats and multi-key commits: one command
-- and one clock reading for many counters. Only for keys that may be served
-- together: any keys on a standalone Redis, one hash tag on a cluster.
--
-- KEYS    h1, z1, h2, z2, ...
-- ARGV    id, session, lease ms, ttl ms, reap limit, the presence spec
--         (see presence.lua; '' off), then per counter: counter, epoch, L,
--         D, and with presence on the member's metadata (as assert.lua's)
-- Returns the replies of assert.lua one after the other, 6 values each.
local id, session = ARGV[1], ARGV[2]
local lease, ttl, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
hc_set_spec(ARGV[6])
local stride = 4
if hc_spec.on then stride = 5 end
local now = hc_now()
local f = hc_fields(id)
local out, k = {}, 0
for i = 1, #KEYS / 2 do
  local a = 6 + (i - 1) * stride
  local meta = ''
  if hc_spec.on then meta = ARGV[a + 5] end
  out[k + 1], out[k + 2], out[k + 3], out[k + 4], out[k + 5], out[k + 6] =
    hc_assert(KEYS[2 * i - 1], KEYS[2 * i], id, f, session, ARGV[a + 1], tonumber(ARGV[a + 2]),
      ARGV[a + 3], ARGV[a + 4], lease, ttl, limit, '', '0', '0', now, meta)
  k = k + 6
end
return out
