--[[
  Opens the version scripts (redis-versions.ts prepends it). Versions are
  sortable texts (version-order.ts) compared byte by byte: Lua's `<` on
  strings follows the server's collation locale, which need not be bytewise.
  Also reads the server's clock, which leases are kept on.
]]
local function newer(a, b)
  if a == b then return false end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A record outlives its claim by the TTL a commit will give it, and is never shortened here.
local function outlive(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
