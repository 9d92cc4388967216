--[[
  Drops this token's claim of each key; the applied version stays (a record
  with none is deleted), so an older version stays stale after a failed run.

  KEYS     record keys
  ARGV[1]  owner token

  Returns one character per key: '1' = released (or no claim), '0' = another token's claim.
]]
local token = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local r = redis.call('HMGET', key, 't', 'a')
  if not r[1] then
    out[i] = '1'
  elseif r[1] ~= token then
    out[i] = '0'
  else
    if r[2] then redis.call('HDEL', key, 't', 'c', 'cs', 'l') else redis.call('DEL', key) end
    out[i] = '1'
  end
end
return table.concat(out)
