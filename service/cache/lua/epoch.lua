-- Claim a new cache epoch, but only if nobody else has since `expected` was read: the flush of a
-- process whose gap no live listener covered (service/cache/listener.py). A flush is O(1): every page
-- key carries its epoch, and pages of an older epoch are simply never read again (their TTLs
-- remove them). When many processes reconnect at once, the first claim wins and the others,
-- seeing the epoch moved past what they read after their LISTEN, are covered by it instead.
-- KEYS[1] the epoch key; ARGV[1] the epoch read after LISTEN ('' for none), ARGV[2] the new one
-- Returns {epoch now, 1 if this call set it}.
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return {current, 0}
end
redis.call('SET', KEYS[1], ARGV[2])
return {ARGV[2], 1}
