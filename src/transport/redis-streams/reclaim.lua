--[[
  Takes over entries of the group that have been pending (delivered, never
  acked) for at least minIdleMs, whoever holds them: a dead or stopped
  consumer, or this group's own in-flight and failed entries, which settle
  ages so that they come back here after their delay. One call also reads
  each taken entry's delivery count, which XAUTOCLAIM does not return, so the
  count that decides "dead-letter after maxDeliveries" is Redis's own (it
  survives every crash) and is read atomically with the claim.

  KEYS[1]  the stream
  ARGV[1]  group
  ARGV[2]  consumer taking the entries
  ARGV[3]  minIdleMs
  ARGV[4]  cursor ('0-0' starts a scan of the group's pending entries)
  ARGV[5]  COUNT: most entries taken (XAUTOCLAIM looks at up to 10 × COUNT)

  Returns { next cursor, { id, { field, value, … }, deliveries, … }, { deleted id, … } }
  The next cursor is '0-0' once the scan has been through every pending entry.
  Deleted: ids still pending whose entry was deleted from the stream (XDEL,
  XTRIM) before anyone acked it. Redis 7 drops them from the pending list
  itself; Redis 6.2 returns them with nil fields and keeps them, so they are
  acked here: there is nothing left to run.
]]
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local reply = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local taken = {}
local deleted = reply[3] or {}
for _, entry in ipairs(reply[2]) do
  local id, fields = entry[1], entry[2]
  if not fields then
    redis.call('XACK', stream, group, id)
    deleted[#deleted + 1] = id
  else
    -- XPENDING over the one id: { { id, consumer, idle, deliveries } }
    local pending = redis.call('XPENDING', stream, group, id, id, 1)
    taken[#taken + 1] = id
    taken[#taken + 1] = fields
    taken[#taken + 1] = pending[1][4]
  end
end
return { reply[1], taken, deleted }
