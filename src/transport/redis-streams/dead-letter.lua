--[[
  Moves entries to the dead-letter stream: each is acked in the group and, only
  if that ack removed it from the pending list, added to the dead-letter
  stream. A call retried after a lost reply, or an entry another consumer
  settled in the meantime, therefore never makes a second dead letter; and no
  entry leaves the pending list without its dead letter (one script, atomic).

  KEYS[1]  the stream
  KEYS[2]  the dead-letter stream (same hash slot as the stream on a cluster)
  ARGV[1]  group
  ARGV[2…] per entry: its id, n, then n arguments (the dead letter's field/value pairs)

  Returns one character per entry: '1' dead-lettered by this call, '0' it was
  no longer pending (settled elsewhere, or by an earlier attempt of this call).
]]
local stream, dead, group = KEYS[1], KEYS[2], ARGV[1]
local moved = {}
local i = 2
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('XACK', stream, group, id) == 1 then
    redis.call('XADD', dead, '*', unpack(ARGV, i + 2, i + 1 + n))
    moved[#moved + 1] = '1'
  else
    moved[#moved + 1] = '0'
  end
  i = i + 2 + n
end
return table.concat(moved)
