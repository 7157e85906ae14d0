-- AuthorizerStore::put_authorizer_token: the fenced token write, the rotated refresh token, the
-- record and the code mark, all or none.
-- KEYS: lease hash, credential hash, sequence, authorizer hash, refresh-token group hash,
--       code group hash, secret groups set.
-- ARGV: channel, lease name, fence, field, expires_at_ms, fetched_at_ms, sealed value, kind,
--       appid, sealed refresh token, refresh-token group, record entry ('' for none), record
--       event_ms, code field ('' for none), sealed code mark, code group.
if ARGV[12] ~= '' then
  local event = authorizer_event(KEYS[4], ARGV[9])
  if event and event > tonumber(ARGV[13]) then return false end
end
local version = fenced_write(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if not version then return false end
put_secret(KEYS[7], KEYS[5], ARGV[11], ARGV[9], ARGV[10])
announce(KEYS[3], ARGV[1], ARGV[8], ARGV[9])
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[9], ARGV[12])
  announce(KEYS[3], ARGV[1], 'app', ARGV[9])
end
if ARGV[14] ~= '' then
  put_secret(KEYS[7], KEYS[6], ARGV[16], ARGV[14], ARGV[15])
end
return version
