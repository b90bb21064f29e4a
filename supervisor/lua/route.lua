--[[ route.lua: the supervisor's control step after one submission, atomically, once.

Counts what must be counted (tokens, cost, rewrites, handoffs with the board's content
fingerprint, activations), trips the circuit breaker or a budget, and writes the new
activations to the board's outbox, from which they are dispatched to agent queues.
Runs at most once per routing id: a redelivered submission gets the outbox back.

All KEYS share the board's hash tag.
KEYS[1] meta   KEYS[2] loops   KEYS[3] routed   KEYS[4] acts   KEYS[5] open
KEYS[6] outbox KEYS[7] incidents  KEYS[8] results  KEYS[9] khash (per-key content hashes)

ARGV[1]  routing id (the submission's proposal id)
ARGV[2]  now (ms)                ARGV[3]  unused (the fingerprint is built here from khash)
ARGV[4]  loop threshold          ARGV[5]  max activations
ARGV[6]  max rewrites            ARGV[7]  tokens used by the submission
ARGV[8]  cost of the submission  ARGV[9]  max tokens (0 = none)   ARGV[10] max cost (0 = none)
ARGV[11] agent whose rewrite counter resets ('' = none)
ARGV[12] agent whose rewrite counter grows ('' = none)
ARGV[13] status to set if nothing trips ('' = keep)
ARGV[14] activation id to close ('' = none): no longer open, nor waiting in the outbox
ARGV[15] board version (for incident records; also the new compliant version if
         ARGV[17 + P + 5A] is '1')
ARGV[16] P: number of handoff pairs to count ('from>to' strings follow)
then P pairs, then A: number of activations, then A quintuples:
  activation id, agent, deadline (ms), activation record JSON, queue entry JSON
then an escalation 'kind|detail' to trip if the board is not already stopped ('' = none),
then '1' if ARGV[15] is now the compliant version, else '0',
then the submission's outcome JSON to record under the routing id ('' = none): recorded
with the routing, so a redelivered submission whose routing ran is never re-decided,
then the closed activation's final record (what its agent reported; '' = keep).

Returns
  {'ok', status, aid1, agent1, entry1, ...}     this step's activations to dispatch (if the
                                                board is active); never another step's,
                                                which that step dispatches itself
  {'again', status, aid1, agent1, entry1, ...}  already routed: the undispatched outbox
  {'tripped', kind, detail}                     board escalated, incident recorded
]]
local meta, loops, routed, acts, open, outbox, incidents =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

