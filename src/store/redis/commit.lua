--[[
  Commits a batch: IN_PROGRESS(token) → DONE for the TTL (DESIGN.md §2).
  Fenced: nothing is committed once the batch's lease record has lapsed (a
  claim may have taken its keys over), and a key another owner holds is
  left untouched and refused.

  KEYS[1]  the batch's lease record
  ARGV[1]  owner token
  ARGV[2]  TTL of the DONE record in ms (PX)
  ARGV[3]  'all': these are every key the token still holds, with no result
           to keep: the lease record turns DONE and answers for all of them
           (ARGV[4] is their count). 'each': each key gets a DONE record of
           its own (ARGV[4] record keys NUL-joined, ARGV[5] results as JSON,
           '' for none, NUL-joined).

  Returns one character per key: '1' = committed (or already committed by
  this token: a retried call whose first reply was lost), '0' = refused.
]]
local token = ARGV[1]
local ttl = ARGV[2]
if ARGV[3] == 'all' then
  local lease = redis.call('SET', KEYS[1], 'd', 'XX', 'PX', ttl, 'GET')
  return string.rep(lease and '1' or '0', tonumber(ARGV[4]))
end
local keys = split(ARGV[4])
if not redis.call('GET', KEYS[1]) then
  return string.rep('0', #keys)
end
local results = split(ARGV[5])
local mine = 'p' .. token .. '\n'
local done = 'd' .. token .. '\n'
local out = {}
for i = 1, #keys do
  local key = keys[i]
  local record = redis.call('GET', key)
  if record and string.sub(record, 1, #mine) == mine then
    redis.call('SET', key, done .. string.sub(record, #mine + 1) .. '\n' .. results[i], 'PX', ttl)
    out[i] = '1'
  elseif record and string.sub(record, 1, #done) == done then
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
