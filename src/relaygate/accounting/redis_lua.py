"""The Lua scripts of :mod:`relaygate.accounting.redis_gate`, one per decision.

Every key of one account, and of each of its API keys, shares the account's hash tag
(``{account_id}``), so each script touches one slot. Per account:

- ``acct`` hash: ``granted``, ``used`` (the highest ``used_micros`` read from the store: it
  only grows, so a report read late or twice never counts a row twice), ``pending`` (charged,
  not yet reported in the store), ``reserved``, ``unlimited``, ``rev`` (the store revision
  these came from), ``seeded``, ``meanms``. The account's API keys' spend caps live in the same
  hash, as fields ``c:<key_id>:<field>``: ``seeded``, ``limit``, ``pstart`` (the start of the
  cap's current period, unix seconds, see :mod:`relaygate.store.periods`), ``used`` (the
  highest ``period_used_micros`` read from the store for that period), ``pending``,
  ``reserved``, ``rev``; and each key's mean request time, ``m:<key_id>``.
- ``res`` hash and ``resexp`` sorted set: reservations by request id, with their lease expiry;
  ``resk`` hash: the API key whose cap a reservation also holds.
- ``conc`` sorted set, ``rpm`` / ``tpm`` (GCRA theoretical arrival times in milliseconds): the
  account's own limits over all its keys; ``k:<key_id>:conc`` / ``:rpm`` / ``:tpm``: each API
  key's.
- ``pend`` hash: charges by request id not yet written to the store's ledger; ``pendt`` sorted
  set: when each was settled; ``pendo`` hash: the process (owner id) that owes its ledger row;
  ``pendk`` hash: ``<key_id>|<pstart>`` of a charge that also counts against a key's cap.

And one set for the whole deployment, ``pendaccts``: the accounts that have pending charges
(added when a charge becomes pending, removed when the account's last one goes), the only ones
reconciliation examines.

Reservations and slots are leases: admission gives ``lease_ms``, and each live request's
process renews all of its leases in one call (:data:`RENEW`) every third of a lease. A process
that dies stops renewing, and its leases lapse within one lease.

Time is Redis's own (``TIME``), the same for every replica; a cap's period is named by the
replica (``pstart``, from its clock): a later period starts the cap afresh.
"""

from __future__ import annotations

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = 60000
local function fmt(x) return string.format('%.3f', x) end
local function num(x) return tonumber(x or '0') or 0 end
local function release(acct, res, resexp, resk, rid)
  local amount = redis.call('HGET', res, rid)
  if not amount then return false end
  redis.call('HINCRBY', acct, 'reserved', -tonumber(amount))
  redis.call('HDEL', res, rid)
  redis.call('ZREM', resexp, rid)
  local key = redis.call('HGET', resk, rid)
  if key then
    if redis.call('HEXISTS', acct, 'c:' .. key .. ':seeded') == 1 then
      redis.call('HINCRBY', acct, 'c:' .. key .. ':reserved', -tonumber(amount))
    end
    redis.call('HDEL', resk, rid)
  end
  return tonumber(amount)
end
local function expire_reservations(acct, res, resexp, resk)
  local stale = redis.call('ZRANGEBYSCORE', resexp, '-inf', now)
  for _, id in ipairs(stale) do release(acct, res, resexp, resk, id) end
end
-- a cap's period: a later one (named by the caller's clock) starts it afresh
local function roll(acct, key, pstart)
  local c = 'c:' .. key .. ':'
  if num(redis.call('HGET', acct, c .. 'pstart')) < pstart then
    redis.call('HSET', acct, c .. 'pstart', pstart, c .. 'used', 0, c .. 'pending', 0)
  end
end
local function cap_left(acct, key)
  local c = 'c:' .. key .. ':'
  local f = redis.call('HMGET', acct, c .. 'limit', c .. 'used', c .. 'pending', c .. 'reserved')
  return num(f[1]) - num(f[2]) - num(f[3]) - num(f[4])
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

