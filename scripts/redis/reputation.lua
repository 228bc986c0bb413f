-- reputation.lua - record one outcome in a subject's time buckets.
--
-- KEYS[1]   the subject's hash, "<prefix>rep:{<kind>=<value>}"
--           (kind: ip, net or dom)
-- Fields    "<bucket>:g" and "<bucket>:b": good and bad outcomes counted in
--           time bucket <bucket> = floor(now / bucket width), an integer
-- ARGV[1]   field to increment ("<bucket>:g" or "<bucket>:b")
-- ARGV[2]   increment (integer)
-- ARGV[3]   TTL in milliseconds (the reputation window), set on every call:
--           a subject not seen for a whole window vanishes
-- ARGV[4]   oldest bucket still inside the window
-- ARGV[5]   field count above which buckets older than ARGV[4] are removed
--           (2 * buckets per window; pruning is O(fields), so it runs only
--           when the hash has outgrown the window)
--
-- Returns the field's new value.
local v = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[5]) then
  local oldest = tonumber(ARGV[4])
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    local b = tonumber(string.match(f, '^(%d+):'))
    if b == nil or b < oldest then
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
return v
