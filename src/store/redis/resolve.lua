--[[
  Resolves UNKNOWN keys, a reconcile hook's or an operator's answer: → DONE
  (kept for the TTL, with a result when given) or → absent, so the next
  delivery runs the handler. Any other state is left as it is.

  KEYS[1]  a key of the keys' hash slot (routing only, on a cluster)
  ARGV[1]  TTL of a DONE record in ms
  ARGV[2]  record keys, NUL-joined
  ARGV[3]  one character per key: '1' = done, '0' = not done
  ARGV[4]  results as JSON ('' for none), NUL-joined, one per key
  ARGV[5]  the token the records were marked under ('u' .. token .. '\n'), or
           '' for any: an answer about one episode of a key never resolves a
           later one

  Returns one character per key: '1' = resolved, '0' = not UNKNOWN (under
  that token).
]]
local keys = split(ARGV[2])
local results = split(ARGV[4])
local marked = ARGV[5] == '' and 'u' or 'u' .. ARGV[5] .. '\n'
local out = {}
for i = 1, #keys do
  local record = redis.call('GET', keys[i])
  if record and string.sub(record, 1, #marked) == marked then
    if string.sub(ARGV[3], i, i) == '1' then
      -- 'u' token '\n' fingerprint '\n' since → 'd' token '\n' fingerprint '\n' result
      local fields = string.sub(record, 2, string.find(record, '\n[^\n]*$') - 1)
      redis.call('SET', keys[i], 'd' .. fields .. '\n' .. results[i], 'PX', ARGV[1])
    else
      redis.call('DEL', keys[i])
    end
    out[i] = '1'
  else
    out[i] = '0'
  end
end
return table.concat(out)
