--[[
  Frees the leases of partitions this member still holds under the given
  epochs (a graceful hand-over): the next owner takes them at once. Epochs stay.

  ARGV[1]  member id
  ARGV[2]  lease key prefix
  ARGV[3..] partition, epoch pairs

  Returns the number of leases freed.
]]
local freed = 0
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. ARGV[i]
  if redis.call('GET', key) == ARGV[1] .. '\n' .. ARGV[i + 1] then
    redis.call('DEL', key)
    freed = freed + 1
  end
end
return freed
