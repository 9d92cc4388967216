--[[
  Marks keys whose handler timed out or could not tell its outcome:
  IN_PROGRESS(token) → UNKNOWN (DESIGN.md §2). Fenced like commit: nothing is
  marked once the batch's lease record has lapsed, and another owner's key is
  left untouched.

  KEYS[1]  the batch's lease record
  ARGV[1]  owner token
  ARGV[2]  life of the UNKNOWN record in ms (the TTL a commit would give)
  ARGV[3]  record keys, NUL-joined

  The record becomes 'u' .. token .. '\n' .. fingerprint .. '\n' .. since (ms,
  Redis's clock). It stands on its own, apart from the lease record, so the
  lease record turning DONE (a commit of the batch's other keys) or lapsing
  never changes it: only resolve, forget or its TTL end it.

  Returns one character per key: '1' = marked (or marked already by this
  token: a retried call), '0' = refused.
]]
local keys = split(ARGV[3])
local mine = 'p' .. ARGV[1] .. '\n'
local marked = 'u' .. ARGV[1] .. '\n'
local live = redis.call('GET', KEYS[1]) == 'p'
local time = redis.call('TIME')
local since = tostring(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
local out = {}
for i = 1, #keys do
  local record = redis.call('GET', keys[i])
  if live and record and string.sub(record, 1, #mine) == mine then
    redis.call('SET', keys[i], marked .. string.sub(record, #mine + 1) .. '\n' .. since, 'PX', ARGV[2])
    out[i] = '1'
  elseif record and string.sub(record, 1, #marked) == marked then
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
