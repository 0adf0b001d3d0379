"""The Lua scripts of the Redis session store (``bff.session.redis_store``), as text: this module imports nothing.

Each script touches only ``KEYS[1]``, so it is atomic and runs unchanged on Redis Cluster (a script's keys must hash
to one slot), and none is O(number of keys). Compares are byte for byte (Lua strings are binary-safe). The store
registers them with ``register_script``: EVALSHA, loading a script on first use and again on NOSCRIPT.
"""

from __future__ import annotations

# KEYS[1]: the key. ARGV[1]: the expected value. ARGV[2]: the new value. ARGV[3]: the TTL in ms; "0" deletes the key
# instead (a TTL <= 0 never stores). Returns 1 when the current value equalled ARGV[1] and was replaced (or
# deleted); 0 when the key is absent or holds something else, and then nothing changes.
COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
    redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS[1]: the lock. ARGV[1]: the owner token. ARGV[2]: the new lease in ms; "0" releases the lock instead.
# Returns 1 when ARGV[1] owns the lock (lease renewed or lock released); 0 when the lock is absent or owned by
# another token, and then nothing changes.
EXTEND_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
    redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS[1]: the lock. ARGV[1]: the owner token. Returns 1 when ARGV[1] owned the lock and it was deleted, 0 when the
# lock is absent or owned by another token. The release from https://redis.io/docs/latest/develop/use/patterns/
# distributed-locks/ ("Correct Implementation with a Single Instance"): never delete another owner's lock.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Indexes are hashes whose fields are the members (values empty), not sets: Redis keeps a small hash as a compact
# listpack, while a set of strings is a hashtable before Redis 7.2, and every session has two indexes (see
# docs/performance.md for Redis memory per session). Sets written by earlier versions are still read and updated as
# sets (TYPE picks the command) until they expire with the sessions they list.

# KEYS[1]: the index. ARGV[1]: the member. ARGV[2]: the TTL in ms (> 0). Adds ARGV[1] and makes the index live at
# least ARGV[2] ms more: its TTL only grows. Not PEXPIRE GT, because GT treats a key without a TTL as infinite and
# would leave it immortal (https://redis.io/docs/latest/commands/pexpire/#options); PTTL answers -1 for it, which is
# below any ARGV[2], so it gets one here. Returns 1 when the TTL was raised, 0 otherwise.
INDEX_ADD = """
if redis.call('TYPE', KEYS[1]).ok == 'set' then
    redis.call('SADD', KEYS[1], ARGV[1])
else
    redis.call('HSET', KEYS[1], ARGV[1], '')
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""

# KEYS[1]: the index. ARGV[1]: the member. Removes it; Redis deletes the index with its last member. Returns the
# number of members removed (0 when the member or the index is absent).
INDEX_REMOVE = """
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SREM', KEYS[1], ARGV[1]) end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""

# KEYS[1]: the index. Returns its members, an empty array when it does not exist.
INDEX_MEMBERS = """
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SMEMBERS', KEYS[1]) end
return redis.call('HKEYS', KEYS[1])
"""
