--[[ summarise.lua: which summarisable keys a commit makes due for summarisation: once
per threshold crossing, decided atomically, so two supervisor replicas routing commits
of one board never both start a summarisation for the same crossing.

A key's marker, in the board's loop state:
  absent                    armed: the next commit that finds the key over its
                            threshold starts a summarisation
  'pending|<routing>|<ms>'  one was started for this crossing by that routing (the
                            submission's proposal id), at that time; commits while it
                            runs (or is redone after a rejection) start none. The same
                            routing asking again (a redelivery) gets the same answer.
  'done|<bytes>'            the summary committed and is itself over the threshold
                            (that many bytes): its own output is not summarised
                            again, but once the key has grown by another threshold
                            past it, the next commit starts the next summarisation
                            (so a summary over the threshold cannot let it grow for
                            ever)
A commit that finds the key under its threshold removes the marker (re-armed). For the
summariser's own commit, the size that counts is its summary's, not the key's: what was
appended to the key while the summary was made follows it (on_top), and if that is
enough to keep the key over, the next commit starts the next summarisation. A
pending marker with no open summarisation of the key, older than the time its routing
takes to create the activation (ARGV[5]), is a summarisation that died (timed out,
failed, or was never created because the board tripped or stopped): re-armed, so a
board an operator resumes does not grow for ever.

All KEYS share the board's hash tag.
KEYS[1] state  hash  key -> JSON value (sizes by HSTRLEN: values are not loaded)
KEYS[2] loops  hash  'sum:<key>' -> marker
KEYS[3] open   zset  open activation ids
KEYS[4] acts   hash  activation id -> activation record JSON

ARGV[1] the summariser's agent name
ARGV[2] '1' if this commit may start a summarisation, '0' if it is the summariser's own
ARGV[3] routing id (the submission's proposal id)
ARGV[4] now (ms)
ARGV[5] grace (ms): how long a pending marker may wait for its activation to be open
then quadruples: key, threshold in bytes, threshold in approximate tokens ('0' = none),
  size in bytes that counts ('' = the stored value's; the summariser's commit: its summary's)

Returns the keys now due, for the caller to activate the summariser on.
]]
local state, loops, open, acts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local summariser, arm, routing = ARGV[1], ARGV[2] == '1', ARGV[3]
local now, grace = tonumber(ARGV[4]), tonumber(ARGV[5])

-- Whether a summarisation of `key` is still open: a record of the summariser, with
-- reason 'summarise' (a redone one keeps it) and the key in its payload. Few activations
-- are open at once; this runs only while a key is over its threshold with one pending.
local function running(key)
  local who = '"agent":"' .. summariser .. '"'
  local what = '"payload":{"key":"' .. key .. '"'
  for _, aid in ipairs(redis.call('ZRANGE', open, 0, -1)) do
    local record = redis.call('HGET', acts, aid)
    if record and string.find(record, '"reason":"summarise"', 1, true)
        and string.find(record, who, 1, true) and string.find(record, what, 1, true) then
      return true
    end
  end
  return false
end

-- Whether a pending marker still stands: this routing's own (a redelivery: due again,
-- the same activation), or another's that is running or still being created.
local function stands(m, key)
  local by, at = string.match(m, '^pending|(.*)|(%d+)$')
  if not by then return false, false end  -- not a marker this script wrote: re-arm
  if by == routing then return true, true end
  return running(key) or now - tonumber(at) < grace, false
end

local due = {}
for i = 6, #ARGV, 4 do
  local key, bytes, tokens = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local size = tonumber(ARGV[i + 3]) or redis.call('HSTRLEN', state, key)
  -- the same estimate as the commit's accounting: ceil(bytes / 4)
  local over = size > bytes or (tokens > 0 and math.floor((size + 3) / 4) > tokens)
  local marker = 'sum:' .. key
  if not over then
    redis.call('HDEL', loops, marker)
  elseif not arm then
    redis.call('HSET', loops, marker, 'done|' .. size)
  else
    local m = redis.call('HGET', loops, marker)
    local summary = m and tonumber(string.match(m, '^done|(%d+)$') or (m == 'done' and '0'))
    if not m or (summary and size >= summary + bytes) then
      redis.call('HSET', loops, marker, 'pending|' .. routing .. '|' .. now)
      due[#due + 1] = key
    elseif not summary then
      local standing, again = stands(m, key)
      if again then
        due[#due + 1] = key
      elseif not standing then
        redis.call('HSET', loops, marker, 'pending|' .. routing .. '|' .. now)
        due[#due + 1] = key
      end
    end
  end
end
return due
