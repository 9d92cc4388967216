--[[
  Claims a batch of keys for one owner token (DESIGN.md §2: absent → IN_PROGRESS).

  KEYS[1]  the batch's first record key (routing only)
  ARGV[1]  owner token of the batch
  ARGV[2]  lease in ms, on Redis's clock (PX)
  ARGV[3]  record keys, NUL-joined
  ARGV[4]  fingerprints as JSON ('' for none), NUL-joined, one per key

  Returns { codes, record, ttl, record, ttl... }: codes has one character per
  key: '0' = claimed for this token, '3' = the key appeared earlier in this
  call (a REPEAT, decided after the first copy settles), 'r' = taken; the
  stored record ('p…' = IN_PROGRESS, 'd…' = DONE) and its PTTL follow in the
  reply, in order, for the caller to read (the PTTL lets its LRU forget a
  DONE key when Redis does).

  Records: IN_PROGRESS = 'p' .. token .. '\n' .. fingerprint
           DONE        = 'd' .. token .. '\n' .. fingerprint .. '\n' .. result
  A record already IN_PROGRESS under this same token answers '0': it is the
  claim of an earlier attempt of this very call whose reply was lost (timeout,
  reset), so the retry must own it, never read it as someone else's message.
]]
local token = ARGV[1]
local lease = ARGV[2]
local keys = split(ARGV[3])
local fingerprints = split(ARGV[4])
local mine = 'p' .. token .. '\n'
local codes = {}
local out = { '' }
local seen = {}
for i, key in ipairs(keys) do
  if seen[key] then
    codes[i] = '3'
  else
    seen[key] = true
    -- SET NX first: a fresh key (the common case) costs one command, not two.
    local record = nil
    if not redis.call('SET', key, mine .. fingerprints[i], 'NX', 'PX', lease) then
      record = redis.call('GET', key)
    end
    if not record then
      codes[i] = '0'
    elseif string.sub(record, 1, #mine) == mine then
      redis.call('PEXPIRE', key, lease)
      codes[i] = '0'
    else
      codes[i] = 'r'
      out[#out + 1] = record
      out[#out + 1] = redis.call('PTTL', key)
    end
  end
end
out[1] = table.concat(codes)
return out
