-- Before a miss reads the database: make sure the member's hash has a generation stamp and
-- return it (the fill will land only if it is still the same), and try to take the page's
-- cross-process fill lease.
-- KEYS[1] member hash, KEYS[2] lease key
-- ARGV[1] fresh stamp (used if none), ARGV[2] lease token, ARGV[3] lease ms, ARGV[4] hash ttl ms
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then
  gen = ARGV[1]
  redis.call('HSET', KEYS[1], 'gen', gen)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local lease = redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
if lease then
  return {gen, 1}
end
return {gen, 0}
