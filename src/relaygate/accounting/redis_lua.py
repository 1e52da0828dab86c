"""The Lua scripts of :mod:`relaygate.accounting.redis_gate`, one per decision.

Every key of one API key shares a hash tag (``{key_id}``), so each script touches one slot.
Per API key:

- ``acct`` hash: ``granted``, ``used`` (the highest ``used_micros`` read from the store: it
  only grows, so a report read late or twice never counts a row twice), ``pending`` (charged,
  not yet reported in the store), ``reserved``, ``unlimited``, ``rev`` (the store revision
  these came from), ``seeded``.
- ``res`` hash and ``resexp`` sorted set: reservations by request id, with their lease expiry.
- ``conc`` sorted set: requests in flight, with their lease expiry.
- ``rpm`` / ``tpm``: GCRA theoretical arrival times in milliseconds.
- ``pend`` hash: charges by request id not yet written to the store's ledger; ``pendt`` sorted
  set: when each was settled; ``pendo`` hash: the process (owner id) that owes its ledger row.

And one set for the whole deployment, ``pendkeys``: the API keys that have pending charges
(added when a charge becomes pending, removed when the key's last one goes), the only keys
reconciliation examines.

Reservations and slots are leases: admission gives ``lease_ms``, and each live request's
process renews all of its leases in one call (:data:`RENEW`) every third of a lease. A process
that dies stops renewing, and its leases lapse within one lease.

Time is Redis's own (``TIME``), the same for every replica.
"""

from __future__ import annotations

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = 60000
local function fmt(x) return string.format('%.3f', x) end
local function release(acct, res, resexp, rid)
  local amount = redis.call('HGET', res, rid)
  if amount then
    redis.call('HINCRBY', acct, 'reserved', -tonumber(amount))
    redis.call('HDEL', res, rid)
    redis.call('ZREM', resexp, rid)
    return true
  end
  return false
end
local function expire_reservations(acct, res, resexp)
  local stale = redis.call('ZRANGEBYSCORE', resexp, '-inf', now)
  for _, id in ipairs(stale) do
    local amount = redis.call('HGET', res, id)
    if amount then
      redis.call('HINCRBY', acct, 'reserved', -tonumber(amount))
      redis.call('HDEL', res, id)
    end
  end
  if #stale > 0 then redis.call('ZREMRANGEBYSCORE', resexp, '-inf', now) end
end
local function shift_tat(key, limit, units)
  if limit <= 0 or units == 0 then return end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  tat = tat + units * (period / limit)
  if tat > now then
    redis.call('SET', key, fmt(tat), 'PX', math.ceil(tat - now) + 1000)
  else
    redis.call('DEL', key)
  end
end
"""

# KEYS: acct res resexp conc rpm tpm
# ARGV: request_id amount tokens rpm tpm concurrency lease_ms
# -> {'ok', 0} | {'conc'|'rpm'|'tpm', wait_ms} | {'funds', available} | {'seed', 0}
ADMIT = (
    _PRELUDE
    + """
local rid, amount, tokens = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
local conc, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local acct = redis.call('HMGET', KEYS[1], 'seeded', 'granted', 'used', 'pending', 'reserved',
  'unlimited')
