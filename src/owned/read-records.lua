--[[
  Reads records for owned mode's "maybe seen" keys: no claim, the owner is alone.

  ARGV  record keys

  Returns per key: the record ('' when absent) and its remaining life in ms.
]]
local out = {}
for i = 1, #ARGV do
  local record = redis.call('GET', ARGV[i])
  if record then
    out[#out + 1] = record
    out[#out + 1] = redis.call('PTTL', ARGV[i])
  else
    out[#out + 1] = ''
    out[#out + 1] = 0
  end
end
return out
