--[[
  Claims a batch of keys for one owner token (DESIGN.md §2: absent → IN_PROGRESS).

  KEYS[1]  the batch's lease record: prefix .. token (on a cluster, the call's key: it routes the call to the batch's slot)
  ARGV[1]  owner token of the batch
  ARGV[2]  lease in ms, on Redis's clock (PX)
  ARGV[3]  life of a key record in ms: lease + the TTL a commit gives it
  ARGV[4]  prefix of lease records (KEYS[1] is ARGV[4] .. ARGV[1])
  ARGV[5]  record keys, NUL-joined, no key twice (the caller answers repeats)
  ARGV[6]  fingerprints as JSON ('' for none), NUL-joined, one per key

  Returns { codes, record, ttl, record, ttl... }: codes has one character per
  key: '0' = claimed for this token, 'r' = taken; the stored record and its
  PTTL follow in the reply, in order ('p…' = IN_PROGRESS, 'd…' = DONE,
  'u…' = UNKNOWN; the
  PTTL lets the caller's LRU forget a DONE key when Redis does).

  A batch's lease lives in one record, not in each key: the key record names
  its owner token ('p' .. token .. '\n' .. fingerprint), and the owner's lease
  record says whether that owner is still working ('p', PX lease) or done
  ('d', PX ttl). So a commit of the whole batch is one write, not one per key.
  A key whose owner has no lease record left (lapsed: the owner died or froze)
  is free and taken over. A key committed on its own (a partial commit, or one
  with a result to keep) holds 'd' .. token .. '\n' .. fingerprint .. '\n' .. result.

  A key already IN_PROGRESS under this same token answers '0': it is the claim
  of an earlier attempt of this very call whose reply was lost (timeout,
  reset), so the retry must own it, never read it as someone else's message.
]]
local token = ARGV[1]
local lease = ARGV[2]
local life = ARGV[3]
local leasePrefix = ARGV[4]
local keys = split(ARGV[5])
local fingerprints = split(ARGV[6])
local mine = 'p' .. token .. '\n'
local codes = {}
local out = { '' }
local claimed = false
-- Lease state per owner token met in this call: 'p', 'd', or false (lapsed).
local leases = {}
local leaseTtls = {}
for i = 1, #keys do
  local key = keys[i]
  local value = mine .. fingerprints[i]
  -- One command for the common case, a fresh key: SET NX answers with the record it found, if any.
  local record = redis.call('SET', key, value, 'NX', 'PX', life, 'GET')
  if not record or string.sub(record, 1, #mine) == mine then
    codes[i] = '0'
    claimed = true
  elseif string.byte(record) == 100 or string.byte(record) == 117 then -- 'd': committed on its own; 'u': UNKNOWN (markUnknown.lua)
    codes[i] = 'r'
    out[#out + 1] = record
    out[#out + 1] = redis.call('PTTL', key)
  else
    local owner = string.sub(record, 2, string.find(record, '\n', 2, true) - 1)
    local state = leases[owner]
    if state == nil then
      state = redis.call('GET', leasePrefix .. owner)
      leases[owner] = state
    end
    if state == 'd' then
      codes[i] = 'r'
      out[#out + 1] = 'd' .. string.sub(record, 2) .. '\n'
      local ttl = leaseTtls[owner]
      if ttl == nil then
        ttl = redis.call('PTTL', leasePrefix .. owner)
        leaseTtls[owner] = ttl
      end
      out[#out + 1] = ttl
    elseif state == 'p' then
      codes[i] = 'r'
      out[#out + 1] = record
      out[#out + 1] = 0
    else
      redis.call('SET', key, value, 'PX', life)
      codes[i] = '0'
      claimed = true
    end
  end
end
if claimed then
  redis.call('SET', KEYS[1], 'p', 'PX', lease)
end
out[1] = table.concat(codes)
return out
