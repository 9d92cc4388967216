--[[
  Reads each key's record for an operator; nothing is written.

  KEYS     record keys

  Returns { now, then per key: applied, state, claimed, token, leaseEnd, pttl }
  ('' for a missing field; pttl -2 for an absent record).
]]
local out = { nowMs() }
for i = 1, #KEYS do
  local r = redis.call('HMGET', KEYS[i], 'a', 's', 'c', 't', 'l')
  for j = 1, 5 do out[#out + 1] = r[j] or '' end
  out[#out + 1] = redis.call('PTTL', KEYS[i])
end
return out
