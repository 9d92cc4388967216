--[[
  Opens the version scripts (redis-versions.ts prepends it).

  A key's record is one string of six fields joined by NUL (no version,
  state or token holds one):

    applied version, its state, token of its commit,
    token of the claim on it, version claimed, state it would leave

  ('' for a field not set). The lease of a claim is not in the record: it is
  the claim's token record (prefix .. token), 'p' while the owner works (PX
  lease), 'd' once it committed every key it still holds (PX ttl), absent
  when the lease lapsed. So a batch commits with one write, as in the strict
  store, and a record whose claim token is 'd' has its claimed version
  applied. Versions are sortable texts (version-order.ts) compared byte by
  byte: Lua's `<` on strings follows the server's collation locale.
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

local function fields(record)
  if not record then return { '', '', '', '', '', '' } end
  local out = {}
  local from = 1
  for i = 1, 5 do
    local nul = string.find(record, '\0', from, true)
    out[i] = string.sub(record, from, nul - 1)
    from = nul + 1
  end
  out[6] = string.sub(record, from)
  return out
end

local function record(f)
  return table.concat(f, '\0', 1, 6)
end

-- The state of each claim token met in one call: 'p', 'd', or false (lapsed).
local tokens = {}
local function tokenState(prefix, token)
  local state = tokens[token]
  if state == nil then
    state = redis.call('GET', prefix .. token)
    tokens[token] = state
  end
  return state
end

--[[
  The record as it stands: a claim whose token committed everything is
  applied (its version and state moved into the applied fields, the claim
  fields cleared); a claim whose lease lapsed is dropped. Returns the fields
  and the state of the claim still on it ('p', or false for none).
]]
local function current(prefix, f)
  if f[4] == '' then return f, false end
  local state = tokenState(prefix, f[4])
  if state == 'p' then return f, 'p' end
  if state == 'd' then return { f[5], f[6], f[4], '', '', '' }, false end
  return { f[1], f[2], f[3], '', '', '' }, false
end
