-- hincr_ttl.lua - increment one field of a hash and keep the hash alive.
--
-- KEYS[1]   the hash
-- ARGV[1]   field
-- ARGV[2]   increment (integer, may be negative)
-- ARGV[3]   TTL in milliseconds, set on every call: the hash vanishes after
--           that long without an increment
--
-- Returns the field's new value.
local v = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return v
