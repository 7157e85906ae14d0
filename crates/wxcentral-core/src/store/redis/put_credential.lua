-- CredentialStore::put_credential. KEYS: lease hash, credential hash, sequence.
-- ARGV: channel, lease name, fence, field, expires_at_ms, fetched_at_ms, sealed value, kind, appid.
local version = fenced_write(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if not version then return false end
announce(KEYS[3], ARGV[1], ARGV[8], ARGV[9])
return version