# KEYS: acct res resexp resk kconc krpm ktpm aconc arpm atpm
# ARGV: request_id amount tokens krpm ktpm kconc lease_ms key_id capped pstart arpm atpm aconc
# -> {'ok', 0} | {'conc'|'rpm'|'tpm'|'aconc'|'arpm'|'atpm', wait_ms} | {'funds', available}
#  | {'seed', 0}
ADMIT = (
    _PRELUDE
    + """
local rid, amount, tokens = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl, key, capped, pstart = tonumber(ARGV[7]), ARGV[8], ARGV[9] == '1', tonumber(ARGV[10])
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return {'seed', 0} end
if capped and redis.call('HEXISTS', KEYS[1], 'c:' .. key .. ':seeded') == 0 then
  return {'seed', 0}
end
expire_reservations(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
-- the same request admitted again (a resent call): already reserved, reserve nothing more
if redis.call('HEXISTS', KEYS[2], rid) == 1 then return {'ok', 0} end
-- The earliest lease: renewed on time, it ends at least 2/3 of a lease from now; one nearer
-- than half a lease missed a renewal (its process is gone) and frees its slot at expiry.
-- Live holders end when their requests do: estimated by the mean request time.
local function full(conc, limit, meanfield)
  -- fewer members than the limit, lapsed ones included: room (lapsed ones go once it is full)
  if limit <= 0 or redis.call('ZCARD', conc) < limit then return nil end
  redis.call('ZREMRANGEBYSCORE', conc, '-inf', now)
  if redis.call('ZCARD', conc) < limit then return nil end
  local first = redis.call('ZRANGE', conc, 0, 0, 'WITHSCORES')
  local wait = tonumber(first[2]) - now
  if wait > ttl / 2 then
    local mean = tonumber(redis.call('HGET', KEYS[1], meanfield) or '1000')
    if mean < wait then wait = mean end
  end
  if wait < 1 then wait = 1 end
  return math.ceil(wait)
end
local wait = full(KEYS[5], tonumber(ARGV[6]), 'm:' .. key)
if wait then return {'conc', wait} end
wait = full(KEYS[8], tonumber(ARGV[13]), 'meanms')
if wait then return {'aconc', wait} end
local function gcra(k, limit, cost)
  if limit <= 0 then return nil end
  if cost > limit then cost = limit end
  local tat = tonumber(redis.call('GET', k) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * (period / limit)
  local excess = new_tat - now - period
  if excess > 0.001 then return -math.ceil(excess) end
  return new_tat
end
local tats = {}
local checks = {{KEYS[6], tonumber(ARGV[4]), 1, 'rpm'}, {KEYS[7], tonumber(ARGV[5]), tokens, 'tpm'},
  {KEYS[9], tonumber(ARGV[11]), 1, 'arpm'}, {KEYS[10], tonumber(ARGV[12]), tokens, 'atpm'}}
for i, c in ipairs(checks) do
  local tat = gcra(c[1], c[2], c[3])
  if tat and tat < 0 then return {c[4], -tat} end
  tats[i] = tat
end
local acct = redis.call('HMGET', KEYS[1], 'granted', 'used', 'pending', 'reserved', 'unlimited')
local available = nil
if acct[5] ~= '1' then
  available = num(acct[1]) - num(acct[2]) - num(acct[3]) - num(acct[4])
end
if capped then
  roll(KEYS[1], key, pstart)
  local left = cap_left(KEYS[1], key)
  if available == nil or left < available then available = left end
end
if available ~= nil and available < amount then return {'funds', available} end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('HSET', KEYS[2], rid, amount)
redis.call('ZADD', KEYS[3], now + ttl, rid)
if capped then
  redis.call('HINCRBY', KEYS[1], 'c:' .. key .. ':reserved', amount)
  redis.call('HSET', KEYS[4], rid, key)
end
for i, c in ipairs(checks) do
  local tat = tats[i]
  if tat then redis.call('SET', c[1], fmt(tat), 'PX', math.ceil(tat - now) + 1000) end
end
for _, conc in ipairs({{KEYS[5], tonumber(ARGV[6])}, {KEYS[8], tonumber(ARGV[13])}}) do
  if conc[2] > 0 then
    redis.call('ZADD', conc[1], now + ttl, rid)
    redis.call('PEXPIRE', conc[1], ttl)
  end
end
return {'ok', 0}
"""
)