if not acct[1] then return {'seed', 0} end
expire_reservations(KEYS[1], KEYS[2], KEYS[3])
-- the same request admitted again (a resent call): already reserved, reserve nothing more
if redis.call('HEXISTS', KEYS[2], rid) == 1 then return {'ok', 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if conc > 0 and redis.call('ZCARD', KEYS[4]) >= conc then
  -- The earliest lease: renewed on time, it ends at least 2/3 of a lease from now; one nearer
  -- than half a lease missed a renewal (its process is gone) and frees its slot at expiry.
  -- Live holders end when their requests do: estimated by the key's mean request time.
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  local wait = tonumber(first[2]) - now
  if wait > ttl / 2 then
    local mean = tonumber(redis.call('HGET', KEYS[1], 'meanms') or '1000')
    if mean < wait then wait = mean end
  end
  if wait < 1 then wait = 1 end
  return {'conc', math.ceil(wait)}
end
local function gcra(key, limit, cost)
  if limit <= 0 then return nil end
  if cost > limit then cost = limit end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * (period / limit)
  local excess = new_tat - now - period
  if excess > 0.001 then return -math.ceil(excess) end
  return new_tat
end
local rpm_tat = gcra(KEYS[5], rpm, 1)
if rpm_tat and rpm_tat < 0 then return {'rpm', -rpm_tat} end
local tpm_tat = gcra(KEYS[6], tpm, tokens)
if tpm_tat and tpm_tat < 0 then return {'tpm', -tpm_tat} end
acct = redis.call('HMGET', KEYS[1], 'granted', 'used', 'pending', 'reserved', 'unlimited')
if acct[5] ~= '1' then
  local available = tonumber(acct[1]) - tonumber(acct[2]) - tonumber(acct[3])
    - tonumber(acct[4])
  if available < amount then return {'funds', available} end
end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('HSET', KEYS[2], rid, amount)
redis.call('ZADD', KEYS[3], now + ttl, rid)
if rpm_tat then redis.call('SET', KEYS[5], fmt(rpm_tat), 'PX', math.ceil(rpm_tat - now) + 1000) end
if tpm_tat then redis.call('SET', KEYS[6], fmt(tpm_tat), 'PX', math.ceil(tpm_tat - now) + 1000) end
if conc > 0 then
  redis.call('ZADD', KEYS[4], now + ttl, rid)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return {'ok', 0}
"""
)

# KEYS: acct res resexp conc rpm tpm ; ARGV: request_id tokens rpm tpm
CANCEL = (
    _PRELUDE
    + """
local rid, tokens, rpm, tpm = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREM', KEYS[4], rid)
-- the rate slots go back once, with the reservation (a resent cancel gives back nothing)
if not release(KEYS[1], KEYS[2], KEYS[3], rid) then return 0 end
shift_tat(KEYS[5], rpm, -1)
shift_tat(KEYS[6], tpm, -math.min(tokens, tpm))
return 1
"""
)

# KEYS: acct res resexp conc tpm pend pendt pendo pendkeys
# ARGV: request_id cost token_delta tpm held_ms owner key_id
# -> the charge (cost clamped so that the balance never goes below zero)
SETTLE = (
    _PRELUDE
    + """
local rid, cost, delta, tpm = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local held, owner = tonumber(ARGV[5]), ARGV[6]
-- a resent settle: the request is charged already
local charged = redis.call('HGET', KEYS[6], rid)
if charged then return tonumber(charged) end
if redis.call('ZREM', KEYS[4], rid) == 1 then
  -- the key's mean request time (for a truthful Retry-After when its slots are all taken)
  local mean = tonumber(redis.call('HGET', KEYS[1], 'meanms') or tostring(held))
  redis.call('HSET', KEYS[1], 'meanms', math.floor(mean * 0.8 + held * 0.2))
end
shift_tat(KEYS[5], tpm, delta)
release(KEYS[1], KEYS[2], KEYS[3], rid)
local acct = redis.call('HMGET', KEYS[1], 'seeded', 'granted', 'used', 'pending', 'reserved',
  'unlimited')
if not acct[1] then return cost end
local charge = cost
if acct[6] ~= '1' then
  local available = tonumber(acct[2]) - tonumber(acct[3]) - tonumber(acct[4])
    - tonumber(acct[5])
  if available < 0 then available = 0 end
  if charge > available then charge = available end
end
if charge > 0 then
  redis.call('HINCRBY', KEYS[1], 'pending', charge)
  redis.call('HSET', KEYS[6], rid, charge)
  redis.call('ZADD', KEYS[7], now, rid)
  redis.call('HSET', KEYS[8], rid, owner)
  redis.call('SADD', KEYS[9], ARGV[7])
end
return charge
"""
)

# KEYS: resexp conc ; ARGV: lease_ms request_id...
# The live requests of one process on one API key: their leases run for another lease_ms.
# Only leases still held are renewed (one that lapsed stays lapsed).
RENEW = """
local t = redis.call('TIME')
local lease = tonumber(ARGV[1])
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
  redis.call('ZADD', KEYS[2], 'XX', expiry, ARGV[i])
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], lease) end
return 1
"""

_FORGET_PENDING = """
local function forget_pending(acct, pend, pendt, pendo, rid)
  local pending = redis.call('HGET', pend, rid)
  if not pending then return false end
  redis.call('HDEL', pend, rid)
  redis.call('ZREM', pendt, rid)
  redis.call('HDEL', pendo, rid)
  redis.call('HINCRBY', acct, 'pending', -tonumber(pending))
  return true
