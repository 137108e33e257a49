-- GCRA (the generic cell rate algorithm): one key per limited party holds its "theoretical
-- arrival time" (TAT, unix ms). A request is allowed while TAT - now <= tolerance; each allowed
-- request moves TAT one emission interval on. A refused request changes nothing.
-- A caller may take up to ARGV[4] requests' worth at once (a worker's lease of allowances,
-- service/limits/limiter.py): as many as fit in the upper half of the burst are granted and
-- counted, never more than the rate allows one at a time.
-- The key expires when the bucket would be full again, so idle parties cost no memory.
-- KEYS[1] the party's key
-- ARGV[1] now (unix ms, the app's clock), ARGV[2] emission interval ms (period / rate),
-- ARGV[3] tolerance ms (interval * (burst - 1)), ARGV[4] how many at most (default 1)
-- Returns {granted, 0} with granted >= 1, or {0, ms until the next request would be allowed}.
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local want = tonumber(ARGV[4] or '1')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
if tat - now > tolerance then
  return {0, tat - now - tolerance}
end
-- The request's own allowance, and a lease's extras only out of the upper half of the burst:
-- extras a worker lets expire unused are counted, so leasing them near the limit would starve a
-- party that stays below its rate. Past half the burst, every allowance is taken one at a time.
local extra = math.floor((tolerance / 2 - (tat - now)) / interval) - 1
local granted = 1 + math.max(0, math.min(want - 1, extra))
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now))
return {granted, 0}
