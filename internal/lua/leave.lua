-- leave: instance id's session ends (graceful close), unless a newer
-- session of the same id has registered since.
--
-- KEYS    live, sessions, claims, resets, renewed (see registry.lua)
-- ARGV    id, session
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur and tonumber(cur) <= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
