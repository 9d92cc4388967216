--[[
  A member's heartbeat (DESIGN.md §5): registers or renews the member, drops
  the members whose heartbeat lapsed, and renews the member's partition
  leases, all on Redis's clock.

  KEYS[1]  the group's members (a sorted set: member → expiry in ms)
  KEYS[2]  the store's identity record
  ARGV[1]  the identity record this store accepted ('' to skip the check)
  ARGV[2]  member id
  ARGV[3]  lease in ms
  ARGV[4]  lease key prefix (the partition number is appended)
  ARGV[5..] held partitions as partition, epoch pairs

  Returns { renewed flags ('1' per renewed lease, '0' per lost one), member, member, … },
  or the error 'IDEM_STORE_RESET <found or written>' when the identity record
  changed (nothing else done).
]]
-- checkIdentity: check-identity.lua, prepended (a record gone becomes the reset marker, as for the strict store).
if ARGV[1] ~= '' then
  local refused = checkIdentity(KEYS[2], ARGV[1])
  if refused then
    return refused
  end
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], lease * 10)
local flags = {}
for i = 5, #ARGV, 2 do
  local key = ARGV[4] .. ARGV[i]
  local mine = ARGV[2] .. '\n' .. ARGV[i + 1]
  if redis.call('GET', key) == mine then
    redis.call('SET', key, mine, 'PX', lease)
    flags[#flags + 1] = '1'
  else
    flags[#flags + 1] = '0'
  end
end
local reply = { table.concat(flags) }
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  reply[#reply + 1] = member
end
return reply
