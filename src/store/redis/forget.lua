--[[
  Removes each key's record whatever its state, so the next delivery of the
  key runs its handler: an operator's decision. The owner's lease record stays
  (other keys of its batch share it); a key without a record reads as absent
  whatever its lease says.

  KEYS[1]  a key of the keys' hash slot (routing only, on a cluster)
  ARGV[1]  prefix of lease records
  ARGV[2]  record keys, NUL-joined

  Returns one character per key: '1' = a live record (IN_PROGRESS or DONE)
  was removed, '0' = the key was absent already.
]]
local states = inspect(KEYS, ARGV)[1]
local out = {}
for i, key in ipairs(split(ARGV[2])) do
  redis.call('DEL', key)
  out[i] = string.sub(states, i, i) == '-' and '0' or '1'
end
return table.concat(out)
