-- AppStore::put_apps. KEYS: app hash, sequence. ARGV: channel, then appid and entry pairs.
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  announce(KEYS[2], ARGV[1], 'app', ARGV[i])
end
return 1
