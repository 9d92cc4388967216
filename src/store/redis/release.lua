--[[
  Releases a batch: IN_PROGRESS(token) → absent, so the next delivery runs the
  handler again. Fenced like commit: another owner's record is never deleted.

  KEYS[1]  the batch's lease record (routing only, on a cluster)
  ARGV[1]  owner token
  ARGV[2]  record keys, NUL-joined

  Returns one character per key: '1' = released (or already absent, the state
  a release wants), '0' = refused.
]]
local mine = 'p' .. ARGV[1] .. '\n'
local out = {}
for i, key in ipairs(split(ARGV[2])) do
  local record = redis.call('GET', key)
  if not record then
    out[i] = '1'
  elseif string.sub(record, 1, #mine) == mine then
    redis.call('DEL', key)
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
