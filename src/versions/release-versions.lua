--[[
  Drops this token's claim of each key; the applied version stays (a record
  with none is deleted), so an older version stays stale after a failed run.
  A token's releases come before its commit of the keys it still holds.

  ARGV[1]  owner token
  ARGV[2]  record keys, NUL-joined

  Returns one character per key: '1' = released (or no claim of ours), '0' = another token's claim.
]]
local token = ARGV[1]
local out = {}
for i, key in ipairs(split(ARGV[2])) do
  local f = fields(redis.call('GET', key))
  if f[4] == '' then
    out[i] = '1'
  elseif f[4] ~= token then
    out[i] = '0'
  else
    if f[1] == '' then
      redis.call('DEL', key)
    else
      redis.call('SET', key, record({ f[1], f[2], f[3], '', '', '' }), 'KEEPTTL')
    end
    out[i] = '1'
  end
end
return table.concat(out)
