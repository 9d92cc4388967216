--[[
  Applies each key's claimed version: it becomes the applied one, with its
  state, and the record lives ttl from now. Fenced twice: by token (a claim
  another owner took over after this lease lapsed is not ours) and by
  version (never set an applied version back).

  KEYS     record keys
  ARGV[1]  owner token
  ARGV[2]  TTL in ms

  Returns one character per key: '1' = applied (or applied earlier by this
  token: a retried call whose reply was lost), '0' = refused.
]]
local token = ARGV[1]
local ttl = ARGV[2]
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local r = redis.call('HMGET', key, 't', 'c', 'cs', 'a', 'd')
  if r[1] == token then
    if not r[4] or newer(r[2], r[4]) then
      redis.call('HSET', key, 'a', r[2], 'd', token)
      if r[3] then redis.call('HSET', key, 's', r[3]) else redis.call('HDEL', key, 's') end
      redis.call('PEXPIRE', key, ttl)
      out[i] = '1'
    else
      out[i] = '0'
    end
    redis.call('HDEL', key, 't', 'c', 'cs', 'l')
  elseif not r[1] and r[5] == token then
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
