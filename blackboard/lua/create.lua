--[[ create.lua: create one board at version 0, atomically; refuse an id in use.

KEYS[1] meta  KEYS[2] state  KEYS[3] snaps  KEYS[4] snapidx  KEYS[5] decl  KEYS[6] khash
        (all under the board's hash tag; see commit.lua for their shapes)

ARGV[1] declaration digest
ARGV[2] declaration JSON (JSON Schema per key + ownership map)
ARGV[3] snapshot of version 0: JSON object of the initial values
ARGV[4] N: number of initial keys
ARGV[5..] N triples: key, JSON value, hash of the value

Returns 1 if created, 0 if the board already exists (nothing written).
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[4])
local bytes, tokens = 0, 0
for i = 0, n - 1 do
  local value = ARGV[6 + 3 * i]
  redis.call('HSET', KEYS[2], ARGV[5 + 3 * i], value)
  redis.call('HSET', KEYS[6], ARGV[5 + 3 * i], ARGV[7 + 3 * i])
  bytes = bytes + #value
  tokens = tokens + math.floor((#value + 3) / 4)
end
redis.call('HSET', KEYS[1], 'version', 0, 'compliant', 0, 'status', 'active',
  'decl', ARGV[1], 'bytes', bytes, 'tokens', tokens, 'since_snap', 0,
  'created', now, 'updated', now)
redis.call('HSET', KEYS[3], 0, ARGV[3])
redis.call('ZADD', KEYS[4], 0, 0)
redis.call('SET', KEYS[5], ARGV[2])
return 1
