"""Lua scripts of the Redis state store: each one is a single atomic step.

Money is kept as integers (micros); Lua numbers are doubles, exact below 2^53 micros
(about 9 billion USD), far above any budget.
"""

from __future__ import annotations

__all__ = [
    "ADVANCE_WATERMARK",
    "ASSIGN_IDENTITIES",
    "IDENTITY_PEERS",
    "IP_DEVICES",
    "JOIN_CONTEXTS",
    "MISSING_DECISIONS",
    "PARK",
    "RECORD_CLICKS",
    "RECORD_JOINS",
    "RECORD_RESULTS",
    "DECIDE_CONTEXTS",
    "EXPORT_PROFILES",
    "IMPORT_PROFILES",
    "RESERVE_AND_PUT",
    "SETTLE",
]

# KEYS: budget hash, open reservations hash, settled hash. ARGV: reservation id, cost, ttl.
SETTLE = """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
local a = redis.call('HGET', KEYS[2], ARGV[1])
if not a then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(a))
redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""

# Head of the greedy reservation script (KEYS: budget hash, open reservations hash, settled
# hash): reserve(id, a) reserves a under id if it fits after what this call reserved so far (an
# id already reserved or settled counts as reserved, at no further cost); commit(ttl) adds the
# call's total to the ledger once.
_GREEDY_LEDGER = """
local ledger = redis.call('HMGET', KEYS[1], 'budget', 'spent', 'reserved')
local b, s, r = tonumber(ledger[1] or '0'), tonumber(ledger[2] or '0'), tonumber(ledger[3] or '0')
local added = 0
local function reserve(id, a)
  if redis.call('HEXISTS', KEYS[2], id) == 1 or redis.call('HEXISTS', KEYS[3], id) == 1 then return 1 end
  if s + r + added + a > b then return 0 end
  added = added + a
  redis.call('HSET', KEYS[2], id, a)
  return 1
end
local function commit(ttl)
  if added > 0 then
    redis.call('HINCRBY', KEYS[1], 'reserved', added)
    redis.call('EXPIRE', KEYS[2], ttl)
  end
end
"""

# Shared head of the profile scripts: the activity fields _n, _s, _t of a profile hash (a person's
# ``ctx:`` or a device's share ``ctxdev:``), with ``ports.store.Activity``'s decay law.
# count(key, bucket, t, srch, half, ttl): one more request (``Activity.add``; the bucket's count
# and the activity read in one HMGET and written in one HSET: each redis.call costs Redis a few µs
# of Lua glue beside the command, on the bid path's hottest script); shift(key, n, s, at,
# sign, half): add (sign 1, ``Activity.merged``) or subtract (sign -1, ``Activity.without``, clamped
# at 0) an activity, both rebased to the later of their times.
_PROFILE = """
local function fmt(x) return string.format('%.17g', x) end
local function activity(key)
  local a = redis.call('HMGET', key, '_n', '_s', '_t')
  return tonumber(a[1] or '0'), tonumber(a[2] or '0'), tonumber(a[3] or '0')
end
local function count(key, bucket, t, srch, half, ttl)
  local a = redis.call('HMGET', key, bucket, '_n', '_s', '_t')
  local c, n, s, at = tonumber(a[1] or '0') + 1, tonumber(a[2] or '0'), tonumber(a[3] or '0'), tonumber(a[4] or '0')
  if t >= at then
    local fade = 2 ^ (-(t - at) / half)
    n, s, at = n * fade + 1, s * fade + srch, t
  else
    local w = 2 ^ (-(at - t) / half)
    n, s = n + w, s + w * srch
  end
  redis.call('HSET', key, bucket, string.format('%d', c), '_n', fmt(n), '_s', fmt(s), '_t', string.format('%.0f', at))
  redis.call('EXPIRE', key, ttl)
