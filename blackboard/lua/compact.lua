--[[ compact.lua: drop a board's history below a version, keeping a snapshot to read from.

KEYS[1] meta     KEYS[2] snaps     KEYS[3] snapidx     KEYS[4] log
        (all under the board's hash tag; see commit.lua for their shapes)

ARGV[1] below: the caller wants versions below this one gone, as far as possible
ARGV[2] '1': keep the board's compliant version (meta.compliant, the supervisor's audit
        rollback target) readable: below is lowered to it if it is older

S is the newest snapshot version <= below (version 0's snapshot is written by
create.lua, so one always exists). Log entries with version < S and snapshots < S are
dropped; meta.history_from = S. Every version >= S reads as before (read_at.lua rebuilds
it from a snapshot >= S plus patches > S). Nothing >= S is touched, so running it again
changes nothing.

Returns one of
  {'ok', S, log entries dropped, snapshots dropped}
  {'notfound'}
  {'range', current version}      below is not in 0..current
]]
local m = redis.call('HMGET', KEYS[1], 'version', 'history_from', 'compliant')
if not m[1] then return {'notfound'} end
local current = tonumber(m[1])
local below = tonumber(ARGV[1])
if below < 0 or below > current then return {'range', current} end
if ARGV[2] == '1' then below = math.min(below, tonumber(m[3] or 0)) end
local from = tonumber(m[2] or 0)
if below <= from then return {'ok', from, 0, 0} end  -- done before (its snapshots are gone)
local s = tonumber(redis.call('ZREVRANGEBYSCORE', KEYS[3], below, '-inf', 'LIMIT', 0, 1)[1])
if s == from then return {'ok', from, 0, 0} end
local entries = redis.call('XTRIM', KEYS[4], 'MINID', s .. '-0')
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. s)
for i = 1, #old, 1000 do  -- in slices: unpack() of a long list overflows Lua's stack
  redis.call('HDEL', KEYS[2], unpack(old, i, math.min(i + 999, #old)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. s)
redis.call('HSET', KEYS[1], 'history_from', s)
return {'ok', s, entries, #old}
