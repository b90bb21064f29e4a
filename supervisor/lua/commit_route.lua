--[[ commit_route.lua: commit.lua then route.lua in one atomic call, for a proposal whose
routing does not depend on what the commit changed (a handoff at most); or route.lua
alone (no commit). Either can read the next agents' context in the same step.

Not loaded on its own: the supervisor wraps commit.lua and route.lua as the local
functions commit(KEYS, ARGV) and route(KEYS, ARGV) and appends this driver
(supervisor/routing.py, RouteStep).

All KEYS share the board's hash tag.
KEYS: commit.lua's KEYS (NK of them), then route.lua's (with a commit, only its
KEYS[2..7]: the other three are commit.lua's too), then (if C > 0) the board's state hash.
ARGV: commit.lua's ARGV (NA of them: the script passes KEYS and ARGV to it as they are,
which copies nothing), then route.lua's, then C board keys to read for the next agents'
context, then NK, NA and C. With a commit, route.lua's ARGV come without their first two
(routing id, version) and last two (compliant flag, outcome): filled in here from the
commit's proposal id and result, as is each activation record's "base":-1 placeholder.
Returns {'commit', commit reply} if the commit did not happen (nothing routed), else
{'both', commit reply or {}, route reply[, {version, values of the C keys, loops}]}:
the context read in the same atomic step (when C > 0 and the routing went through).
]]
local n = #ARGV
local NK, NA, NC = tonumber(ARGV[n - 2]), tonumber(ARGV[n - 1]), tonumber(ARGV[n])
local last = n - 3 - NC  -- route.lua's last argument
local rk, c = KEYS, {}
local v = ''
if NK > 0 then
  rk = {KEYS[1], KEYS[NK + 1], KEYS[NK + 2], KEYS[NK + 3], KEYS[NK + 4], KEYS[NK + 5],
    KEYS[NK + 6], KEYS[9], KEYS[8]}  -- meta, results and khash: commit.lua's 1, 9 and 8
  c = commit(KEYS, ARGV)
  if c[1] ~= 'ok' then return {'commit', c} end
  v = c[2]  -- the new version, as text
end
-- route.lua's ARGV as a table of its own (it counts from its end)
local ra = {}
if last - NA >= 4000 then  -- more than unpack can return (the C stack's limit): a loop
  local first = 0
  if NK > 0 then ra, first = {ARGV[3], v}, 2 end
  for i = NA + 1, last do ra[first + i - NA] = ARGV[i] end
elseif NK > 0 then  -- unpack copies in C, several times faster than a loop here
  ra = {ARGV[3], v, unpack(ARGV, NA + 1, last)}
else
  ra = {unpack(ARGV, NA + 1, last)}
end
if NK > 0 then
  local changed = {}
  for i = 4, #c do changed[#changed + 1] = '"' .. c[i] .. '"' end
  ra[#ra + 1] = (#changed > 0) and '1' or '0'
  ra[#ra + 1] = '{"status":"committed","version":' .. v .. ',"keys":[' ..
    table.concat(changed, ',') .. '],"audit":"","reason":"","message":""}'
  -- route.lua's ARGV layout (its header): the count of handoff pairs at PAIRS, the
  -- pairs, the count of activations, then one ACTIVATION-long group per activation
  -- whose RECORD-th item (counting from 0) is the activation record's JSON
  local PAIRS, ACTIVATION, RECORD = 11, 5, 3
  local count_at = PAIRS + tonumber(ra[PAIRS]) + 1
  local first = count_at + 1
  for i = 0, tonumber(ra[count_at]) - 1 do
    local record = first + ACTIVATION * i + RECORD
    ra[record] = (string.gsub(ra[record], '"base":%-1,', '"base":' .. v .. ',', 1))
  end
end
local r = route(rk, ra)
if NC == 0 or r[1] ~= 'ok' then return {'both', c, r} end
return {'both', c, r, {redis.call('HGET', rk[1], 'version'),
  redis.call('HMGET', KEYS[#KEYS], unpack(ARGV, n - 2 - NC, n - 3)),
  redis.call('HGETALL', rk[2])}}
