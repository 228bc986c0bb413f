-- gcra.lua - rate-limit check-and-update (GCRA) for one or more buckets.
--
-- The Generic Cell Rate Algorithm keeps ONE value per bucket: the
-- theoretical arrival time (TAT) of the next unit, in microseconds since
-- the epoch.  A bucket with rate N/PERIOD has an emission interval
-- I = PERIOD/N; with burst B a request of cost c is allowed when
--     max(TAT, now) + c*I - now <= B*I
-- and then TAT becomes max(TAT, now) + c*I.  An idle bucket is simply an
-- absent key: once TAT <= now the bucket is full and the key has expired.
--
-- KEYS[1..n]   the buckets, "<prefix>rl:{<subject>}:<rule>".  The keys of one
--              call carry the same {hash tag} (one slot), except the call of a
--              message's first recipient, which also charges the MAIL-stage
--              rules: its keys may span tags (one call for one Redis or
--              Sentinel; split per slot, with gcra_refund.lua, for a Cluster:
--              docs/ratelimit.md).
-- ARGV[1]      now, microseconds since the epoch (the caller's clock)
-- ARGV[2+3(i-1)], ARGV[3+3(i-1)], ARGV[4+3(i-1)]
--              for KEYS[i]: interval I (us), burst B (units), cost c (units)
--
-- Value        a string: the TAT as a decimal integer (microseconds).
-- TTL          PX = ceil((new TAT - now) / 1000) ms: the key vanishes exactly
--              when the bucket is full again.  Denied requests change nothing.
--
-- Clock skew: now is the caller's clock, and callers (threads of one daemon,
-- daemons of a fleet) reach Redis in an order their clocks need not agree
-- with.  A call whose now is earlier than a call already counted would see the
-- bucket short by that difference and lose the burst's last unit (found by a
-- failover test: a burst of 5 admitted 4).  So a request is allowed when it
-- fits within tol = min(I/2, 100 ms) more: less than one interval, so a burst
-- still admits exactly B and the long-run rate is unchanged; a unit can at most
-- come tol early (retry_ms stays the strict figure).  store_memory.c does the same.
--
-- All or nothing: the buckets are charged only if every one allows its cost.
--
-- Returns a flat array of 4 integers per key, in KEYS order:
--   allowed      1 if this bucket allowed its cost, else 0
--   remaining    whole units still available after this call
--   retry_ms     when denied: ms until the cost would fit (-1: never, cost > B)
--   reset_ms     ms until the bucket is full again (TAT - now after the call)
local now = tonumber(ARGV[1])
local n = #KEYS
local out = {}
local newtat = {}
local all = true

for i = 1, n do
  local base = 2 + 3 * (i - 1)
  local interval = tonumber(ARGV[base])
  local burst = tonumber(ARGV[base + 1])
  local cost = tonumber(ARGV[base + 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  local limit = burst * interval
  local tol = math.min(math.floor(interval / 2), 100000)
  local nt = tat + cost * interval
  if nt - now <= limit + tol then
    newtat[i] = nt
    out[4 * i - 3] = 1
    out[4 * i - 2] = math.max(0, math.floor((limit - (nt - now)) / interval))
    out[4 * i - 1] = 0
    out[4 * i] = math.ceil((nt - now) / 1000)
  else
    all = false
    out[4 * i - 3] = 0
    out[4 * i - 2] = math.floor((limit - (tat - now)) / interval)
    if cost > burst then
      out[4 * i - 1] = -1
    else
      out[4 * i - 1] = math.ceil((nt - now - limit) / 1000)
    end
    out[4 * i] = math.ceil((tat - now) / 1000)
  end
end

if all then
  for i = 1, n do
    local ttl = math.ceil((newtat[i] - now) / 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[i], string.format('%d', newtat[i]), 'PX', ttl)
  end
else
  -- Nothing was charged: report the allowing buckets as they stand.
  for i = 1, n do
    if out[4 * i - 3] == 1 then
      local base = 2 + 3 * (i - 1)
      local interval = tonumber(ARGV[base])
      local burst = tonumber(ARGV[base + 1])
      local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
      if tat < now then tat = now end
      out[4 * i - 2] = math.floor((burst * interval - (tat - now)) / interval)
      out[4 * i] = math.ceil((tat - now) / 1000)
    end
  end
end
return out
