--[[ forget_consumer.lua: remove a dead consumer from a group, only if it holds nothing:
XGROUP DELCONSUMER drops the entries a consumer holds, so the check and the removal are
one atomic step.
KEYS[1] the stream
ARGV[1] the group    ARGV[2] the consumer
Returns 1 if removed, else 0. ]]
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
