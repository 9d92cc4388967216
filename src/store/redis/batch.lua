--[[
  Appended after the operations (claim, commit, release, renew, inspect,
  forget, markUnknown, resolve: each a .lua file of its own, wrapped by redis-store.ts as a local
  function taking KEYS and ARGV, in that order, so forget may call inspect).
  Runs several operations in one call, in the order given, so the shards of
  one thread send the calls of one turn as one round trip: per call, the
  client's cost (encoding, reply, promise) is most of the cost.

  ARGV[1]  number of operations; then, for each: its name, its lease record
           key (its KEYS[1]), its argument count, its arguments

  Returns one reply per operation, in order. An operation that raises an
  error (a record key holding another type, a write refused at maxmemory)
  answers with that error alone: the operations of other shards in the same
  call still run, and only its caller retries. Its writes made before the
  error stay, as they would in a call of its own: every operation is safe to
  repeat under the same token.
]]
local operations = { claim = claim, commit = commit, release = release, renew = renew, inspect = inspect, forget = forget, markUnknown = markUnknown, resolve = resolve }
local replies = {}
local at = 2
for c = 1, tonumber(ARGV[1]) do
  local count = tonumber(ARGV[at + 2])
  local ok, reply = pcall(operations[ARGV[at]], { ARGV[at + 1] }, { unpack(ARGV, at + 3, at + 2 + count) })
  if ok then
    replies[c] = reply
  else
    replies[c] = { err = type(reply) == 'table' and reply.err or tostring(reply) }
  end
  at = at + 3 + count
end
return replies
