--[[
  Acquires partitions whose lease is free or lapsed: each acquisition
  increments the partition's epoch (its fencing token), so every write of an
  earlier owner is refused from now on.

  ARGV[1]  member id
  ARGV[2]  lease in ms
  ARGV[3]  lease key prefix, ARGV[4] epoch key prefix (the partition number is appended)
  ARGV[5..] partitions

  Returns one epoch per partition: the new one, the current one when this
  member holds the lease already, 0 when another member holds it.
]]
local out = {}
for i = 5, #ARGV do
  local leaseKey = ARGV[3] .. ARGV[i]
  local holder = redis.call('GET', leaseKey)
  if not holder then
    local epoch = redis.call('INCR', ARGV[4] .. ARGV[i])
    redis.call('SET', leaseKey, ARGV[1] .. '\n' .. epoch, 'PX', ARGV[2])
    out[#out + 1] = epoch
  elseif string.sub(holder, 1, #ARGV[1] + 1) == ARGV[1] .. '\n' then
    out[#out + 1] = tonumber(string.sub(holder, #ARGV[1] + 2))
  else
    out[#out + 1] = 0
  end
end
return out
