--[[
  Reads records for owned mode's "maybe seen" keys: no claim, the owner is alone.

  ARGV[1]  record keys, NUL-joined (split: split-keys.lua, prepended)

  Returns per key: the record ('' when absent) and its remaining life in ms.
]]
local keys = split(ARGV[1])
local out = {}
for i = 1, #keys do
  local record = redis.call('GET', keys[i])
  if record then
    out[#out + 1] = record
    out[#out + 1] = redis.call('PTTL', keys[i])
  else
    out[#out + 1] = ''
    out[#out + 1] = 0
  end
end
return out
