--[[
  Claims a version of each key (README "Versions and state machines"): the
  key is taken when the version is newer than the applied one and no other
  token's lease is live. The record then lives lease + TTL (never less than
  it had: every write sets at most that).

  ARGV[1]  owner token
  ARGV[2]  lease in ms
  ARGV[3]  TTL a commit gives the record, in ms
  ARGV[4]  prefix of token records
  ARGV[5]  record keys, NUL-joined, no key twice
  ARGV[6]  their versions (sortable texts), NUL-joined
  ARGV[7]  the states they would leave ('' for none), NUL-joined

  Returns { codes, applied, state, pttl, applied, state, pttl… }: codes has
  one character per key: '0' = claimed, '1' = stale (applied version as new
  or newer), '2' = another token's claim is live; then per key the applied
  version and state ('' for none) and, for a stale one, the record's PTTL (0
  for the others).
]]
local token = ARGV[1]
local lease = ARGV[2]
local life = tonumber(lease) + tonumber(ARGV[3])
local prefix = ARGV[4]
local keys = split(ARGV[5])
local versions = split(ARGV[6])
local states = split(ARGV[7])
local codes = {}
local out = { '' }
local claimed = false
for i = 1, #keys do
  local key = keys[i]
  local version = versions[i]
  local f, live = current(prefix, fields(redis.call('GET', key)))
  local ttl = 0
  if f[1] ~= '' and not newer(version, f[1]) then
    codes[i] = '1'
    ttl = redis.call('PTTL', key)
  elseif live and f[4] ~= token then
    codes[i] = '2'
  else
    redis.call('SET', key, record({ f[1], f[2], f[3], token, version, states[i] }), 'PX', life)
    codes[i] = '0'
    claimed = true
  end
  out[#out + 1] = f[1]
  out[#out + 1] = f[2]
  out[#out + 1] = ttl
end
if claimed then redis.call('SET', prefix .. token, 'p', 'PX', lease) end
out[1] = table.concat(codes)
return out
