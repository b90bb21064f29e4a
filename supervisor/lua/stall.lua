--[[ stall.lua: a board an operator's command left with nothing to do waits for a person.

Atomically, so that it never overrides what an agent's routing decided meanwhile (a
commit that made the board done, an activation created): only if the board is still
active with no open activation and nothing in its outbox does it become
'awaiting_approval', with a 'stalled' incident saying why.

All KEYS share the board's hash tag.
KEYS[1] meta   KEYS[2] open (zset)   KEYS[3] outbox (hash)   KEYS[4] incidents (stream)

ARGV[1] now (ms)   ARGV[2] the incident's detail

Returns 1 if the board now waits for a person, 0 if it was not idle (nothing written).
]]
if redis.call('HGET', KEYS[1], 'status') ~= 'active'
    or redis.call('ZCARD', KEYS[2]) > 0 or redis.call('HLEN', KEYS[3]) > 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'awaiting_approval', 'updated', ARGV[1])
redis.call('XADD', KEYS[4], '*', 'kind', 'stalled', 'detail', ARGV[2],
  'version', redis.call('HGET', KEYS[1], 'version') or '0', 'ts', ARGV[1])
return 1
