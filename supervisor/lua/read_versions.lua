--[[ read_versions.lua: what routing reads after a commit whose keys a join watches:
the values of the keys routing reads and the versions of the keys the join waits on, in
one atomic step (a join's activation id derives from the versions its condition saw).

All KEYS share the board's hash tag.
KEYS[1] state  KEYS[2] kver
ARGV[1] N, then N keys to read, then the join's keys
Returns {values of the N keys, versions of the join's keys} (nil where unset)
]]
local n = tonumber(ARGV[1])
local reads, joins = {}, {}
for i = 2, n + 1 do reads[#reads + 1] = ARGV[i] end
for i = n + 2, #ARGV do joins[#joins + 1] = ARGV[i] end
return {redis.call('HMGET', KEYS[1], unpack(reads)), redis.call('HMGET', KEYS[2], unpack(joins))}
