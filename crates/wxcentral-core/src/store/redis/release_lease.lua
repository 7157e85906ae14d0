-- LeaseStore::release_lease. KEYS: lease hash. ARGV: name, holder, fence.
-- Only the current grant is ended, and its entry stays so fences keep growing.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local f, _, holder = parse_lease(cur)
if f ~= ARGV[3] or holder ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], f .. ' 0 ' .. holder)
return 1
