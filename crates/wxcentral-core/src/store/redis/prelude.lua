-- Shared by every wxcentral script (prepended in Rust). All keys of a namespace share one hash
-- tag, so each script touches one slot and runs unchanged on Redis Cluster.
--
-- Numbers: Lua 5.1 numbers are doubles; fences, versions and times are milliseconds (13 digits),
-- exact up to 2^53. `fmt` writes them without an exponent.
local function fmt(n)
  return string.format('%.0f', n)
end

-- Redis's own clock, so leases do not depend on the nodes' clocks agreeing.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A lease entry is "fence until_ms holder" (the holder last: it may contain spaces).
local function parse_lease(s)
  local f, u, h = string.match(s, '^(%d+) (%-?%d+) (.*)$')
  return f, tonumber(u), h
end

-- Tells every node what changed: the sequence number lets a subscriber notice a lost message.
local function announce(seq_key, channel, kind, appid)
  local seq = redis.call('INCR', seq_key)
  redis.call('PUBLISH', channel, fmt(seq) .. ' ' .. kind .. ' ' .. appid)
end

-- A credential entry is "version|expires_at_ms|fetched_at_ms|sealed value".
local function stored_version(cred_key, field)
  local s = redis.call('HGET', cred_key, field)
  if not s then return nil end
  return tonumber(string.match(s, '^(%d+)|'))
end

-- The fenced write of CredentialStore::put_credential: refused (false) unless the lease's
-- current grant has `fence`; the version is max(fence, stored + 1); the write ends the lease.
local function fenced_write(lease_key, cred_key, lease_name, fence, field, expires, fetched, value)
  local cur = redis.call('HGET', lease_key, lease_name)
  if not cur then return false end
  local f, _, holder = parse_lease(cur)
  if f ~= fence then return false end
  local version = tonumber(fence)
  local stored = stored_version(cred_key, field)
  if stored and stored + 1 > version then version = stored + 1 end
  redis.call('HSET', cred_key, field, fmt(version) .. '|' .. expires .. '|' .. fetched .. '|' .. value)
  redis.call('HSET', lease_key, lease_name, f .. ' 0 ' .. holder)
  return version
end

-- An authorizer entry is "event_ms|component|record json".
local function authorizer_event(authz_key, appid)
  local s = redis.call('HGET', authz_key, appid)
  if not s then return nil, nil end
  local e, c = string.match(s, '^(%-?%d+)|([^|]*)|')
  return tonumber(e), c
end

-- A durable secret lives in the hash of its group; the set of groups lets a listing by a short
-- prefix find them without SCAN.
local function put_secret(groups_key, group_key, group, field, value)
  redis.call('HSET', group_key, field, value)
  redis.call('SADD', groups_key, group)
end
