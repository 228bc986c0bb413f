-- incr_ttl.lua - a counter that expires a fixed time after it was created.
--
-- KEYS[1]   the counter (a string holding a decimal integer)
-- ARGV[1]   increment (integer, may be negative)
-- ARGV[2]   TTL in milliseconds, set only when the key has none (a new key),
--           so the counter covers a fixed window starting at its first use
--
-- Returns the new value.
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
