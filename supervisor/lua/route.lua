--[[ route.lua: the supervisor's control step after one submission, atomically, once.

Counts what must be counted (tokens, cost, rewrites, handoffs with the board's content
fingerprint, activations), trips the circuit breaker or a budget, and writes the new
activations to the board's outbox, from which they are dispatched to agent queues.
Runs at most once per routing id: a redelivered submission gets the outbox back.

All KEYS share the board's hash tag.
KEYS[1] meta   KEYS[2] loops   KEYS[3] routed   KEYS[4] acts   KEYS[5] open
KEYS[6] outbox KEYS[7] incidents  KEYS[8] results  KEYS[9] khash (per-key content hashes)

ARGV[1]  routing id (the submission's proposal id)
ARGV[2]  board version (for incident records and loop counting; also the new compliant
         version if the compliant flag below is '1'); 0 on a step with no commit: the
         board's own version is read
ARGV[3]  now (ms)
ARGV[4]  limits, space-separated: loop threshold, max activations, max rewrites, max
         tokens (0 = none), max cost (0 = none); the same in every call
ARGV[5]  tokens used by the submission       ARGV[6]  cost of the submission
ARGV[7]  agent whose rewrite counter resets ('' = none)
ARGV[8]  agent whose rewrite counter grows ('' = none)
ARGV[9]  status to set if nothing trips ('' = keep)
ARGV[10] activation id to close ('' = none): no longer open, nor waiting in the outbox
ARGV[11] P: number of handoff pairs to count ('from>to' strings follow)
then P pairs, then A: number of activations, then A quintuples:
  activation id, agent, deadline (ms), activation record JSON, queue entry JSON
then an escalation 'kind|detail' to trip if the board is not already stopped ('' = none),
then the closed activation's final record (what its agent reported; '' = keep),
then '1' if ARGV[2] is now the compliant version, else '0',
then the submission's outcome JSON to record under the routing id ('' = none): recorded
with the routing, so a redelivered submission whose routing ran is never re-decided.
(The routing id and version first, the flag and outcome last: with a commit, the
commit_route driver supplies those four from the commit's result.)

Returns
  {'ok', status, aid1, agent1, entry1, ...}     this step's activations to dispatch (if the
                                                board is active); never another step's,
                                                which that step dispatches itself, nor
                                                one the board already had
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

local id, version, now = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HSETNX', routed, id, now) == 0 then
  return pending_outbox('again')
end
-- a step with no commit (a rejection, a failure, a handoff with nothing written):
-- incidents and loop counts record the version the board is at, not 0
if version == '0' then version = redis.call('HGET', meta, 'version') or '0' end

local threshold, max_acts, max_rw, max_tokens, max_cost =
  string.match(ARGV[4], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
local reset_rw, rewrite, close = ARGV[7], ARGV[8], ARGV[10]
local escalate, report = ARGV[#ARGV - 3], ARGV[#ARGV - 2]
local compliant, outcome = ARGV[#ARGV - 1], ARGV[#ARGV]
local P = tonumber(ARGV[11])
local A = tonumber(ARGV[12 + P])
-- What this step reads of the board's meta, in one call (only this step writes these
-- fields while it runs); the activation count only when activating: a field the board
-- does not have yet costs a scan of the whole hash to find missing.
local m
if A > 0 then
  m = redis.call('HMGET', meta, 'status', 'compliant', 'activations')
else
  m = redis.call('HMGET', meta, 'status', 'compliant')
end
local current = m[1]
-- On a stopped board (a late report from a parallel branch, say) things are counted
-- but nothing trips again and nothing is activated.
local stopped = current == 'escalated' or current == 'done' or current == 'failed' 
if outcome ~= '' then redis.call('HSET', KEYS[8], id, outcome) end
if close ~= '' then
  redis.call('ZREM', open, close)
  redis.call('HDEL', outbox, close)
  if report ~= '' then redis.call('HSET', acts, close, report) end
end

-- cycle: for a loop, the handoffs that went round ('from>to@version ...'), recorded
-- with the incident
local function trip(kind, detail, cycle)
  redis.call('HSET', meta, 'status', 'escalated', 'escalated_reason', kind .. ': ' .. detail,
    'updated', now)
  if cycle then
    redis.call('XADD', incidents, '*', 'kind', kind, 'detail', detail, 'version', version,
      'cycle', cycle, 'ts', now)
  else
    redis.call('XADD', incidents, '*', 'kind', kind, 'detail', detail, 'version', version,
      'ts', now)
  end
  return {'tripped', kind, detail}
end

-- an escalation asked for (a timeout, a deadline): once, and only if nothing stopped
-- the board already, so two causes racing record one incident
if escalate ~= '' then
  if stopped then return {'ok', current} end
  local kind, detail = string.match(escalate, '^([^|]*)|(.*)$')
  return trip(kind, detail)
end

-- budgets summed from activation reports (nothing written when nothing was used; the
-- sum read only to check it against a budget)
local tokens, cost = 0, 0
if tonumber(ARGV[5]) ~= 0 then
  tokens = redis.call('HINCRBY', meta, 'tokens_used', tonumber(ARGV[5]))
elseif tonumber(max_tokens) > 0 then
  tokens = tonumber(redis.call('HGET', meta, 'tokens_used') or '0')
end
if tonumber(ARGV[6]) ~= 0 then
  cost = tonumber(redis.call('HINCRBYFLOAT', meta, 'cost_used', ARGV[6]))
elseif tonumber(max_cost) > 0 then
  cost = tonumber(redis.call('HGET', meta, 'cost_used') or '0')
end
if not stopped and tonumber(max_tokens) > 0 and tokens > tonumber(max_tokens) then
  return trip('budget', 'tokens used ' .. tokens .. ' > max_tokens ' .. max_tokens)
end
if not stopped and tonumber(max_cost) > 0 and cost > tonumber(max_cost) then
  return trip('budget', 'cost ' .. cost .. ' > max_cost ' .. max_cost)
end

-- rewrite loops
if reset_rw ~= '' then redis.call('HDEL', loops, 'rw:' .. reset_rw) end
if rewrite ~= '' then
  local n = redis.call('HINCRBY', loops, 'rw:' .. rewrite, 1)
  if n > tonumber(max_rw) and not stopped then
    return trip('rewrites', 'agent ' .. rewrite .. ' was rejected ' .. n ..
      ' times in a row (max_rewrites ' .. max_rw .. ')')
  end
end

-- handoff loops: a pair (from>to) that meets board content it met before, within the
-- board's recent handoffs: the same content again (no change), or content the board went
-- back to (a cycle of states, A->B->A->B with the board flipping). The window is the
-- loops hash's 'recent' field: the last 8 x threshold handoffs, each ' from>to=hash@version'
-- (a 12-hex-digit hash of the content's fingerprint), so a step costs O(window) and a
-- board keeps at most a few KB, and a cycle of up to 8 handoffs is seen at any threshold.
threshold = tonumber(threshold)
if P > 0 then
  -- the board's content now, from each key's content hash (16 hex digits): O(keys), not
  -- O(bytes). Two 24-bit polynomial hashes over the sorted keys' names and hashes (exact
  -- in Lua's doubles; redis.sha1hex is not in every backend's EVAL): 12 hex digits.
  local flat = redis.call('HGETALL', KEYS[9])
  local names, hashes = {}, {}
  for i = 1, #flat, 2 do
    names[#names + 1] = flat[i]
    hashes[flat[i]] = flat[i + 1]
  end
  table.sort(names)
  local h1, h2 = 0, 0
  for _, name in ipairs(names) do
    local v = hashes[name]
    local hi, lo = tonumber(string.sub(v, 1, 8), 16), tonumber(string.sub(v, 9, 16), 16)
    local text = name .. '='
    if not (hi and lo and #v == 16) then text, hi, lo = text .. v, 0, 0 end
    for i = 1, #text do
      local b = string.byte(text, i)
      h1 = (h1 * 31 + b) % 16777213
      h2 = (h2 * 131 + b) % 16777199
    end
    h1 = (h1 * 65599 + hi) % 16777213
    h2 = (h2 * 65587 + lo) % 16777199
  end
  local fp = string.format('%06x%06x', h1, h2)
  local window = 8 * threshold
  -- ' pair=hash@version' per handoff, oldest first: searched as text (C speed)
  local recent = redis.call('HGET', loops, 'recent') or ''
  local added, tripped = {}, nil  -- this step's pairs are compared with earlier steps'
  for i = 1, P do
    local pair = ARGV[11 + i]
    local mine = ' ' .. pair .. '=' .. fp .. '@'
    local seen, first, last = {}, nil, nil  -- versions of this pair's meetings with fp
    local at = string.find(recent, mine, 1, true)
    while at do
      seen[#seen + 1] = string.match(recent, '^%d+', at + #mine)
      first, last = first or at, at
      at = string.find(recent, mine, at + #mine, true)
    end
    seen[#seen + 1] = version
    added[#added + 1] = mine .. version
    if #seen >= threshold and not stopped and not tripped then
      -- the cycle: the handoffs from this pair's last meeting with this content to now;
      -- 'no change' if the content stayed the same since the first meeting
      local same = true
      for h in string.gmatch(string.sub(recent, first), '=(%x+)@') do
        if h ~= fp then same = false end
      end
      local cycle, agents, known = {}, {}, {}
      for p, v in string.gmatch(string.sub(recent, last), ' ([^ =]+)=%x+@(%d+)') do
        cycle[#cycle + 1] = p .. '@' .. v
        for _, name in ipairs({string.match(p, '^([^>]+)>([^:]+)')}) do
          if not known[name] then
            known[name] = true
            agents[#agents + 1] = name
          end
        end
      end
      table.sort(agents)
      local how = 'with no change to the board'
      if not same then how = 'on a cycle: the board came back to content it had before' end
      tripped = {'handoff ' .. pair .. ' repeated ' .. #seen .. ' times ' .. how ..
        ' (versions ' .. table.concat(seen, ',') .. '; cycle ' .. table.concat(cycle, ' ') ..
        ', agents ' .. table.concat(agents, ', ') .. ')', table.concat(cycle, ' ')}
    end
  end
  recent = recent .. table.concat(added)
  local _, n = string.gsub(recent, ' ', ' ')
  local cut = 1  -- keep the last `window` entries
  for _ = 1, n - window do cut = string.find(recent, ' ', cut + 1, true) end
  redis.call('HSET', loops, 'recent', string.sub(recent, cut))
  if tripped then return trip('loop', tripped[1], tripped[2]) end
end

-- activations (none on a stopped board: nothing should act until an operator resumes it).
-- One whose id the board already has is skipped, neither counted nor queued again: a
-- join's id derives from the versions it waited on, so two replicas routing two of its
-- branches' commits both ask for it, and it is created once.
local base = 12 + P
if stopped then A = 0 end
local new = {}  -- the ARGV offsets of the activations created here
for i = 0, A - 1 do
  local o = base + 1 + 5 * i
  if redis.call('HEXISTS', acts, ARGV[o]) == 0 then new[#new + 1] = o end
end
if #new > 0 then
  local used = tonumber(m[3] or '0')
  if used + #new > tonumber(max_acts) then
    return trip('budget', 'activation budget spent: ' .. used .. ' used, ' .. #new ..
      ' more requested, max_activations ' .. max_acts)
  end
  redis.call('HINCRBY', meta, 'activations', #new)
end
for _, o in ipairs(new) do
  redis.call('HSET', acts, ARGV[o], ARGV[o + 3])
  redis.call('ZADD', open, ARGV[o + 2], ARGV[o])
  redis.call('HSET', outbox, ARGV[o], ARGV[o + 4])
end
if compliant == '1' and tonumber(version) > tonumber(m[2] or '0') then
  redis.call('HSET', meta, 'compliant', version)
end
if ARGV[9] ~= '' then
  redis.call('HSET', meta, 'status', ARGV[9], 'updated', now)
  current = ARGV[9]
end
local reply = {'ok', current}
for _, o in ipairs(new) do
  reply[#reply + 1] = ARGV[o]
  reply[#reply + 1] = ARGV[o + 1]
  reply[#reply + 1] = ARGV[o + 4]
end
return reply
