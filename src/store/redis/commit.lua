--[[
  Commits a batch: IN_PROGRESS(token) → DONE for the TTL (DESIGN.md §2).
  Fenced: a record that is not IN_PROGRESS under this token (its lease lapsed,
  another owner holds or finished it) is left untouched and refused.

  KEYS[1]  the batch's first record key (routing only)
  ARGV[1]  owner token
  ARGV[2]  TTL of the DONE record in ms (PX)
  ARGV[3]  record keys, NUL-joined
  ARGV[4]  results to keep as JSON ('' for none), NUL-joined, one per key

  Returns one character per key: '1' = committed (or already committed by
  this token: a retried call whose first reply was lost), '0' = refused.
]]
local token = ARGV[1]
local ttl = ARGV[2]
local keys = split(ARGV[3])
local results = split(ARGV[4])
local mine = 'p' .. token .. '\n'
local done = 'd' .. token .. '\n'
local out = {}
for i, key in ipairs(keys) do
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
