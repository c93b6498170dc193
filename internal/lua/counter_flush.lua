-- counter_flush: apply one lax batch's delta to a plain counter exactly once.
-- The writer numbers its batches; a batch whose number is not above the last
-- one applied for this writer is a retry and changes nothing.
--
-- KEYS[1] the counter, KEYS[2] the writer's last applied batch number
-- ARGV    delta, batch number, ttl ms of KEYS[2]
-- Returns {value after, applied 0/1}
local last = redis.call('GET', KEYS[2])
if last and tonumber(last) >= tonumber(ARGV[2]) then
  return {redis.call('GET', KEYS[1]) or '0', 0}
end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return {redis.call('GET', KEYS[1]), 1}