local function pending_outbox(tag)
  local reply = {tag, redis.call('HGET', meta, 'status')}
  local flat = redis.call('HGETALL', outbox)
  for i = 1, #flat, 2 do
    local agent = string.match(flat[i + 1], '"agent":"([^"]+)"')
    reply[#reply + 1] = flat[i]
    reply[#reply + 1] = agent
    reply[#reply + 1] = flat[i + 1]
  end
  return reply
end

if redis.call('HSETNX', routed, ARGV[1], ARGV[2]) == 0 then
  return pending_outbox('again')
end

local now, version = ARGV[2], ARGV[15]
local escalate, compliant = ARGV[#ARGV - 3], ARGV[#ARGV - 2]
-- Everything this step reads of the board's meta, in one call (only this step writes
-- these fields while it runs).
local m = redis.call('HMGET', meta, 'status', 'compliant', 'activations', 'tokens_used',
  'cost_used')
local current = m[1]
-- On a stopped board (a late report from a parallel branch, say) things are counted
-- but nothing trips again and nothing is activated.
local stopped = current == 'escalated' or current == 'done' or current == 'failed' 
local outcome, report = ARGV[#ARGV - 1], ARGV[#ARGV]
if outcome ~= '' then redis.call('HSET', KEYS[8], ARGV[1], outcome) end
if ARGV[14] ~= '' then
  redis.call('ZREM', open, ARGV[14])
  redis.call('HDEL', outbox, ARGV[14])
  if report ~= '' then redis.call('HSET', acts, ARGV[14], report) end
end

local function trip(kind, detail)
  redis.call('HSET', meta, 'status', 'escalated', 'escalated_reason', kind .. ': ' .. detail,
    'updated', now)
  redis.call('XADD', incidents, '*', 'kind', kind, 'detail', detail, 'version', version,
    'ts', now)
  return {'tripped', kind, detail}
end

-- an escalation asked for (a timeout, a deadline): once, and only if nothing stopped
-- the board already, so two causes racing record one incident
if escalate ~= '' then
  if stopped then return {'ok', current} end
  local kind, detail = string.match(escalate, '^([^|]*)|(.*)$')
  return trip(kind, detail)
end

-- budgets summed from activation reports (nothing written when nothing was used)
local tokens, cost = tonumber(m[4] or '0'), tonumber(m[5] or '0')
if tonumber(ARGV[7]) ~= 0 then
  tokens = redis.call('HINCRBY', meta, 'tokens_used', tonumber(ARGV[7]))
end
if tonumber(ARGV[8]) ~= 0 then
  cost = tonumber(redis.call('HINCRBYFLOAT', meta, 'cost_used', ARGV[8]))
end
if not stopped and tonumber(ARGV[9]) > 0 and tokens > tonumber(ARGV[9]) then
  return trip('budget', 'tokens used ' .. tokens .. ' > max_tokens ' .. ARGV[9])
end
if not stopped and tonumber(ARGV[10]) > 0 and cost > tonumber(ARGV[10]) then
  return trip('budget', 'cost ' .. cost .. ' > max_cost ' .. ARGV[10])
end

-- rewrite loops
if ARGV[11] ~= '' then redis.call('HDEL', loops, 'rw:' .. ARGV[11]) end
if ARGV[12] ~= '' then
  local n = redis.call('HINCRBY', loops, 'rw:' .. ARGV[12], 1)
  if n > tonumber(ARGV[6]) and not stopped then
    return trip('rewrites', 'agent ' .. ARGV[12] .. ' was rejected ' .. n ..
      ' times in a row (max_rewrites ' .. ARGV[6] .. ')')
  end
end

-- handoff loops: the same pair repeated with no change to the board's content
local P = tonumber(ARGV[16])
local threshold = tonumber(ARGV[4])
local fp = ''
if P > 0 then  -- the board's content now, as sorted key=hash pairs: O(keys), not O(bytes)
  local flat = redis.call('HGETALL', KEYS[9])
  local pairs_ = {}
  for i = 1, #flat, 2 do pairs_[#pairs_ + 1] = flat[i] .. '=' .. flat[i + 1] end
  table.sort(pairs_)
  fp = table.concat(pairs_, ',')
end
for i = 1, P do
  local pair = ARGV[16 + i]
  local prev = redis.call('HGET', loops, pair)
  local count, versions = 1, version
  if prev then
    local pfp, pcount, pversions = string.match(prev, '^([^|]*)|(%d+)|(.*)$')
    if pfp == fp then
      count = tonumber(pcount) + 1
      versions = pversions .. ',' .. version
    end
  end
  redis.call('HSET', loops, pair, fp .. '|' .. count .. '|' .. versions)
  if count >= threshold and not stopped then
    return trip('loop', 'handoff ' .. pair .. ' repeated ' .. count ..
      ' times with no change to the board (versions ' .. versions .. ')')
  end
end

-- activations (none on a stopped board: nothing should act until an operator resumes it)
local base = 17 + P
local A = tonumber(ARGV[base])
if stopped then A = 0 end
if A > 0 then
  local used = tonumber(m[3] or '0')
  if used + A > tonumber(ARGV[5]) then
    return trip('budget', 'activation budget spent: ' .. used .. ' used, ' .. A ..
      ' more requested, max_activations ' .. ARGV[5])
  end
  redis.call('HINCRBY', meta, 'activations', A)
end
for i = 0, A - 1 do
  local o = base + 1 + 5 * i
  redis.call('HSET', acts, ARGV[o], ARGV[o + 3])
  redis.call('ZADD', open, ARGV[o + 2], ARGV[o])
  redis.call('HSET', outbox, ARGV[o], ARGV[o + 4])
end
if compliant == '1' and tonumber(version) > tonumber(m[2] or '0') then
  redis.call('HSET', meta, 'compliant', version)
end
if ARGV[13] ~= '' then
  redis.call('HSET', meta, 'status', ARGV[13], 'updated', now)
  current = ARGV[13]
end
local reply = {'ok', current}
for i = 0, A - 1 do
  local o = base + 1 + 5 * i
  reply[#reply + 1] = ARGV[o]
  reply[#reply + 1] = ARGV[o + 1]
  reply[#reply + 1] = ARGV[o + 4]
end
return reply
