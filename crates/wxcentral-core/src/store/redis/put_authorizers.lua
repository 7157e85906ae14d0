-- AuthorizerStore::put_authorizers. KEYS: authorizer hash, refresh-token group hash, sequence,
-- secret groups set. ARGV: channel, refresh-token group, then per record: appid, event_ms,
-- entry, sealed refresh token ('' for none). Answers 1 or 0 per record.
local written = {}
local n = (#ARGV - 2) / 4
for i = 0, n - 1 do
  local appid, event, entry, rt = ARGV[3 + i * 4], ARGV[4 + i * 4], ARGV[5 + i * 4], ARGV[6 + i * 4]
  local stored = authorizer_event(KEYS[1], appid)
  if stored and stored > tonumber(event) then
    written[#written + 1] = 0
  else
    redis.call('HSET', KEYS[1], appid, entry)
    if rt ~= '' then put_secret(KEYS[4], KEYS[2], ARGV[2], appid, rt) end
    announce(KEYS[3], ARGV[1], 'app', appid)
    written[#written + 1] = 1
  end
end
return written
