-- Before a miss reads the database: make sure the member's hash has a generation stamp and
-- return it (the fill will land only if it is still the same), and try to take the page's
-- cross-process fill lease. Also return the hash's fence: the primary's WAL position that a
-- read replica must have replayed to answer for this member (0 when no replica is used).
-- KEYS[1] member hash, KEYS[2] lease key
-- ARGV[1] fresh stamp (used if none), ARGV[2] lease token, ARGV[3] lease ms, ARGV[4] hash ttl ms,
-- ARGV[5] this process's fence (used if none: a hash evicted with its fence gets a safe one)
local gen = redis.call('HGET', KEYS[1], 'gen')
local fence = redis.call('HGET', KEYS[1], 'lsn')
if not gen then
  gen = ARGV[1]
  fence = ARGV[5]
  redis.call('HSET', KEYS[1], 'gen', gen, 'lsn', fence)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if not fence then
  fence = ARGV[5]
end
local lease = redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
if lease then
  return {gen, 1, fence}
end
return {gen, 0, fence}
