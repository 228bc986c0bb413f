-- gcra_refund.lua - give back units that gcra.lua charged (Redis Cluster only).
--
-- In a Redis Cluster a script may touch one slot only, so the call of a
-- message's first recipient (the MAIL-stage rules and that recipient's
-- rules, on several subjects) is split into one gcra.lua call per slot, all
-- in the same pipeline.  When one of them refuses, the others have charged
-- already; this script gives their units back, so the rule "nothing is
-- charged unless every bucket allows" still holds once the refund has run
-- (store_redis_cluster.c, docs/ratelimit.md).
--
-- KEYS[1..n]   the buckets, "<prefix>rl:{<subject>}:<rule>" (one hash tag)
-- ARGV[1]      now, microseconds since the epoch (the caller's clock)
-- ARGV[2+2(i-1)], ARGV[3+2(i-1)]
--              for KEYS[i]: interval I (us), cost c (units) that was charged
--
-- Effect       TAT := TAT - c*I; the key is deleted when that is <= now (the
--              bucket is full) and otherwise keeps TTL ceil((TAT - now)/1000)
--              ms, as gcra.lua sets it.  A missing key is left alone (it has
--              expired: the bucket is full already).
-- Returns      the number of keys changed.
local now = tonumber(ARGV[1])
local changed = 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 + 2 * (i - 1)])
  local cost = tonumber(ARGV[3 + 2 * (i - 1)])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '')
  if tat ~= nil then
    tat = tat - cost * interval
    if tat <= now then
      redis.call('DEL', KEYS[i])
    else
      local ttl = math.ceil((tat - now) / 1000)
      if ttl < 1 then ttl = 1 end
      redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', ttl)
    end
    changed = changed + 1
  end
end
return changed
