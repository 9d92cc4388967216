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
  ARGV[5]  the number of partitions, then per partition:
           partition, epoch, token, key count, hashes (8 bytes per key),
           then per key: record key, kind ('d' DONE or 'u' UNKNOWN), fingerprint,
           the result's JSON ('' for none; ignored for UNKNOWN)

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
  local partition, epoch, token, count, hashes = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2], tonumber(ARGV[at + 3]), ARGV[at + 4]
  at = at + 5
  local stored = tonumber(redis.call('GET', ARGV[3] .. partition) or '0')
  if stored == epoch then
    for k = 0, count - 1 do
      local base = at + 4 * k
      local kind = ARGV[base + 1]
      local value = kind == 'u' and since or ARGV[base + 3]
      redis.call('SET', ARGV[base], kind .. token .. '\n' .. ARGV[base + 2] .. '\n' .. value, 'PX', ttl)
    end
    local id = redis.call('XADD', ARGV[4] .. partition, 'MINID', '~', minId, '*', 'h', hashes)
    redis.call('PEXPIRE', ARGV[4] .. partition, tonumber(ttl) * 2)
    out[#out + 1] = { 'ok', id, stored }
  else
    out[#out + 1] = { stored > epoch and 'stale' or 'regressed', '', stored }
  end
  at = at + 4 * count
end
return out
