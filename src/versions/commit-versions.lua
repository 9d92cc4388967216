--[[
  Applies each key's claimed version: it becomes the applied one, with its
  state, for ttl. Fenced by the claim's lease: once the token record has
  lapsed (another owner may have taken the keys over), nothing is applied.
  No version check is needed beyond that: while the lease is live no other
  token can claim the key, so its applied version cannot have moved.

  ARGV[1]  owner token
  ARGV[2]  TTL in ms
  ARGV[3]  prefix of token records
  ARGV[4]  'all': these are every key the token still holds: its token
           record turns 'd' and answers for them all, one write (ARGV[5]
           is their count). 'each': the record keys in ARGV[5], NUL-joined,
           are rewritten one by one.

  Returns one character per key: '1' = applied (or applied earlier by this
  token: a retried call whose reply was lost), '0' = refused.
]]
local token = ARGV[1]
local ttl = ARGV[2]
local prefix = ARGV[3]
if ARGV[4] == 'all' then
  local was = redis.call('SET', prefix .. token, 'd', 'XX', 'PX', ttl, 'GET')
  return string.rep(was and '1' or '0', tonumber(ARGV[5]))
end
local state = redis.call('GET', prefix .. token)
local keys = split(ARGV[5])
local out = {}
for i = 1, #keys do
  local key = keys[i]
  local f = fields(redis.call('GET', key))
  if f[4] == token and state then
    redis.call('SET', key, record({ f[5], f[6], token, '', '', '' }), 'PX', ttl)
    out[i] = '1'
  elseif f[4] == '' and f[3] == token then
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