end
local function take_used(acct, used)
  if tonumber(used) > tonumber(redis.call('HGET', acct, 'used') or '0') then
    redis.call('HSET', acct, 'used', used)
  end
end
"""

# KEYS: acct pend pendt pendo pendkeys ; ARGV: key_id store_used request_id...
# These rows are in the store, and ``store_used`` (the key's ``used_micros``, read after they
# were committed) counts them: their pending charges go, and ``used`` takes ``store_used`` if it
# is higher. Idempotent: a report run twice (redis-py resends a pipeline whose reply was lost),
# read before a newer one, or for rows the seed already counted, counts nothing twice; a row
# without a pending entry (its settle could not reach Redis) is counted all the same.
WRITTEN = (
    _FORGET_PENDING
    + """
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return 0 end
for i = 3, #ARGV do forget_pending(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[i]) end
take_used(KEYS[1], ARGV[2])
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[5], ARGV[1])
else  -- also a key whose charges became pending before ``pendkeys`` existed
  redis.call('SADD', KEYS[5], ARGV[1])
end
return 1
"""
)

# KEYS: pendt pendo pend pendkeys ; ARGV: age_ms limit key_id
# -> {request_id, owner, ...}: pending charges settled more than age_ms ago. Entries written
# before pendt existed are dated now (so they are reconciled one period later, owner unknown).
# A key without pending charges leaves ``pendkeys``.
STALE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = redis.call('HLEN', KEYS[3])
if count == 0 then
  redis.call('SREM', KEYS[4], ARGV[3])
  return {}
end
if count > redis.call('ZCARD', KEYS[1]) then
  for _, rid in ipairs(redis.call('HKEYS', KEYS[3])) do
    redis.call('ZADD', KEYS[1], 'NX', now, rid)
  end
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for _, rid in ipairs(ids) do
  out[#out + 1] = rid
  out[#out + 1] = redis.call('HGET', KEYS[2], rid) or ''
end
return out
"""

# KEYS: acct pend pendt pendo pendkeys ; ARGV: key_id store_used request_id, found, ...
# Old pending charges: ``found`` 1 means the ledger row is in the store, and ``store_used``
# (read after the rows were looked up) counts it: the charge goes, and ``used`` takes
# ``store_used`` if it is higher (-1: unknown); 0 means no row and its owner is gone (drop it:
# the row, if a journal replays it later, is counted when written).
# -> {moved, dropped}
RECONCILE = (
    _FORGET_PENDING
    + """
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return {0, 0} end
local moved, dropped = 0, 0
for i = 3, #ARGV, 2 do
  if forget_pending(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[i]) then
    if ARGV[i + 1] == '1' then moved = moved + 1 else dropped = dropped + 1 end
  end
end
take_used(KEYS[1], ARGV[2])
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[5], ARGV[1])
else  -- also a key whose charges became pending before ``pendkeys`` existed
  redis.call('SADD', KEYS[5], ARGV[1])
end
return {moved, dropped}
"""
)

# KEYS: acct ; ARGV: granted used unlimited revision
# Seed an account from the store once; afterwards only take newer grants, and a higher use.
SYNC = """
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then
  redis.call('HSET', KEYS[1], 'seeded', 1, 'granted', ARGV[1], 'used', ARGV[2], 'pending', 0,
    'reserved', 0, 'unlimited', ARGV[3], 'rev', ARGV[4])
  return 1
end
if tonumber(redis.call('HGET', KEYS[1], 'rev') or '0') < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'granted', ARGV[1], 'unlimited', ARGV[3], 'rev', ARGV[4])
end
if tonumber(redis.call('HGET', KEYS[1], 'used') or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'used', ARGV[2])
end
return 2
"""
