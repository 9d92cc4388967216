--[[
  Opens the script redis-store.ts builds. A batch travels as one packed
  argument (record keys joined by NUL, which no record key contains) instead
  of one argument per key: encoding a thousand arguments costs the client
  more than the script costs the server. Each operation gets the lease record
  of its batch as KEYS[1]; on a cluster a call holds one operation and
  declares that key, so the call is routed to its slot, which every key of
  the batch shares through its hash tag.
]]
local function split(packed)
  local parts = {}
  local from = 1
  while true do
    local nul = string.find(packed, '\0', from, true)
    if not nul then
      parts[#parts + 1] = string.sub(packed, from)
      return parts
    end
    parts[#parts + 1] = string.sub(packed, from, nul - 1)
    from = nul + 1
  end
end
