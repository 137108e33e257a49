-- Drop a member's pages and give the hash a new, never reused stamp, so that any fill prepared
-- before this moment is refused. The stamp outlives every fill in flight (ttl >> a query).
-- The fence (WAL position a replica must have replayed) only moves forward: invalidations of
-- one write reach Redis from every process, in any order.
-- KEYS[1] member hash; ARGV[1] new stamp, ARGV[2] hash ttl ms, ARGV[3] fence (0: none)
local fence = tonumber(redis.call('HGET', KEYS[1], 'lsn') or '0') or 0
local new = tonumber(ARGV[3] or '0') or 0
if new > fence then
  fence = new
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'lsn', string.format('%.0f', fence))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
