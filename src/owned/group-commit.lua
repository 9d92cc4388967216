--[[
  A group commit (DESIGN.md §5): the settled keys of one shard, for every
  partition they belong to, in one call. Each partition is fenced by its
  epoch on its own: a partition whose epoch moved on ('stale') or was set back
  by hand ('regressed') writes nothing; the others write their records and
  append their keys' hashes to their logs.

  KEYS[1]  the store's identity record
  ARGV[1]  the identity record this store accepted ('' to skip the check)
  ARGV[2]  TTL of the records and the logs' window, in ms
  ARGV[3]  epoch key prefix, ARGV[4] log key prefix (the partition number is appended)
  ARGV[5]  the number of partitions, then 8 per partition:
           partition, epoch, token, hashes (8 bytes per key), kinds (one
           character per key: 'd' DONE or 'u' UNKNOWN), and, NUL-joined (none
           of them holds a NUL: record keys never do, fingerprints and results
           are JSON), the record keys, the fingerprints, the results ('' for
           none; ignored for UNKNOWN). Packed, not one argument per key:
           encoding arguments costs the client more than the script costs
           Redis (split: split-keys.lua, prepended).

  Records: 'd' .. token .. '\n' .. fingerprint .. '\n' .. result, or
  'u' .. token .. '\n' .. fingerprint .. '\n' .. since, PX ttl: the layout of
  the strict store's records, so `idem keys` reads them alike. since is now on
  Redis's clock (ms), as markUnknown.lua writes it.

  Returns per partition: status ('ok', 'stale', 'regressed'), the log entry id
  ('' when refused), the epoch in the store. The error 'IDEM_STORE_RESET
  <found or written>' when the identity record changed (nothing written).
]]
-- checkIdentity: check-identity.lua, prepended (a record gone becomes the reset marker, as for the strict store).
if ARGV[1] ~= '' then
  local refused = checkIdentity(KEYS[1], ARGV[1])
  if refused then
    return refused
  end
end
local ttl = ARGV[2]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local since = tostring(now)
local minId = tostring(math.max(0, now - tonumber(ttl)))
local out = {}
local at = 6
for _ = 1, tonumber(ARGV[5]) do
  local partition, epoch, token, hashes, kinds = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local stored = tonumber(redis.call('GET', ARGV[3] .. partition) or '0')
  if stored == epoch then
    local keys, fingerprints, results = split(ARGV[at + 5]), split(ARGV[at + 6]), split(ARGV[at + 7])
    for k = 1, #keys do
      local kind = string.sub(kinds, k, k)
      local value = kind == 'u' and since or results[k]
      redis.call('SET', keys[k], kind .. token .. '\n' .. fingerprints[k] .. '\n' .. value, 'PX', ttl)
    end
    local id = redis.call('XADD', ARGV[4] .. partition, 'MINID', '~', minId, '*', 'h', hashes)
    redis.call('PEXPIRE', ARGV[4] .. partition, tonumber(ttl) * 2)
    out[#out + 1] = { 'ok', id, stored }
  else
    out[#out + 1] = { stored > epoch and 'stale' or 'regressed', '', stored }
  end
  at = at + 8
end
return out
