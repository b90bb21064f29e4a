--[[ read_at.lua: what is needed to rebuild a board at one past version, in one trip.

Read-only. All KEYS share the board's hash tag.
KEYS[1] meta     KEYS[2] snaps     KEYS[3] snapidx     KEYS[4] log     KEYS[5] state

ARGV[1] the version V wanted

Returns one of
  {'ok', S, snapshot JSON at S, JSON array of the forward patches S+1..V}
      where S is the newest snapshot version <= V; the patches are concatenated here so
      the client parses one string, not one reply element per stream field
  {'notfound'}
  {'range', current version}      V is not in 0..current
  {'compacted', history_from, current version}
      V is below meta.history_from: compact.lua dropped what rebuilt it

Key names are written into JSON unescaped: the declaration admits only plain identifiers
(matched whole, blackboard.schema), which need no escaping.
]]
local m = redis.call('HMGET', KEYS[1], 'version', 'history_from')
local current = m[1]
if not current then return {'notfound'} end
local v = tonumber(ARGV[1])
if v < 0 or v > tonumber(current) then return {'range', tonumber(current)} end
if v < tonumber(m[2] or 0) then return {'compacted', tonumber(m[2]), tonumber(current)} end
if v == tonumber(current) then  -- no replay: the live state is that version
  local flat = redis.call('HGETALL', KEYS[5])
  local parts = {}
  for i = 1, #flat, 2 do parts[#parts + 1] = '"' .. flat[i] .. '":' .. flat[i + 1] end
  return {'ok', v, '{' .. table.concat(parts, ',') .. '}', '[]'}
end
local s = tonumber(redis.call('ZREVRANGEBYSCORE', KEYS[3], v, '-inf', 'LIMIT', 0, 1)[1])
local snapshot = redis.call('HGET', KEYS[2], s)
local patches = {}
if v > s then
  local rows = redis.call('XRANGE', KEYS[4], (s + 1) .. '-0', v .. '-0')
  for i = 1, #rows do
    local fields = rows[i][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'patch' then patches[#patches + 1] = fields[j + 1] break end
    end
  end
end
return {'ok', s, snapshot, '[' .. table.concat(patches, ',') .. ']'}
