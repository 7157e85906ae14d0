-- LeaseStore::try_lease. KEYS: lease hash. ARGV: name, holder, ttl_ms.
-- The entry outlives its grant (until_ms 0 once released or written under), so the next
-- grant's fence is above it; the fence also follows Redis's clock (next_fence in Rust).
local now = now_ms()
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local last = 0
if cur then
  local f, until_ms, holder = parse_lease(cur)
  if holder ~= ARGV[2] and until_ms > now then return false end
  last = tonumber(f)
end
local fence = last + 1
if now > fence then fence = now end
redis.call('HSET', KEYS[1], ARGV[1], fmt(fence) .. ' ' .. fmt(now + tonumber(ARGV[3])) .. ' ' .. ARGV[2])
return fence