# KEYS: acct res resexp resk kconc krpm ktpm aconc arpm atpm
# ARGV: request_id tokens krpm ktpm arpm atpm
CANCEL = (
    _PRELUDE
    + """
local rid, tokens = ARGV[1], tonumber(ARGV[2])
redis.call('ZREM', KEYS[5], rid)
redis.call('ZREM', KEYS[8], rid)
-- the rate slots go back once, with the reservation (a resent cancel gives back nothing)
if not release(KEYS[1], KEYS[2], KEYS[3], KEYS[4], rid) then return 0 end
local ktpm, atpm = tonumber(ARGV[4]), tonumber(ARGV[6])
shift_tat(KEYS[6], tonumber(ARGV[3]), -1)
shift_tat(KEYS[7], ktpm, -math.min(tokens, ktpm))
shift_tat(KEYS[9], tonumber(ARGV[5]), -1)
shift_tat(KEYS[10], atpm, -math.min(tokens, atpm))
return 1
"""
)

# KEYS: acct res resexp resk kconc ktpm aconc atpm pend pendt pendo pendk pendaccts
# ARGV: request_id cost held_ms owner account_id key_id capped pstart
#       ktpm ktoken_delta atpm atoken_delta
# -> the charge (cost clamped so that neither the balance nor the key's cap goes below zero)
SETTLE = (
    _PRELUDE
    + """
local rid, cost, held, owner = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local key, capped, pstart = ARGV[6], ARGV[7] == '1', tonumber(ARGV[8])
-- a resent settle: the request is charged already
local charged = redis.call('HGET', KEYS[9], rid)
if charged then return tonumber(charged) end
-- the mean request time (for a truthful Retry-After when all slots are taken)
for _, c in ipairs({{KEYS[5], 'm:' .. key}, {KEYS[7], 'meanms'}}) do
  if redis.call('ZREM', c[1], rid) == 1 then
    local mean = tonumber(redis.call('HGET', KEYS[1], c[2]) or tostring(held))
    redis.call('HSET', KEYS[1], c[2], math.floor(mean * 0.8 + held * 0.2))
  end
end
shift_tat(KEYS[6], tonumber(ARGV[9]), tonumber(ARGV[10]))
shift_tat(KEYS[8], tonumber(ARGV[11]), tonumber(ARGV[12]))
local reserved = release(KEYS[1], KEYS[2], KEYS[3], KEYS[4], rid) or 0
local acct = redis.call('HMGET', KEYS[1], 'seeded', 'granted', 'used', 'pending', 'reserved',
  'unlimited')
if not acct[1] then return cost end
capped = capped and redis.call('HEXISTS', KEYS[1], 'c:' .. key .. ':seeded') == 1
local charge = cost
-- what was reserved is always chargeable (credits taken back or a cap lowered while the
-- request ran may leave the balance below zero by at most what was in flight); only an
-- upstream's report beyond its reservation is bounded by what is left
if acct[6] ~= '1' then
  local available = num(acct[2]) - num(acct[3]) - num(acct[4]) - num(acct[5])
  if available < reserved then available = reserved end
  if charge > available then charge = available end
end
if capped then
  roll(KEYS[1], key, pstart)
  local left = cap_left(KEYS[1], key)
  if left < reserved then left = reserved end
  if charge > left then charge = left end
end
if charge < 0 then charge = 0 end
if charge > 0 then
  redis.call('HINCRBY', KEYS[1], 'pending', charge)
  redis.call('HSET', KEYS[9], rid, charge)
  redis.call('ZADD', KEYS[10], now, rid)
  redis.call('HSET', KEYS[11], rid, owner)
  redis.call('SADD', KEYS[13], ARGV[5])
  if capped then
    redis.call('HINCRBY', KEYS[1], 'c:' .. key .. ':pending', charge)
    local c = 'c:' .. key .. ':'
    local f = redis.call('HMGET', KEYS[1], c .. 'pstart', c .. 'epoch')
    redis.call('HSET', KEYS[12], rid, key .. '|' .. (f[1] or '0') .. '|' .. (f[2] or '0'))
  end
end
return charge
"""
)

