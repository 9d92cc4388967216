--[[
  Reads the live record of each key, for an operator (no lease is taken).

  KEYS[1]  a key of the keys' hash slot (routing only, on a cluster)
  ARGV[1]  prefix of lease records (a lease record is ARGV[1] .. token)
  ARGV[2]  record keys, NUL-joined

  Returns { states, record, ttl, record, ttl... }: states has one character
  per key: '-' = absent, 'p' = IN_PROGRESS, 'd' = DONE, 'u' = UNKNOWN; the
  record and its remaining ms follow for each of those, in order. A key record written
  by a claim names its owner, and the owner's lease record says the rest
  (claim.lua): 'p' with a lease = in progress until the lease ends, 'd' = the
  whole batch was committed (the record is answered as a DONE record, with
  the lease record's TTL), none = the owner's lease lapsed: absent.
]]
local leasePrefix = ARGV[1]
local states = {}
local out = { '' }
for i, key in ipairs(split(ARGV[2])) do
  local record = redis.call('GET', key)
  local state = '-'
  local ttl = 0
  if record and (string.byte(record) == 100 or string.byte(record) == 117) then -- 'd': committed on its own; 'u': UNKNOWN
    state = string.sub(record, 1, 1)
    ttl = redis.call('PTTL', key)
  elseif record then
    local owner = leasePrefix .. string.sub(record, 2, string.find(record, '\n', 2, true) - 1)
    local lease = redis.call('GET', owner)
    if lease == 'd' then
      state = 'd'
      record = 'd' .. string.sub(record, 2) .. '\n'
      ttl = redis.call('PTTL', owner)
    elseif lease == 'p' then
      state = 'p'
      ttl = redis.call('PTTL', owner)
    end
  end
  states[i] = state
  if state ~= '-' then
    out[#out + 1] = record
    out[#out + 1] = ttl
  end
end
out[1] = table.concat(states)
return out
