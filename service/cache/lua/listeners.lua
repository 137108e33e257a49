-- The registry of covered listeners (service/cache/listener.py), on Redis's own clock so that hosts'
-- clocks need not agree. With ARGV[2] set: this listener is covered and alive now (a heartbeat);
-- ARGV[2] '' : it is not (it stopped, or lost its coverage). Returns how many others were alive
-- within the window: whether a process that needs a handover may expect an acknowledgement.
-- KEYS[1] the registry (sorted set: id -> last heartbeat ms); ARGV[1] window ms, ARGV[2] this
-- listener's id or '', ARGV[3] the id to remove or ''
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[3])
end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], window * 10)
local alive = redis.call('ZCARD', KEYS[1])
if ARGV[2] ~= '' then
  alive = alive - 1
end
return alive
