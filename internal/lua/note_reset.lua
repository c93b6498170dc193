-- note_reset: counters were reset (Set, Del, Clear). Every instance learns
-- of it at its next heartbeat and zeroes its slices there.
--
-- KEYS    live, sessions, claims, resets, renewed (see registry.lua)
-- ARGV    ttl ms, then the counter hashes ('*' for every counter)
local now = hc_now()
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[4], now, ARGV[i])
end
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[1]))
return 1
