--[[
  Extends this token's live claims.

  KEYS     record keys
  ARGV[1]  owner token
  ARGV[2]  lease in ms
  ARGV[3]  TTL a commit gives the record, in ms

  Returns one character per key: '1' = renewed, '0' = lost (lapsed or taken over).
]]
local now = nowMs()
local token = ARGV[1]
local lease = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local r = redis.call('HMGET', key, 't', 'l')
  if r[1] == token and tonumber(r[2]) > now then
    redis.call('HSET', key, 'l', now + lease)
    outlive(key, lease + tonumber(ARGV[3]))
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
