-- adcast: write one user's affinities only when the version is newer than what is stored.
-- KEYS[1] = user hash; ARGV = version, model_version, computed_at_ms, newest_event_time_ms,
-- top-K encoding, ttl_ms (0 = keep). Returns 1 when written, 0 when the stored version is
-- the same or newer (a stale or repeated write). Atomic: no read-then-write race.
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'mv', ARGV[2], 'ct', ARGV[3], 'et', ARGV[4], 'top', ARGV[5])
if tonumber(ARGV[6]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return 1
