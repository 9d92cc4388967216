--[[
  Extends this token's lease, and its records' lives to match.

  ARGV[1]  owner token
  ARGV[2]  lease in ms
  ARGV[3]  TTL a commit gives the record, in ms
  ARGV[4]  prefix of token records
  ARGV[5]  record keys the token holds, NUL-joined

  Returns one character per key: '1' = renewed, '0' = lost (lapsed or taken over).
]]
local token = ARGV[1]
local lease = ARGV[2]
local renewed = redis.call('SET', ARGV[4] .. token, 'p', 'XX', 'PX', lease, 'GET') == 'p'
local out = {}
for i, key in ipairs(split(ARGV[5])) do
  local f = fields(redis.call('GET', key))
  if renewed and f[4] == token then
    redis.call('PEXPIRE', key, tonumber(lease) + tonumber(ARGV[3]))
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
