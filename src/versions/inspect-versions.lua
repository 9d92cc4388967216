--[[
  Reads each key's record for an operator; nothing is written.

  ARGV[1]  prefix of token records
  ARGV[2]  record keys, NUL-joined

  Returns per key: applied, state, claimed, claim token, lease left (ms), pttl
  ('' for a field not set, 0 lease for no live claim; pttl -2 for an absent record).
]]
local out = {}
for _, key in ipairs(split(ARGV[2])) do
  local f, live = current(ARGV[1], fields(redis.call('GET', key)))
  out[#out + 1] = f[1]
  out[#out + 1] = f[2]
  out[#out + 1] = f[5]
  out[#out + 1] = f[4]
  out[#out + 1] = live and redis.call('PTTL', ARGV[1] .. f[4]) or 0
  out[#out + 1] = redis.call('PTTL', key)
end
return out
