-- Drop a member's pages and give the hash a new, never reused stamp, so that any fill prepared
-- before this moment is refused. The stamp outlives every fill in flight (ttl >> a query).
-- KEYS[1] member hash; ARGV[1] new stamp, ARGV[2] hash ttl ms
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
