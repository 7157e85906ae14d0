-- AuthorizerStore::unauthorize. KEYS: authorizer hash, refresh-token group hash, credential
-- hash, lease hash, sequence. ARGV: channel, component, appid, event_ms, tombstone entry, lease
-- prefix, then every credential kind.
local event, component = authorizer_event(KEYS[1], ARGV[3])
if component and component ~= ARGV[2] then return 0 end
if event and event > tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
redis.call('HDEL', KEYS[2], ARGV[3])
for i = 7, #ARGV do
  redis.call('HDEL', KEYS[3], ARGV[3] .. '/' .. ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[6] .. ARGV[i])
end
announce(KEYS[5], ARGV[1], 'app', ARGV[3])
return 1