# KEYS: resexp conc... ; ARGV: lease_ms request_id...
# The live requests of one process on one account: their leases (reservation and every
# concurrency slot listed: the account's and the keys') run for another lease_ms. Only leases
# still held are renewed (one that lapsed stays lapsed).
RENEW = """
local t = redis.call('TIME')
local lease = tonumber(ARGV[1])
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease
for i = 2, #ARGV do
  for k = 1, #KEYS do redis.call('ZADD', KEYS[k], 'XX', expiry, ARGV[i]) end
end
for k = 2, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('PEXPIRE', KEYS[k], lease) end
end
return 1
"""

# KEYS: owner ; ARGV: lease_ms
# This process's owner lease (sent in the renewal's pipeline with the RENEW calls).
OWNER = """
redis.call('SET', KEYS[1], 1, 'PX', tonumber(ARGV[1]))
return 1
"""

_BOOKS = """
local function num(x) return tonumber(x or '0') or 0 end
-- forget the pending charges of ``ids`` (those that have one: returned) with one call per
-- structure for all of them
local function forget_pending(acct, pend, pendt, pendo, pendk, ids)
  if #ids == 0 then return {} end
  local charges = redis.call('HMGET', pend, unpack(ids))
  local found, amounts, total, seen = {}, {}, 0, {}
  for i = 1, #ids do
    if charges[i] and not seen[ids[i]] then  -- an id given twice is forgotten once
      seen[ids[i]] = true
      found[#found + 1] = ids[i]
      amounts[#found] = tonumber(charges[i])
      total = total + amounts[#found]
    end
  end
  if #found == 0 then return found end
  redis.call('HDEL', pend, unpack(found))
  redis.call('ZREM', pendt, unpack(found))
  redis.call('HDEL', pendo, unpack(found))
  redis.call('HINCRBY', acct, 'pending', -total)
  local tags = redis.call('HMGET', pendk, unpack(found))
  local tagged = {}
  for i = 1, #found do
    local capped = tags[i]
    if capped then
      tagged[#tagged + 1] = found[i]
      local bar = string.find(capped, '|', 1, true)
      local c = 'c:' .. string.sub(capped, 1, bar - 1) .. ':'
      local tag = string.sub(capped, bar + 1)
      local f = redis.call('HMGET', acct, c .. 'pstart', c .. 'epoch')
      local current = (f[1] or '0') .. '|' .. (f[2] or '0')
      if not string.find(tag, '|', 1, true) then current = f[1] end  -- tagged before epochs
      -- a charge of an earlier period (or of the cap before its period kind changed): that
      -- count was dropped when the cap rolled or changed
      if tag == current then
        redis.call('HINCRBY', acct, c .. 'pending', -amounts[i])
      end
    end
  end
  if #tagged > 0 then redis.call('HDEL', pendk, unpack(tagged)) end
  return found
end
local function take_used(acct, used)
  if tonumber(used) > num(redis.call('HGET', acct, 'used')) then
    redis.call('HSET', acct, 'used', used)
  end
end
-- a key's period use as the store has it: the highest for the cap's period; a later period
-- starts the cap there
local function take_cap(acct, key, used, pstart)
  local c = 'c:' .. key .. ':'
  if redis.call('HEXISTS', acct, c .. 'seeded') == 0 then return end
  used, pstart = tonumber(used), tonumber(pstart)
  local current = num(redis.call('HGET', acct, c .. 'pstart'))
  if pstart > current then
    redis.call('HSET', acct, c .. 'pstart', pstart, c .. 'used', used, c .. 'pending', 0)
  elseif pstart == current and used > num(redis.call('HGET', acct, c .. 'used')) then
    redis.call('HSET', acct, c .. 'used', used)
  end
end
local function keep_listed(pend, set, account)
  if redis.call('HLEN', pend) == 0 then
    redis.call('SREM', set, account)
  else
    redis.call('SADD', set, account)
  end
end
"""