end
local function shift(key, n, s, at, sign, half)
  local n0, s0, at0 = activity(key)
  local t = math.max(at0, at)
  local f0, f = 2 ^ (-(t - at0) / half), 2 ^ (-(t - at) / half)
  n0, s0 = math.max(0, n0 * f0 + sign * n * f), math.max(0, s0 * f0 + sign * s * f)
  redis.call('HSET', key, '_n', fmt(n0), '_s', fmt(s0), '_t', string.format('%.0f', t))
end
"""

# The decision path's write for one budget period. ARGV: decision ttl, reservation ttl, activity
# half-life (ms), then per draft: decision key, reservation id, amount (0: none), decision json,
# json if the budget is short, the person's profile key ('' : none), the device's share of it,
# context bucket, event time (ms), 1 if the request offered paid search. In order, one atomic
# step: a draft whose decision key exists gets that json back and reserves and counts nothing;
# otherwise its amount is reserved if it fits (``reserve``) and its json stored (1), or its
# if-short json stored (0), and the request is counted (``count``) on the profile and on the
# device's share: one more of its context bucket, and its time-weighted activity.
RESERVE_AND_PUT = _GREEDY_LEDGER + _PROFILE + """
local half = tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 10 do
  local key = ARGV[i]
  local old = redis.call('GET', key)
  if old then
    out[#out + 1] = old
  else
    local ok = 1
    if tonumber(ARGV[i + 2]) > 0 then ok = reserve(ARGV[i + 1], tonumber(ARGV[i + 2])) end
    if ok == 1 then
      redis.call('SET', key, ARGV[i + 3], 'EX', ARGV[1])
    else
      redis.call('SET', key, ARGV[i + 4], 'EX', ARGV[1])
    end
    if ARGV[i + 5] ~= '' then
      local t, srch = tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9])
      count(ARGV[i + 5], ARGV[i + 7], t, srch, half, ARGV[1])
      count(ARGV[i + 6], ARGV[i + 7], t, srch, half, ARGV[1])
    end
    out[#out + 1] = ok
  end
end
commit(ARGV[2])
return out
"""

# The decision path's read for a whole decide batch in one call (keys derived from the prefix;
# read only): per impression, the device's person, the last touches of the person's journey with
# their click marks, the budget ledger and the stored decision. ARGV: prefix, max touches, then per impression: device id, budget hash key, decision key.
# Returns {msgpack string, stored decision or false per impression}: the msgpack string (one
# reply to parse, not hundreds) is a flat array with, per impression, 9 values: person, score,
# device count, {touch json...}, {click flag or false...}, budget, spent, reserved, {field,
# value, ...} (the person's profile, HGETALL: context buckets and the _n, _s, _t activity). (Stored
# decisions are binary msgpack themselves, so they travel as separate replies.)
DECIDE_CONTEXTS = """
local prefix, n = ARGV[1], tonumber(ARGV[2])
local out, stored, ledgers = {}, {}, {}
for i = 3, #ARGV, 3 do
  local dev = ARGV[i]
  local dkey = prefix .. 'id:dev:' .. dev
  local ps = redis.call('HMGET', dkey, 'person', 'score')
  local person, score = ps[1], ps[2] or '1'
  local ndev = 1
  if not person then
    person = 'd:' .. dev
  else
    ndev = math.max(1, redis.call('SCARD', prefix .. 'id:person:' .. person))
  end
  local ids = redis.call('ZRANGE', prefix .. 'jidx:' .. person, -n, -1)
  local touches, clicks = {}, {}
  if #ids > 0 then
    touches = redis.call('HMGET', prefix .. 'jdata:' .. person, unpack(ids))
    clicks = redis.call('HMGET', prefix .. 'jclick:' .. person, unpack(ids))
  end
  local b = ledgers[ARGV[i + 1]]
  if not b then  -- a batch's imps share one or two ledgers: each read once
    b = redis.call('HMGET', ARGV[i + 1], 'budget', 'spent', 'reserved')
    ledgers[ARGV[i + 1]] = b
  end
  out[#out + 1] = person
  out[#out + 1] = score
  out[#out + 1] = ndev
  out[#out + 1] = touches
  out[#out + 1] = clicks
  out[#out + 1] = b[1] or '0'
  out[#out + 1] = b[2] or '0'
  out[#out + 1] = b[3] or '0'
  out[#out + 1] = redis.call('HGETALL', prefix .. 'ctx:' .. person)
  stored[#stored + 1] = redis.call('GET', ARGV[i + 2])
end
return {cmsgpack.pack(out), unpack(stored)}
"""

# The identity graph's verdicts (keys derived from the prefix, standalone Redis only).
# ARGV: prefix, identity ttl, journey ttl, activity half-life (ms), then per device 3 fields:
# device id, person id ('' = unlink: the device stands alone again), confidence. Each device in
# one step: its own touches (Touch.device_id == device) and their click marks move from the old
# person's journey to the new one, and so does its share of the old person's profile
# (ctxdev:<device>:<old>): its bucket counts and activity (``shift``) are subtracted from
# ctx:<old> (buckets at 0 removed, the hash deleted when none is left) and added to ctx:<new> and
# ctxdev:<device>:<new>. The moved touches' scores, click marks and writes go in one command each
# (per 500). Returns how many devices changed person.
ASSIGN_IDENTITIES = _PROFILE + """
local p, idttl, jttl, half = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local function move_profile(dev, old, new)
  local share = p .. 'ctxdev:' .. dev .. ':' .. old
  local fields = redis.call('HGETALL', share)
  if #fields == 0 then return end
  local from, to, to_share = p .. 'ctx:' .. old, p .. 'ctx:' .. new, p .. 'ctxdev:' .. dev .. ':' .. new
  for k = 1, #fields, 2 do
    local f, v = fields[k], tonumber(fields[k + 1])
    if string.sub(f, 1, 1) ~= '_' then
      redis.call('HINCRBY', to, f, v)
      redis.call('HINCRBY', to_share, f, v)
      if redis.call('HINCRBY', from, f, -v) <= 0 then redis.call('HDEL', from, f) end
    end
  end
  local n, s, at = activity(share)
  shift(to, n, s, at, 1, half)
  shift(to_share, n, s, at, 1, half)
  shift(from, n, s, at, -1, half)
  redis.call('EXPIRE', to, jttl)
  redis.call('EXPIRE', to_share, jttl)
  redis.call('DEL', share)
  local left = redis.call('HKEYS', from)
  for k = 1, #left do
    if string.sub(left[k], 1, 1) ~= '_' then return end
  end
  redis.call('DEL', from)
end
-- Whether a stored touch (msgspec JSON: no spaces, nothing escaped in a device id of plain
-- characters) is the device's, without decoding it when its text settles it: one whose text
-- does not hold the id at all is not, one that holds the "device_id":"<id>" member is.
local function own(raw, dev)
  if string.find(dev, '^[%w%-_.:~]+$') then
    if not string.find(raw, dev, 1, true) then return false end
    if string.find(raw, '"device_id":"' .. dev .. '"', 1, true) then return true end
  end
  local ok, t = pcall(cjson.decode, raw)
  return ok and type(t) == 'table' and t.device_id == dev
end
local changed = 0
for i = 5, #ARGV, 3 do
  local dev, person, conf = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local dkey = p .. 'id:dev:' .. dev
  local alone = 'd:' .. dev
  local linked = redis.call('HGET', dkey, 'person')
  local old = linked or alone
  local new = alone
  if person ~= '' then new = person end
  if old ~= new then
    changed = changed + 1
    move_profile(dev, old, new)
    local sidx, sdat, scl = p .. 'jidx:' .. old, p .. 'jdata:' .. old, p .. 'jclick:' .. old
    local didx, ddat, dcl = p .. 'jidx:' .. new, p .. 'jdata:' .. new, p .. 'jclick:' .. new
    local all = redis.call('HGETALL', sdat)
    local moved, data = {}, {}
    for k = 1, #all, 2 do
      if own(all[k + 1], dev) then
        moved[#moved + 1] = all[k]
        data[#data + 1] = all[k]
        data[#data + 1] = all[k + 1]
      end
    end
    if #moved > 0 then
      for k = 1, #moved, 500 do
        local last = math.min(k + 499, #moved)
        local part = {unpack(moved, k, last)}
        local scores = redis.call('ZMSCORE', sidx, unpack(part))
        local clicked = redis.call('HMGET', scl, unpack(part))
        local z, c = {}, {}
        for j = 1, #part do
          if scores[j] then
            z[#z + 1] = scores[j]
            z[#z + 1] = part[j]
          end
          if clicked[j] then
            c[#c + 1] = part[j]
            c[#c + 1] = '1'
          end
        end
        if #z > 0 then redis.call('ZADD', didx, unpack(z)) end
        redis.call('HSET', ddat, unpack(data, 2 * k - 1, 2 * last))
        if #c > 0 then redis.call('HSET', dcl, unpack(c)) end
        redis.call('ZREM', sidx, unpack(part))
        redis.call('HDEL', sdat, unpack(part))
        redis.call('HDEL', scl, unpack(part))
      end
      redis.call('EXPIRE', didx, jttl)
      redis.call('EXPIRE', ddat, jttl)
      if redis.call('EXISTS', dcl) == 1 then redis.call('EXPIRE', dcl, jttl) end
    end
  end
  if linked and linked ~= person then redis.call('SREM', p .. 'id:person:' .. linked, dev) end
  if person == '' then
    redis.call('DEL', dkey)
  else
    redis.call('HSET', dkey, 'person', person, 'score', conf)
    redis.call('EXPIRE', dkey, idttl)
    local pset = p .. 'id:person:' .. person
    redis.call('SADD', pset, dev)
    redis.call('EXPIRE', pset, idttl)
  end
end
return changed
"""

# ARGV: prefix, then device ids. Returns per device {person, {devices of that person}} (the
# device alone, as 'd:<device>', when unlinked). Read only.
IDENTITY_PEERS = """
local p = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local dev = ARGV[i]
  local person = redis.call('HGET', p .. 'id:dev:' .. dev, 'person')
  if person then
    out[#out + 1] = {person, redis.call('SMEMBERS', p .. 'id:person:' .. person)}
  else
    out[#out + 1] = {'d:' .. dev, {dev}}
  end
end
return out
"""

# KEYS: the IP's device set. ARGV: cap, ttl, device ids. Adds devices while the set holds fewer
# than cap; returns the set's members.
IP_DEVICES = """
local cap = tonumber(ARGV[1])
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 and redis.call('SCARD', KEYS[1]) < cap then
    redis.call('SADD', KEYS[1], ARGV[i])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('SMEMBERS', KEYS[1])
"""

# Which decisions are not stored, without reading them (KBs of logged state each). Read only; keys
# derived from the prefix. ARGV: prefix, then decision ids. Returns the 1-based positions (among
# the ids) of those with no stored decision: usually none.
MISSING_DECISIONS = """
local p, out = ARGV[1] .. 'dec:', {}
for i = 2, #ARGV do
  if redis.call('EXISTS', p .. ARGV[i]) == 0 then out[#out + 1] = i - 1 end
end
return out
"""

# KEYS: parked zset, parked data hash. ARGV: per item id, event time, payload. Parks each item
# whose id is not parked yet (one ZADD for the chunk).
PARK = """
local due = {}
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    due[#due + 1] = ARGV[i + 1]
    due[#due + 1] = ARGV[i]
  end
end
if #due > 0 then redis.call('ZADD', KEYS[1], unpack(due)) end
return 1
"""

# KEYS: watermark hash. ARGV: partition, event time.
ADVANCE_WATERMARK = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""

# The stream handlers' effects, each atomic with its outbox claim: a redelivery finds the claim
# and returns the stored payload without writing anything again. Each returns {applied 0/1, payload},
# the payload empty when applied (the caller sent it: echoing ~4 KB of experience per event back
# was a tenth of a stream worker's Redis traffic for nothing).

# Shared by the chunked effect scripts (prepended to each): take an effect's claim, or return the
# payload a first delivery stored; the person a device resolves to, looked up once per chunk.
_CHUNK_HELPERS = """
local function claimed(out, key, payload, ttl)
  local stored = redis.call('SET', key, payload, 'NX', 'GET', 'EX', ttl)
  if stored then
    out[#out + 1] = 0
    out[#out + 1] = stored
    return true
  end
  out[#out + 1] = 1
  out[#out + 1] = ''
  return false
end
local function person_of(p, persons, dev)
  local person = persons[dev]
  if not person then
    person = redis.call('HGET', p .. 'id:dev:' .. dev, 'person') or ('d:' .. dev)
    persons[dev] = person
  end
  return person
end
"""

# A chunk of auction results in one call (fewer, larger commands: the Python client's per-command
# cost dominates), each in one step: claim; settle its reservation; when won, store its touch on
# the journey of the person its device resolves to and open its window. Redis's own time goes
# mostly to each redis.call (Lua glue and argument copies), not to the command it runs, so the
# script is atomic and does once per chunk what need not be done per result: open reservations
# read in one HMGET and settled in one write each per ledger, one person lookup per device, old touches dropped (those before the latest
# drop-before of the person's touches in the chunk) and TTLs set once per journey, windows opened
# in one ZADD. The claim is taken first with SET NX GET (a result repeated in the chunk finds it);
# an open reservation needs no check of the settled hash (settling removes it, and a settled id is
# never reserved again). Keys are derived from the prefix (standalone Redis only). ARGV: prefix,
# claim ttl, settled ttl, then per result 11 fields: claim key, device id, payload, ledger suffix
# (campaign:period), decision id, cost, has touch (0/1), touch time, touch json, drop-before ms,
# window close ms. Returns {applied, payload, ...}.
RECORD_RESULTS = _CHUNK_HELPERS + """
local p, ttl = ARGV[1], ARGV[2]
local out, ledgers, order, persons, journeys, jorder, windows = {}, {}, {}, {}, {}, {}, {}
for i = 4, #ARGV, 11 do
  if not claimed(out, p .. 'claim:' .. ARGV[i], ARGV[i + 2], ttl) then
    local id, led = ARGV[i + 4], ARGV[i + 3]
    local l = ledgers[led]
    if not l then
      l = {ids = {}, at = {}, seen = {}}
      ledgers[led] = l
      order[#order + 1] = led
    end
    if not l.seen[id] then
      l.seen[id] = true
      l.ids[#l.ids + 1] = id
      l.at[#l.at + 1] = i
    end
    if ARGV[i + 6] == '1' then
      local person = person_of(p, persons, ARGV[i + 1])
      local j = journeys[person]
      if not j then
        j = {idx = p .. 'jidx:' .. person, dat = p .. 'jdata:' .. person, drop = tonumber(ARGV[i + 9])}
        journeys[person] = j
        jorder[#jorder + 1] = j
      else
        j.drop = math.max(j.drop, tonumber(ARGV[i + 9]))
      end
      redis.call('ZADD', j.idx, ARGV[i + 7], id)
      redis.call('HSET', j.dat, id, ARGV[i + 8])
      windows[#windows + 1] = ARGV[i + 10]
      windows[#windows + 1] = id
    end
  end
end
for _, j in ipairs(jorder) do
  local old = redis.call('ZRANGEBYSCORE', j.idx, '-inf', '(' .. string.format('%d', j.drop))
  if #old > 0 then
    redis.call('ZREM', j.idx, unpack(old))
    redis.call('HDEL', j.dat, unpack(old))
  end
  redis.call('EXPIRE', j.idx, ttl)
  redis.call('EXPIRE', j.dat, ttl)
end
if #windows > 0 then redis.call('ZADD', p .. 'windows', unpack(windows)) end
for _, led in ipairs(order) do
  local l, resv = ledgers[led], p .. 'resv:' .. led
  local amounts = redis.call('HMGET', resv, unpack(l.ids))
  local reserved, spent, open, settled = 0, 0, {}, {}
  for k = 1, #l.ids do
    if amounts[k] then
      local cost = ARGV[l.at[k] + 5]
      reserved = reserved + tonumber(amounts[k])
      spent = spent + tonumber(cost)
      open[#open + 1] = l.ids[k]
      settled[#settled + 1] = l.ids[k]
      settled[#settled + 1] = cost
    end
  end
  if #open > 0 then
    local budget, done = p .. 'budget:' .. led, p .. 'settled:' .. led
    redis.call('HINCRBY', budget, 'reserved', string.format('%d', -reserved))
    redis.call('HINCRBY', budget, 'spent', string.format('%d', spent))
    redis.call('HDEL', resv, unpack(open))
    redis.call('HSET', done, unpack(settled))
    redis.call('EXPIRE', done, ARGV[3])
  end
end
return out
"""

# A chunk of clicks in one call (as RECORD_RESULTS), each in one step with its claim: the click
# marked on the journey of the person its device resolves to (one lookup per device, the TTL set
# once per journey). ARGV: prefix, ttl, then per click 4 fields: claim key, device id, decision
# id, payload. Returns {applied, payload, ...}.
RECORD_CLICKS = _CHUNK_HELPERS + """
local p, ttl = ARGV[1], ARGV[2]
local out, persons, marked, keys = {}, {}, {}, {}
for i = 3, #ARGV, 4 do
  if not claimed(out, p .. 'claim:' .. ARGV[i], ARGV[i + 3], ttl) then
    local key = p .. 'jclick:' .. person_of(p, persons, ARGV[i + 1])
    redis.call('HSET', key, ARGV[i + 2], '1')
    if not marked[key] then
      marked[key] = true
      keys[#keys + 1] = key
    end
  end
end
for _, key in ipairs(keys) do redis.call('EXPIRE', key, ttl) end
return out
"""

# Conversions' join contexts, a chunk per call (as RECORD_RESULTS: the client's per-command cost
# dominates). Read only. ARGV: prefix, then per conversion 4 fields: claim key, user id ('' if
# none), device id ('' if none), since_ms. Returns per conversion {stored join or false, person,
# {touch json...}, {click flag...}}.
JOIN_CONTEXTS = """
local p = ARGV[1]
local out = {}
for i = 2, #ARGV, 4 do
  local stored = redis.call('GET', p .. 'claim:' .. ARGV[i])
  local person = ARGV[i + 1]
  if person == '' and ARGV[i + 2] ~= '' then
    person = redis.call('HGET', p .. 'id:dev:' .. ARGV[i + 2], 'person') or ('d:' .. ARGV[i + 2])
  end
  local ids = {}
  if not stored and person ~= '' then
    ids = redis.call('ZRANGEBYSCORE', p .. 'jidx:' .. person, ARGV[i + 3], '+inf')
  end
  if #ids == 0 then
    out[#out + 1] = {stored or false, person, {}, {}}
  else
    out[#out + 1] = {false, person, redis.call('HMGET', p .. 'jdata:' .. person, unpack(ids)),
                     redis.call('HMGET', p .. 'jclick:' .. person, unpack(ids))}
  end
end
return out
"""

# Conversions' join records, a chunk per call, each in one step: a conversion already claimed
# returns its stored record; one crediting a decision whose window is final is claimed late;
# otherwise its credits are stored under its id, then claimed. ARGV: prefix, ttl, then per
# conversion: claim key, payload, late payload, conversion id, credit count n, n (decision,
# micros) pairs. Returns {applied, payload, ...} (the payload empty when it was ours).
RECORD_JOINS = """
local p, ttl = ARGV[1], ARGV[2]
local out = {}
local i = 3
while i <= #ARGV do
  local claim, conv, n = p .. 'claim:' .. ARGV[i], ARGV[i + 3], tonumber(ARGV[i + 4])
  local first, last = i + 5, i + 4 + 2 * n
  local stored = redis.call('GET', claim)
  if stored then
    out[#out + 1] = 0
    out[#out + 1] = stored
  else
    local late = false
    for k = first, last, 2000 do  -- the final claims of its decisions, 1,000 per EXISTS
      local finals = {}
      for m = k, math.min(k + 1998, last), 2 do finals[#finals + 1] = p .. 'claim:final:' .. ARGV[m] end
      if redis.call('EXISTS', unpack(finals)) > 0 then
        late = true
        break
      end
    end
    if late then
      redis.call('SET', claim, ARGV[i + 2], 'EX', ttl)
      out[#out + 1] = 1
      out[#out + 1] = ARGV[i + 2]
    else
      for k = first, last, 2 do
        local key = p .. 'credit:' .. ARGV[k]
        redis.call('HSET', key, conv, ARGV[k + 1])
        redis.call('EXPIRE', key, ttl)
      end
      redis.call('SET', claim, ARGV[i + 1], 'EX', ttl)
      out[#out + 1] = 1
      out[#out + 1] = ''
    end
  end
  i = last + 1
end
return out
"""

# The user DB (``ProfileStore``); keys derived from the prefix. A person's share-holding devices:
# those in its device set, and its own device for a ``d:<device>`` person.
_SHARE_DEVICES = """
local function share_devices(p, person)
  local devs = redis.call('SMEMBERS', p .. 'id:person:' .. person)
  if string.sub(person, 1, 2) == 'd:' then
    local own = string.sub(person, 3)
    local seen = false
    for _, d in ipairs(devs) do if d == own then seen = true end end
    if not seen then devs[#devs + 1] = own end
  end
  return devs
end
"""

# Read only. ARGV: prefix, phase (1: persons found by their device set, 2: by their profile,
# 3: by their journey, 4: by their clicks), then person ids. A person is listed in the first phase
# that finds it (a later phase skips it when a key of an earlier one exists). Returns one msgpack
# string: per person {person, {device, score, ...}, profile HGETALL, {touch json...} oldest first,
# {clicked decision id...}, {device, share HGETALL, ...}}.
EXPORT_PROFILES = _SHARE_DEVICES + """
local p, phase = ARGV[1], tonumber(ARGV[2])
local found = {'id:person:', 'ctx:', 'jidx:'}
local out = {}
for i = 3, #ARGV do
  local person = ARGV[i]
  local listed = false
  for k = 1, phase - 1 do
    if redis.call('EXISTS', p .. found[k] .. person) == 1 then listed = true end
  end
  if not listed then
    local links = {}
    for _, d in ipairs(redis.call('SMEMBERS', p .. 'id:person:' .. person)) do
      links[#links + 1] = d
      links[#links + 1] = redis.call('HGET', p .. 'id:dev:' .. d, 'score') or '1'
    end
    local shares = {}
    for _, d in ipairs(share_devices(p, person)) do
      local f = redis.call('HGETALL', p .. 'ctxdev:' .. d .. ':' .. person)
      if #f > 0 then
        shares[#shares + 1] = d
        shares[#shares + 1] = f
      end
    end
    local ids = redis.call('ZRANGE', p .. 'jidx:' .. person, 0, -1)
    local touches = {}
    for k = 1, #ids, 1000 do
      local part = redis.call('HMGET', p .. 'jdata:' .. person, unpack(ids, k, math.min(k + 999, #ids)))
      for j = 1, #part do
        if part[j] then touches[#touches + 1] = part[j] end
      end
    end
    out[#out + 1] = {person, links, redis.call('HGETALL', p .. 'ctx:' .. person), touches,
                     redis.call('HKEYS', p .. 'jclick:' .. person), shares}
  end
end
return cmsgpack.pack(out)
"""

# ARGV: prefix, identity ttl, journey ttl, then one msgpack row per person: {person, {{device,
# confidence}...}, {{bucket, n}...}, {_n, _s, _t}, {{device, {{bucket, n}...}, _n, _s, _t}...},
# {{decision id, event time, touch json}...}, {clicked decision id...}} (numbers as strings). Each
# row, one atomic step, replaces the person's links (devices of its set not in the row unlinked; a
# row's device linked elsewhere leaves that person's set), profile, shares, journey and clicks.
# Returns how many rows were written.
IMPORT_PROFILES = _SHARE_DEVICES + """
local p, idttl, ttl = ARGV[1], ARGV[2], ARGV[3]
local function put_profile(key, counts, n, s, t)
  redis.call('DEL', key)
  if #counts == 0 then return end
  for _, c in ipairs(counts) do redis.call('HSET', key, c[1], c[2]) end
  redis.call('HSET', key, '_n', n, '_s', s, '_t', t)
  redis.call('EXPIRE', key, ttl)
end
for i = 4, #ARGV do
  local r = cmsgpack.unpack(ARGV[i])
  local person, links, counts, act, shares, touches, clicks = r[1], r[2], r[3], r[4], r[5], r[6], r[7]
  local pset = p .. 'id:person:' .. person
  local keep = {}
  for _, l in ipairs(links) do keep[l[1]] = true end
  for _, d in ipairs(share_devices(p, person)) do redis.call('DEL', p .. 'ctxdev:' .. d .. ':' .. person) end
  for _, l in ipairs(links) do redis.call('DEL', p .. 'ctxdev:' .. l[1] .. ':' .. person) end
  for _, d in ipairs(redis.call('SMEMBERS', pset)) do
    if not keep[d] and redis.call('HGET', p .. 'id:dev:' .. d, 'person') == person then
      redis.call('DEL', p .. 'id:dev:' .. d)
    end
  end
  redis.call('DEL', pset)
  for _, l in ipairs(links) do
    local dkey = p .. 'id:dev:' .. l[1]
    local was = redis.call('HGET', dkey, 'person')
    if was and was ~= person then redis.call('SREM', p .. 'id:person:' .. was, l[1]) end
    redis.call('HSET', dkey, 'person', person, 'score', l[2])
    redis.call('EXPIRE', dkey, idttl)
    redis.call('SADD', pset, l[1])
  end
  if #links > 0 then redis.call('EXPIRE', pset, idttl) end
  put_profile(p .. 'ctx:' .. person, counts, act[1], act[2], act[3])
  for _, sh in ipairs(shares) do
    put_profile(p .. 'ctxdev:' .. sh[1] .. ':' .. person, sh[2], sh[3], sh[4], sh[5])
  end
  local idx, dat, cl = p .. 'jidx:' .. person, p .. 'jdata:' .. person, p .. 'jclick:' .. person
  redis.call('DEL', idx, dat, cl)
  for _, t in ipairs(touches) do
    redis.call('ZADD', idx, t[2], t[1])
    redis.call('HSET', dat, t[1], t[3])
  end
  if #touches > 0 then
    redis.call('EXPIRE', idx, ttl)
    redis.call('EXPIRE', dat, ttl)
  end
  for _, c in ipairs(clicks) do redis.call('HSET', cl, c, '1') end
  if #clicks > 0 then redis.call('EXPIRE', cl, ttl) end
end
return #ARGV - 3
"""
