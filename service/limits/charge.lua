-- Charges for requests already admitted (service/limits/limiter.py, "Local admission"): what a
-- worker let through on its own, counted afterwards, in one call for many parties (one per
-- party in a Redis Cluster, whose script keys must share a slot). The same GCRA as
-- ratelimit.lua: each request moves its party's TAT one emission interval on, and all of them
-- are counted (they were served), so a party past its limit pays it back in refusals before
-- its next request fits.
-- KEYS[i] party i's key
-- ARGV[1] now (unix ms); then per party i: ARGV[3i-1] emission interval ms, ARGV[3i] tolerance
-- ms, ARGV[3i+1] how many requests
-- Returns per party: 0 while a next request fits, else the ms until it would.
local now = tonumber(ARGV[1])
local waits = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 1])
  local tolerance = tonumber(ARGV[3 * i])
  local n = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  local new_tat = tat + n * interval
  redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now))
  waits[i] = math.max(0, math.ceil(new_tat - now - tolerance))
end
return waits
