--[[
  Claims a version of each key (DESIGN.md §5, version-aware keys). A key's
  record is a hash: a = applied version, s = its state, d = token of that
  commit; t = token of the live claim, c = version claimed, cs = the state it
  would leave, l = end of the claim's lease (ms, server clock).

  KEYS     record keys, no key twice
  ARGV[1]  owner token
  ARGV[2]  lease in ms
  ARGV[3]  TTL a commit gives the record, in ms
  ARGV[2i+2], ARGV[2i+3]  key i's version (sortable text) and the state it would leave ('' for none)

  Returns { codes, applied, state, applied, state… }: codes has one
  character per key: '0' = claimed, '1' = stale (applied version as new or
  newer), '2' = another token's claim is live; then per key the applied
  version and state ('' for none).
]]
local now = nowMs()
local token = ARGV[1]
local lease = tonumber(ARGV[2])
local life = lease + tonumber(ARGV[3])
local codes = {}
local out = { '' }
for i = 1, #KEYS do
  local key = KEYS[i]
  local version = ARGV[2 * i + 2]
  local state = ARGV[2 * i + 3]
  local r = redis.call('HMGET', key, 'a', 's', 't', 'l')
  local applied, owner, leaseEnd = r[1], r[3], tonumber(r[4])
  if applied and not newer(version, applied) then
    codes[i] = '1'
  elseif owner and owner ~= token and leaseEnd and leaseEnd > now then
    codes[i] = '2'
  else
    redis.call('HSET', key, 't', token, 'c', version, 'l', now + lease)
    if state == '' then redis.call('HDEL', key, 'cs') else redis.call('HSET', key, 'cs', state) end
    outlive(key, life)
    codes[i] = '0'
  end
  out[#out + 1] = applied or ''
  out[#out + 1] = r[2] or ''
end
out[1] = table.concat(codes)
return out
