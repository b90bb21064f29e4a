--[[ commit.lua: apply one validated proposal to one board, atomically.

All KEYS share the board's hash tag {<board-id>}: one cluster slot.
KEYS[1] meta       hash   version, status, decl, bytes, tokens, since_snap, updated, ...
KEYS[2] state      hash   key -> JSON value (unset keys absent)
KEYS[3] kver       hash   key -> version of its last change (absent = 0)
KEYS[4] log        stream one entry per commit, id <version>-0
KEYS[5] committed  hash   proposal id -> version (idempotency, checked here and not
                          around the call: a client retry may send the script twice)
KEYS[6] snaps      hash   version -> JSON object of the whole board
KEYS[7] snapidx    zset   snapshot versions
KEYS[8] khash      hash   key -> short hash of its value, for content fingerprints
KEYS[9] results    hash   proposal id -> the supervisor's recorded decision: a proposal
                          already decided (e.g. rejected, then redelivered) never commits

ARGV[1]  declaration digest the caller validated against
ARGV[2]  base version
ARGV[3]  proposal id ('' = not idempotent)
ARGV[4]  snapshot floor (bytes)
ARGV[5]  events channel
ARGV[6]  W: number of written keys
ARGV[7]  R: number of read-set keys
ARGV[8]  author (log)          ARGV[9]  author as JSON string (event)
ARGV[10] kind                  ARGV[11] forward patch (JSON)
ARGV[12] undo patch (JSON), or '' to build it here from the old values (blind patches)
ARGV[13] activation id         ARGV[14] trace id
ARGV[15] reason                ARGV[16] outcome
ARGV[17] board id (event)
ARGV[18..] W quadruples: key, action ('set' | 'replace' | 'remove'), value JSON ('' if
         remove), hash of the value (computed by the caller: Lua here has no hash function
         on every backend); each key at most once
then R keys of the read set.

Returns one of (a version as text: a number formatted here would be formatted twice)
  {'ok', version, snapshot_taken, changed_key...}
  {'dup', version, changed_key...}      proposal id already committed (keys from its log
                                       entry, so a redelivery can finish what follows)
  {'conflict', key, kver, ...}         written/read keys changed after base
  {'missing', key, action}             replace/remove of an unset key
  {'decided'}                          the supervisor already decided this proposal id
  {'stopped', status}                  a 'write' or 'summary' to an escalated, done or
                                       failed board (operators' kinds still pass)
  {'notfound'} {'archived'} {'decl', stored_digest} {'ahead', version}
Nothing is written unless the answer is 'ok'.

Key names, the board id and the kind are written into JSON here unescaped: the Python
side admits only names and ids that need no escaping (matched whole, blackboard.keys and
blackboard.schema), so no quote, backslash or control character reaches this script.
]]
local meta, state, kver, log, committed, snaps, snapidx, khash =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]

local m = redis.call('HMGET', meta, 'version', 'status', 'decl', 'bytes', 'tokens', 'since_snap')
if not m[1] then return {'notfound'} end

