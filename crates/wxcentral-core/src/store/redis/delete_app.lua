-- AppStore::delete_app and CredentialStore::delete_credentials. KEYS: app hash, credential
-- hash, lease hash, sequence. ARGV: channel, appid, lease prefix, whether to remove the app
-- ('1' or '0'), then every credential kind. Answers whether the app existed.
local existed = 0
if ARGV[4] == '1' then existed = redis.call('HDEL', KEYS[1], ARGV[2]) end
for i = 5, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[2] .. '/' .. ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[3] .. ARGV[i])
end
if existed == 1 then announce(KEYS[4], ARGV[1], 'app', ARGV[2]) end
return existed
