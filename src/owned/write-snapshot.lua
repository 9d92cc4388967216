--[[
  Writes a partition's bloom snapshot, fenced by its epoch.

  KEYS[1]  the partition's epoch key
  KEYS[2]  the partition's snapshot (a hash)
  ARGV[1]  epoch, ARGV[2] bloom bytes, ARGV[3] log id covered, ARGV[4] generationStartedAt (ms)

  Returns 1 when written, 0 when refused (the epoch moved on or was set back).
]]
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[2], 'bytes', ARGV[2], 'logId', ARGV[3], 'generationStartedAt', ARGV[4], 'epoch', ARGV[1])
return 1