-- A redelivered proposal that already committed is a duplicate, whatever else changed.
local pid = ARGV[3]
if pid ~= '' then
  local prev = redis.call('HGET', committed, pid)
  if prev then
    local reply = {'dup', prev}
    local entry = redis.call('XRANGE', log, prev .. '-0', prev .. '-0')
    if entry[1] then
      local fields = entry[1][2]
      for j = 1, #fields, 2 do
        if fields[j] == 'keys' and fields[j + 1] ~= '' then
          for k in string.gmatch(fields[j + 1], '[^,]+') do reply[#reply + 1] = k end
        end
      end
    end
    return reply
  end
end
if pid ~= '' and redis.call('HEXISTS', KEYS[9], pid) == 1 then return {'decided'} end
if m[2] == 'archived' then return {'archived'} end
if (m[2] == 'escalated' or m[2] == 'done' or m[2] == 'failed') and
    (ARGV[10] == 'write' or ARGV[10] == 'summary') then
  return {'stopped', m[2]}
end
if m[3] ~= ARGV[1] then return {'decl', m[3]} end

local version = tonumber(m[1])
local base = tonumber(ARGV[2])
if base > version then return {'ahead', version} end

local W, R = tonumber(ARGV[6]), tonumber(ARGV[7])
local FIRST = 18
local READS = FIRST + 4 * W

-- Serializable: no key written or read may have changed after the base version.
local conflicts = {'conflict'}
local function check(k)
  local kv = tonumber(redis.call('HGET', kver, k) or '0')
  if kv > base then
    conflicts[#conflicts + 1] = k
    conflicts[#conflicts + 1] = kv
  end
end
for i = 0, W - 1 do check(ARGV[FIRST + 4 * i]) end
for i = 0, R - 1 do check(ARGV[READS + i]) end
if #conflicts > 1 then return conflicts end

-- Every precondition before the first write, so a refusal changes nothing. The old
-- values (their lengths, when the undo patch is given) are read here once: a length of
-- 0 is an unset key, since a stored value is JSON, never empty. Each key is written
-- once (the caller merges a patch's operations per key), so they stay current below.
local build_undo = ARGV[12] == ''
local olds, oldlens = {}, {}
for i = 0, W - 1 do
  local k, action = ARGV[FIRST + 4 * i], ARGV[FIRST + 4 * i + 1]
  local old, oldlen = false, 0
  if build_undo then
    old = redis.call('HGET', state, k)
    if old then oldlen = #old end
  else
    oldlen = redis.call('HSTRLEN', state, k)
  end
  if action ~= 'set' and oldlen == 0 then return {'missing', k, action} end
  olds[i], oldlens[i] = old, oldlen
end

local function tokens(n) return math.floor((n + 3) / 4) end

local new = version + 1
local newv = tostring(new)  -- formatted once: numbers given to Redis are formatted each time
local undo = {}
local changed = {}
local dbytes, dtokens = 0, 0
for i = 0, W - 1 do
  local k, action, value = ARGV[FIRST + 4 * i], ARGV[FIRST + 4 * i + 1], ARGV[FIRST + 4 * i + 2]
  local old, oldlen = olds[i], oldlens[i]
  local newlen = 0
  local did = true
  if action == 'remove' then
    redis.call('HDEL', state, k)
    redis.call('HDEL', khash, k)
  elseif old and old == value then
    did = false          -- same content: not a change, no new key version
    newlen = oldlen
  else
    redis.call('HSET', state, k, value)
    redis.call('HSET', khash, k, ARGV[FIRST + 4 * i + 3])
    newlen = #value
  end
  if did then
    redis.call('HSET', kver, k, newv)
    dbytes = dbytes + newlen - oldlen
    dtokens = dtokens + tokens(newlen) - tokens(oldlen)
    changed[#changed + 1] = k
    if build_undo then
      if old then
        undo[#undo + 1] = '{"op":"add","path":"/' .. k .. '","value":' .. old .. '}'
      else
        undo[#undo + 1] = '{"op":"remove","path":"/' .. k .. '"}'
      end
    end
  end
end

local t = redis.call('TIME')
local now = t[1] .. string.sub('00000' .. t[2], -6, -4)  -- ms, built as text
local undo_json = ARGV[12]
if build_undo then undo_json = '[' .. table.concat(undo, ',') .. ']' end
local keys_csv = table.concat(changed, ',')

redis.call('XADD', log, newv .. '-0',
  'author', ARGV[8], 'kind', ARGV[10], 'keys', keys_csv, 'patch', ARGV[11],
  'undo', undo_json, 'proposal', pid, 'activation', ARGV[13], 'trace', ARGV[14],
  'ts', now, 'reason', ARGV[15], 'outcome', ARGV[16])
if pid ~= '' then redis.call('HSET', committed, pid, newv) end

-- Snapshot when the history written since the last one outweighs the board: storage
-- then grows with the size of the changes, and any version is one snapshot plus at
-- most a board's worth of patches away.
local size = tonumber(m[4]) + dbytes
local since = tonumber(m[6] or '0') + #ARGV[11] + #undo_json
local snap = 0
if since >= math.max(size, tonumber(ARGV[4])) then
  local flat = redis.call('HGETALL', state)
  local parts = {}
  for i = 1, #flat, 2 do parts[#parts + 1] = '"' .. flat[i] .. '":' .. flat[i + 1] end
  redis.call('HSET', snaps, new, '{' .. table.concat(parts, ',') .. '}')
  redis.call('ZADD', snapidx, new, new)
  since = 0
  snap = 1
end

redis.call('HSET', meta, 'version', newv, 'since_snap', since, 'updated', now,
  'bytes', size, 'tokens', tonumber(m[5]) + dtokens)

local quoted = {}
for i = 1, #changed do quoted[i] = '"' .. changed[i] .. '"' end
redis.call('PUBLISH', ARGV[5], '{"board":"' .. ARGV[17] .. '","version":' .. newv ..
  ',"kind":"' .. ARGV[10] .. '","author":' .. ARGV[9] ..
  ',"keys":[' .. table.concat(quoted, ',') .. ']}')

local reply = {'ok', newv, snap}
for i = 1, #changed do reply[#reply + 1] = changed[i] end
return reply
