--[[
  Prepended to every script that checks the store's identity record
  (store-identity.ts): batch.lua for the strict store, heartbeat.lua and
  group-commit.lua for owned mode, so a loss of data is met the same way
  whichever mode meets it first.

  checkIdentity(identityKey, expected) answers nil when the record is the one
  the caller accepted (`expected`, an ok record). Otherwise the data under
  the prefix is not the data the caller has been using. Gone (a restart
  without persistence, a FLUSHALL): every key settled before is gone with it,
  so the record becomes a reset marker (the same record with "state":"reset"
  and the time, so every engine on the prefix fails closed, also one that
  starts later) and the answer is the error reply
  `IDEM_STORE_RESET <the record found or written>`, which the caller returns
  before it writes anything. A reset marker, or another record (an
  acknowledged reset the caller has not adopted yet), answers the same error.
]]
local function checkIdentity(identityKey, expected)
  local found = redis.call('GET', identityKey)
  if found == expected then
    return nil
  end
  if not found then
    local now = redis.call('TIME')
    local since = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
    found = string.gsub(expected, '"state":"ok"}$', '"state":"reset","since":' .. since .. '}')
    redis.call('SET', identityKey, found, 'NX')
  end
  return redis.error_reply('IDEM_STORE_RESET ' .. found)
end
