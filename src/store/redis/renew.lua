--[[
  Renews the lease of a batch whose handlers still run.

  KEYS[1]  the batch's lease record
  ARGV[1]  owner token
  ARGV[2]  new lease in ms, from now on Redis's clock
  ARGV[3]  new life of each key record in ms (lease + TTL), so a handler that
           runs longer than the TTL still finds its keys
  ARGV[4]  record keys, NUL-joined

  Returns one character per key: '1' = renewed, '0' = lost (the lease lapsed,
  or another token holds the key). A lease already DONE is never shortened.
]]
local keys = split(ARGV[4])
if redis.call('GET', KEYS[1]) ~= 'p' then
  return string.rep('0', #keys)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local mine = 'p' .. ARGV[1] .. '\n'
local out = {}
for i = 1, #keys do
  local record = redis.call('GET', keys[i])
  if record and string.sub(record, 1, #mine) == mine then
    redis.call('PEXPIRE', keys[i], ARGV[3])
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
