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

  First the identity: a record that is not the one the store accepted means
  the data under the prefix is not the data the store has been using. Gone
  (a restart without persistence, a FLUSHALL): every key settled before is
  gone with it, and a claim now would take a key whose handler already ran.
  So no operation of the call runs; the record becomes a reset marker (the
  same record with "state":"reset" and the time, so every engine on the
  prefix fails closed, also one that starts later) and the call answers the
  error `IDEM_STORE_RESET <the record found or written>`. A reset marker, or
  another record (an acknowledged reset the store has not adopted yet),
  answers the same error.

  Then one reply per operation, in order. An operation that raises an
  error (a record key holding another type, a write refused at maxmemory)
  answers with that error alone: the operations of other shards in the same
  call still run, and only its caller retries. Its writes made before the
  error stay, as they would in a call of its own: every operation is safe to
  repeat under the same token.
]]
local identityKey, expected = ARGV[1], ARGV[2]
if identityKey ~= '' then
  local found = redis.call('GET', identityKey)
  if found ~= expected then
    if not found then
      local now = redis.call('TIME')
      local since = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
      found = string.gsub(expected, '"state":"ok"}$', '"state":"reset","since":' .. since .. '}')
      redis.call('SET', identityKey, found, 'NX')
    end
    return redis.error_reply('IDEM_STORE_RESET ' .. found)
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
