--[[ audit.lua: what the audits decided about one version, recorded atomically whichever
replica ran them; the compliant version and every audit rollback's target follow from it.

An audit run that passes records its version ('pass'). One that fails claims a rollback
('claim'), decided once per rollback proposal id: its target is the newest version below
the failing one whose audits passed (or the compliant version, if lower than the failing
one and higher), so no version that passed is ever skipped. From the claim on, every
version above the target and below the rollback's commit is dropped: its content is
gone, and an audit of it that passes later records nothing (it is never compliant).

KEYS[1] meta (field compliant)
KEYS[2] passed     zset  versions whose audits passed, content live (score = version)
KEYS[3] claims     hash  rollback proposal id -> 'target|audit|message'
KEYS[4] proposals  hash  proposal id -> version it committed as (a claim's rollback
                         commit, once it exists)

ARGV[1] 'pass', 'claim' or 'restore' (a rollback to a target chosen by its caller, a
        flag's or an operator's: claimed the same way, so what it drops never becomes
        compliant again; the compliant version is lowered to the target, never raised)
ARGV[2] the version the audits ran on (restore: the target)
ARGV[3] (claim, restore) the rollback's proposal id
ARGV[4] (claim, restore) why, 'audit|message' ('flag|message', 'rollback|message')

Returns
  {'passed'}                       pass recorded; compliant is now at least this version
  {'claimed', target, decided}     claim: the rollback's target and 'audit|message' (the
                                   first decision's, for a repeated claim)
  {'dropped', proposal id, target} the version was dropped by the rollback claimed under
                                   that proposal id (to that target): nothing recorded
]]
local meta, passed, claims, proposals = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, v = ARGV[1], tonumber(ARGV[2])

if mode ~= 'pass' then
  local prev = redis.call('HGET', claims, ARGV[3])
  if prev then
    local target, decided = string.match(prev, '^(%d+)|(.*)$')
    return {'claimed', target, decided}
  end
end
if mode == 'restore' then
  redis.call('HSET', claims, ARGV[3], v .. '|' .. ARGV[4])
  redis.call('ZREMRANGEBYSCORE', passed, '(' .. v, '+inf')
  -- never higher than it was: an operator may roll back to a version no audit passed
  if v < tonumber(redis.call('HGET', meta, 'compliant') or '0') then
    redis.call('HSET', meta, 'compliant', v)
  end
  return {'claimed', tostring(v), ARGV[4]}
end

-- dropped by a rollback claimed already: above its target and below its commit (which,
-- until it exists, comes after every version there is now)
local flat = redis.call('HGETALL', claims)
for i = 1, #flat, 2 do
  local target = tonumber(string.match(flat[i + 1], '^(%d+)'))
  if v > target then
    local at = redis.call('HGET', proposals, flat[i])
    if not at or v < tonumber(at) then return {'dropped', flat[i], tostring(target)} end
  end
end

local compliant = tonumber(redis.call('HGET', meta, 'compliant') or '0')
if mode == 'pass' then
  redis.call('ZADD', passed, v, v)
  if v > compliant then redis.call('HSET', meta, 'compliant', v) end
  return {'passed'}
end

local below = redis.call('ZREVRANGEBYSCORE', passed, '(' .. v, '-inf', 'LIMIT', 0, 1)
local target = tonumber(below[1] or '0')
if compliant < v and compliant > target then target = compliant end
redis.call('HSET', claims, ARGV[3], target .. '|' .. ARGV[4])
redis.call('ZREMRANGEBYSCORE', passed, '(' .. target, '+inf')
redis.call('HSET', meta, 'compliant', target)
return {'claimed', tostring(target), ARGV[4]}
