--[[
  Appended after the operations (claim, commit, release, renew, inspect,
  forget, markUnknown, resolve: each a .lua file of its own, wrapped by redis-store.ts as a local
  function taking KEYS and ARGV, in that order, so forget may call inspect).
  Runs several operations in one call, in the order given, so the shards of
  one thread send the calls of one turn as one round trip: per call, the
  client's cost (encoding, reply, promise) is most of the cost.

  ARGV[1]  the store's identity record key (store-identity.ts), or '' for no
           check (a cluster call, whose slot need not hold the record: there
           the store checks it from a timer instead)
  ARGV[2]  the identity record the store accepted, an ok record
  ARGV[3]  number of operations; then, for each: its name, its lease record
           key (its KEYS[1]), its argument count, its arguments. Zero
           operations: the identity check alone (the store's timer)

  First the identity (check-identity.lua, prepended): a record that is not
  the one the store accepted means the data under the prefix is not the data
  the store has been using, and a claim now could take a key whose handler
  already ran. So no operation of the call runs; a record gone becomes a reset
  marker, and the call answers the error `IDEM_STORE_RESET <the record found
  or written>`.

  Then one reply per operation, in order. An operation that raises an
  error (a record key holding another type, a write refused at maxmemory)
  answers with that error alone: the operations of other shards in the same
  call still run, and only its caller retries. Its writes made before the
  error stay, as they would in a call of its own: every operation is safe to
  repeat under the same token.
]]
local identityKey, expected = ARGV[1], ARGV[2]
if identityKey ~= '' then
  local refused = checkIdentity(identityKey, expected)
  if refused then
    return refused
  end
end

local operations = { claim = claim, commit = commit, release = release, renew = renew, inspect = inspect, forget = forget, markUnknown = markUnknown, resolve = resolve }
local replies = {}
local at = 4
for c = 1, tonumber(ARGV[3]) do
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
