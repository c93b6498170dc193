-- counter_incr: plain counter, add ARGV[1] when "value <op> operand" holds
-- (always when op is '').
--
-- KEYS[1] the counter (a string holding an integer)
-- ARGV    delta, op, operand
-- Returns {value after (or current, when not applied), applied 0/1}
local k = KEYS[1]
local cur = redis.call('GET', k) or '0'
if not hc_holds(ARGV[2], cur, ARGV[3]) then
  return {cur, 0}
end
redis.call('INCRBY', k, ARGV[1])
return {redis.call('GET', k), 1}
