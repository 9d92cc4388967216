--[[
  Renews the leases of a batch whose handlers still run.

  KEYS[1]  the batch's first record key (routing only)
  ARGV[1]  owner token
  ARGV[2]  new lease in ms, from now on Redis's clock
  ARGV[3]  record keys, NUL-joined

  Returns one character per key: '1' = renewed, '0' = lost (lapsed, or owned by another token).
]]
local mine = 'p' .. ARGV[1] .. '\n'
local out = {}
for i, key in ipairs(split(ARGV[3])) do
  local record = redis.call('GET', key)
  if record and string.sub(record, 1, #mine) == mine then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
