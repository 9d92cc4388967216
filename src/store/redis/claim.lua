--[[
  Claims a batch of keys for one owner token (DESIGN.md §2: absent → IN_PROGRESS).

  KEYS[i]    the record key of message i (one hash slot per call on a cluster)
  ARGV[1]    owner token of the batch
  ARGV[2]    lease in ms, on Redis's clock (PX)
  ARGV[2+i]  fingerprint of message i as JSON, or '' for none

  Returns, per key: 0 = claimed for this token, 3 = the key appeared earlier in
  this call (a REPEAT, decided after the first copy settles), or the stored
  record (a string starting 'p' = IN_PROGRESS, 'd' = DONE) for the caller to read.

  Records: IN_PROGRESS = 'p' .. token .. '\n' .. fingerprint
           DONE        = 'd' .. token .. '\n' .. fingerprint .. '\n' .. result
  A record already IN_PROGRESS under this same token answers 0: it is the
  claim of an earlier attempt of this very call whose reply was lost (timeout,
  reset), so the retry must own it, never read it as someone else's message.
]]
local token = ARGV[1]
local lease = ARGV[2]
local mine = 'p' .. token .. '\n'
local out = {}
local seen = {}
for i, key in ipairs(KEYS) do
  if seen[key] then
    out[i] = 3
  else
    seen[key] = true
    local record = redis.call('GET', key)
    if not record then
      redis.call('SET', key, mine .. ARGV[i + 2], 'PX', lease)
      out[i] = 0
    elseif string.sub(record, 1, #mine) == mine then
      redis.call('PEXPIRE', key, lease)
      out[i] = 0
    else
      out[i] = record
    end
  end
end
return out
