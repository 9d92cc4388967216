--[[
  Marks keys whose handler timed out or could not tell its outcome:
  IN_PROGRESS(token) → UNKNOWN (DESIGN.md §2). Fenced by the key record: a
  key another owner took over is left untouched. Unlike a commit, a key whose
  lease lapsed with nobody taking it over is still marked (its record still
  names this token): leaving it claimable would let a redelivery repeat an
  effect that may have happened.

  KEYS[1]  the batch's lease record (routing only, on a cluster)
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
local time = redis.call('TIME')
local since = tostring(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
local out = {}
for i = 1, #keys do
  local record = redis.call('GET', keys[i])
  if record and string.sub(record, 1, #mine) == mine then
    redis.call('SET', keys[i], marked .. string.sub(record, #mine + 1) .. '\n' .. since, 'PX', ARGV[2])
    out[i] = '1'
  elseif record and string.sub(record, 1, #marked) == marked then
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
