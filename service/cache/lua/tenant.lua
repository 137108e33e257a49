-- A tenant's token, read before a miss reads the database: a page is stored with the token it
-- read, and a hit is served only while the token is still the same. A tenant-wide change (its
-- settings, its stores, goods or hotels, a coupon with too many holders) replaces the token with
-- a fresh random one, so every member's pages of the tenant are invalid at once, whoever holds
-- them. A token lost (evicted, Redis restarted) is created afresh here, and no page stored with
-- the old one matches it: a loss costs misses, never a stale page.
-- The value is `<token: 16 hex>:<fence>`: with a read replica, the WAL position it must have
-- replayed to serve the tenant's pages (the member's fence is the other bound; 0: none).
-- KEYS[1] the tenant's token key; ARGV[1] a fresh token, ARGV[2] its ttl ms, ARGV[3] this
-- process's fence (used if none: a token evicted with its fence gets a safe one)
local value = redis.call('GET', KEYS[1])
if not value then
  value = ARGV[1] .. ':' .. ARGV[3]
  redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
elseif redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) / 2 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