# KEYS: acct pend pendt pendo pendk pendaccts
# ARGV: account_id store_used ncaps (key_id period_used period_start)*ncaps request_id...
# These rows are in the store, and ``store_used`` (the account's ``used_micros``, read after
# they were committed) counts them, as each key's ``period_used_micros`` does: their pending
# charges go, and ``used`` takes ``store_used`` if it is higher (each cap likewise). Idempotent:
# a report run twice (redis-py resends a pipeline whose reply was lost), read before a newer
# one, or for rows the seed already counted, counts nothing twice; a row without a pending
# entry (its settle could not reach Redis) is counted all the same.
WRITTEN = (
    _BOOKS
    + """
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return 0 end
local ncaps = tonumber(ARGV[3])
local first = 4 + 3 * ncaps
local ids = {}
for i = first, #ARGV do ids[#ids + 1] = ARGV[i] end
forget_pending(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ids)
take_used(KEYS[1], ARGV[2])
for i = 4, first - 1, 3 do take_cap(KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
keep_listed(KEYS[2], KEYS[6], ARGV[1])
return 1
"""
)

# KEYS: pendt pendo pend pendk pendaccts ; ARGV: age_ms limit account_id
# -> {request_id, owner, key_id, ...}: pending charges settled more than age_ms ago. An account
# without pending charges leaves ``pendaccts``.
STALE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = redis.call('HLEN', KEYS[3])
if count == 0 then
  redis.call('SREM', KEYS[5], ARGV[3])
  return {}
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for _, rid in ipairs(ids) do
  out[#out + 1] = rid
  out[#out + 1] = redis.call('HGET', KEYS[2], rid) or ''
  local capped = redis.call('HGET', KEYS[4], rid) or ''
  local bar = string.find(capped, '|', 1, true)
  out[#out + 1] = bar and string.sub(capped, 1, bar - 1) or ''
end
return out
"""

# KEYS: acct pend pendt pendo pendk pendaccts
# ARGV: account_id store_used ncaps (key_id period_used period_start)*ncaps request_id found...
# Old pending charges: ``found`` 1 means the ledger row is in the store, and ``store_used``
# (read after the rows were looked up) counts it: the charge goes, and ``used`` takes
# ``store_used`` if it is higher (-1: unknown), each cap likewise; 0 means no row and its owner
# is gone (drop it: the row, if a journal replays it later, is counted when written).
# -> {moved, dropped}
RECONCILE = (
    _BOOKS
    + """
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return {0, 0} end
local moved, dropped = 0, 0
local ncaps = tonumber(ARGV[3])
local first = 4 + 3 * ncaps
local ids, written = {}, {}
for i = first, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  written[ARGV[i]] = ARGV[i + 1] == '1'
end
for _, rid in ipairs(forget_pending(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ids)) do
  if written[rid] then moved = moved + 1 else dropped = dropped + 1 end
end
take_used(KEYS[1], ARGV[2])
for i = 4, first - 1, 3 do take_cap(KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
keep_listed(KEYS[2], KEYS[6], ARGV[1])
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

# KEYS: acct ; ARGV: key_id limit period_used period_start revision period
# Seed a key's spend cap from the store once (limit -1: none); afterwards take a newer limit
# (a new kind of period starts from the store's figures), and the store's period use (the
# highest for the cap's period; a later period starts there).
SYNC_CAP = (
    _BOOKS
    + """
local c = 'c:' .. ARGV[1] .. ':'
if redis.call('HEXISTS', KEYS[1], c .. 'seeded') == 0 then
  redis.call('HSET', KEYS[1], c .. 'seeded', 1, c .. 'limit', ARGV[2], c .. 'used', ARGV[3],
    c .. 'pstart', ARGV[4], c .. 'pending', 0, c .. 'reserved', 0, c .. 'rev', ARGV[5],
    c .. 'period', ARGV[6])
  return 1
end
if num(redis.call('HGET', KEYS[1], c .. 'rev')) < tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], c .. 'limit', ARGV[2], c .. 'rev', ARGV[5])
  if redis.call('HGET', KEYS[1], c .. 'period') ~= ARGV[6] then
    -- a new period kind: the store's use of it, and a new epoch, so that the charges still
    -- pending under the old kind are not taken off the new count when they are written
    redis.call('HSET', KEYS[1], c .. 'period', ARGV[6], c .. 'used', ARGV[3],
      c .. 'pstart', ARGV[4], c .. 'pending', 0)
    redis.call('HINCRBY', KEYS[1], c .. 'epoch', 1)
  end
end
take_cap(KEYS[1], ARGV[1], ARGV[3], ARGV[4])
return 2
"""
)
