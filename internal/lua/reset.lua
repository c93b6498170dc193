-- reset: cluster-wide Set (base = value, no slices) or Del (nothing left but
-- the epoch). Either way the epoch moves on, so every instance that still
-- holds a slice zeroes it when it next writes, and the hash stays behind as
-- a tombstone for ARGV[5] ms so that an instance cut off during the reset
-- cannot bring its old slice back. A member whose total the reset takes
-- to or from zero leaves or joins its group (see presence.lua).
--
-- KEYS[1] counter hash, KEYS[2] lease set (see assert.lua)
-- ARGV    id, 'set' or 'del', value, lease ms, tombstone ttl ms, reap limit,
--         the presence spec (see presence.lua; '' off)
-- Returns {total before, caller's slice before, new epoch, reaped}
local h, z = KEYS[1], KEYS[2]
local id, mode, value = ARGV[1], ARGV[2], ARGV[3]
hc_set_spec(ARGV[7])
local now = hc_now()
local reaped, total, mine = 0, '0', '0'
local epoch = redis.call('HGET', h, 'e')
if epoch then
  reaped = hc_reap(h, z, now, tonumber(ARGV[4]), tonumber(ARGV[6]), id)
  total = redis.call('HGET', h, 't')
  mine = redis.call('HGET', h, 'v:' .. id) or '0'
  epoch = tonumber(epoch)
else
  epoch = 0
end
-- The epoch is at least the current time, so it also outruns the epochs
-- that instances remember from before a loss of data.
epoch = math.max(epoch + 1, now)
redis.call('DEL', h, z)
local after = '0'
if mode == 'set' then
  after = value
  redis.call('HSET', h, 'e', hc_fmt(epoch), 'b', value, 't', value)
else
  redis.call('HSET', h, 'e', hc_fmt(epoch), 't', '0')
end
redis.call('PEXPIRE', h, ARGV[5])
hc_changed(h, total or '0', after, id)
return {total, mine, epoch, reaped}
