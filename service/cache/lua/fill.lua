-- Store a page only if no invalidation happened since `prepare` read the stamp: a fill that
-- read the database before an invalidation never lands after it (the stale-set race).
-- KEYS[1] member hash, KEYS[2] lease key
-- ARGV[1] stamp from prepare, ARGV[2] field, ARGV[3] value, ARGV[4] hash ttl ms, ARGV[5] lease token
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
return 1
