"""The Lua scripts every instance runs in Redis (EVALSHA; Redis runs one
script at a time, so each is atomic).

Nothing read inside a script is trusted: anyone who can reach the Redis can
write to the keys. A key of the wrong type is replaced, a malformed hash
entry is dropped or counted as absent, a counter that is not a non-negative
integer starts a new count; no script raises on what another client wrote
(a script that raised would leave the next ban unstored and unpublished).

Window counters (``PREFIX:w:EGRESS|POOL|WINDOW``) are hashes:

- ``b``: the base, the highest count an instance had seen of the window
  before the counter was lost (Redis restarted empty, the key removed or
  tampered with); 0 for a counter that was never lost;
- ``a``: the weight added (granted, or written back after an outage) since
  the counter began;
- ``r``: the highest use Binance reported (the used-weight headers);
- ``e``: the counter's epoch, a token the instance that began it chose.

The fleet's use is ``max(b + a, r)``: each grant is counted once (Binance's
report is a floor, never added). Each call carries the caller's last view of
the window (its epoch, its ``b + a`` and ``r``): when the epoch differs, the
counter was lost since, and the view raises the base: a restarted Redis is
re-seeded from what instances know, and what is granted after the restart
adds to it.

A view is one instance's, and lags what the others were granted since its
last reply: a re-seeded base is a floor, not the fleet's use. So each call
also carries the caller's id and its own use of the window (what it was
granted, through Redis or locally), kept as ``o:ID``; in a counter that was
lost, the fleet's use is at least their sum, exact once every instance has
called. A counter re-seeded
from a view (``l`` set: it was lost) grants a caller no more than
``budget / live`` in all (its own use counted) until as many instances as
the caller counts live have called: what each grants then stays within its
fair share, whatever the others had been granted.
"""

from __future__ import annotations

# Shared helpers, prepended to the window scripts.
_WINDOW = """
local function count(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n < 0 or n >= 1e15 then return nil end
  return math.floor(n)
end
local function load(key, view_e, view_g, view_r, new_e, id, own)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'hash' and t ~= 'none' then redis.call('DEL', key) end
  local v = redis.call('HMGET', key, 'b', 'a', 'r', 'e', 'l')
  local b, a, r, e, l = count(v[1]), count(v[2]), count(v[3]), v[4], v[5] == '1'
  if type(e) ~= 'string' or #e == 0 or #e > 100 or b == nil or a == nil then
    b, a, e, l = 0, 0, new_e, false  -- new, lost or tampered with: a new count
  end
  if r == nil then r = 0 end
  if view_e ~= e then b = math.max(b, count(view_g) or 0) end
  if #view_e > 0 and view_e ~= e then l = true end  -- re-seeded from a view
  r = math.max(r, count(view_r) or 0)
  -- the instances' own uses: their sum is a floor of the fleet's use
  local others, callers, mine = 0, 0, count(own) or 0
  local all = redis.call('HGETALL', key)
  for i = 1, math.min(#all, 2000), 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == 'o:' then
      local n = count(all[i + 1])
      if n ~= nil then
        if f == 'o:' .. id then mine = math.max(mine, n)
        else others, callers = others + n, callers + 1 end
      end
    end
  end
  return b, a, r, e, l, mine, others, callers + 1
end
local function save(key, b, a, r, e, ttl, l, id, mine)
  redis.call('HSET', key, 'b', b, 'a', a, 'r', r, 'e', e, 'l', l and '1' or '0',
             'o:' .. id, mine)
  redis.call('PEXPIRE', key, ttl)
end
"""

# KEYS[1] window; ARGV weight, budget, ttl ms, view epoch, view count,
# view reported, new epoch, caller's id, its own use, live instances
# -> {taken 0/1, fleet count, r, epoch}
RESERVE = _WINDOW + """
local b, a, r, e, l, mine, others, callers = load(KEYS[1], ARGV[4], ARGV[5], ARGV[6],
                                                  ARGV[7], ARGV[8], ARGV[9])
local weight, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = b + a
if l then used = math.max(used, mine + others) end
local fits = math.max(used, r) + weight <= budget
if fits and l and callers < (tonumber(ARGV[10]) or 1) then
  fits = mine + weight <= math.floor(budget / math.max(1, tonumber(ARGV[10]) or 1))
end
if not fits then
  save(KEYS[1], b, a, r, e, ARGV[3], l, ARGV[8], mine)
  return {0, used, r, e}
end
a = a + weight
mine = mine + weight
save(KEYS[1], b, a, r, e, ARGV[3], l, ARGV[8], mine)
if l then return {1, math.max(b + a, mine + others), r, e} end
return {1, b + a, r, e}
"""

# KEYS[1] window; ARGV ttl ms, view epoch, view count, reported, new epoch,
# caller's id, its own use, added -> {fleet count, r, epoch}. ``added``:
# weight granted while Redis was away.
RECONCILE = _WINDOW + """
local b, a, r, e, l, mine, others = load(KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                                         ARGV[6], ARGV[7])
a = a + (count(ARGV[8]) or 0)
save(KEYS[1], b, a, r, e, ARGV[1], l, ARGV[6], mine)
if l then return {math.max(b + a, mine + others), r, e} end
return {b + a, r, e}
"""

# KEYS[1] window; ARGV weight, epoch, caller's id -> 1 if the weight was
# taken back (a reservation Redis counted after the caller had been answered
# "no" locally)
RELEASE = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[1], 'e') ~= ARGV[2] then return 0 end
local a = tonumber(redis.call('HGET', KEYS[1], 'a'))
if a == nil or a ~= a or a < 0 then return 0 end
redis.call('HSET', KEYS[1], 'a', math.max(0, math.floor(a - tonumber(ARGV[1]))))
local o = tonumber(redis.call('HGET', KEYS[1], 'o:' .. ARGV[3]))
if o ~= nil and o == o and o >= 0 then
  redis.call('HSET', KEYS[1], 'o:' .. ARGV[3], math.max(0, math.floor(o - tonumber(ARGV[1]))))
end
return 1
"""

# KEYS[1] window -> {b + a, r, epoch} (nothing written)
READ_WINDOW = """
local function count(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n < 0 or n >= 1e15 then return nil end
  return math.floor(n)
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return {0, 0, ''} end
local v = redis.call('HMGET', KEYS[1], 'b', 'a', 'r', 'e', 'l')
local b, a, e = count(v[1]), count(v[2]), v[4]
if type(e) ~= 'string' or b == nil or a == nil then return {0, count(v[3]) or 0, ''} end
local g = b + a
if v[5] ~= '1' then return {g, count(v[3]) or 0, e} end
local all, own = redis.call('HGETALL', KEYS[1]), 0
for i = 1, math.min(#all, 2000), 2 do
  if string.sub(all[i], 1, 2) == 'o:' then own = own + (count(all[i + 1]) or 0) end
end
return {math.max(g, own), count(v[3]) or 0, e}
"""

# KEYS[1] bans hash; ARGV field, until, value json, channel, message, now,
# longest ban in seconds, the two ban statuses -> 1 stored and published, 0
# a later ban was known. Entries that are not [finite until, a ban status,
# cause] ending within the longest ban are dropped, as are ended ones.
SET_BAN = """
local now, longest = tonumber(ARGV[6]), tonumber(ARGV[7])
local status_a, status_b = tonumber(ARGV[8]), tonumber(ARGV[9])
local function ends(raw)
  local ok, ban = pcall(cjson.decode, raw)
  if not ok or type(ban) ~= 'table' then return nil end
  local u, s = ban[1], ban[2]
  if type(u) ~= 'number' or u ~= u or u <= now or u > now + longest then return nil end
  if s ~= status_a and s ~= status_b then return nil end
  if type(ban[3]) ~= 'string' then return nil end
  return u
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then redis.call('DEL', KEYS[1]) end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if not ends(all[i + 1]) then redis.call('HDEL', KEYS[1], all[i]) end
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local u = ends(cur)
  if u and u >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS[1] a hash -> its fields and values, flat (empty for another type)
READ_HASH = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return {} end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] ledger hash; ARGV field, increment, field, increment, ...
# A field that does not hold a non-negative integer starts again from 0.
LEDGER = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then redis.call('DEL', KEYS[1]) end
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and (not string.match(cur, '^%d+$') or #cur > 15) then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], 604800000)
return 1
"""

# KEYS[1] instances zset; ARGV id, ttl ms -> live count (Redis's clock)
HEARTBEAT = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then redis.call('DEL', KEYS[1]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], now + tonumber(ARGV[2]), '+inf')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""

SCRIPTS = {"reserve": RESERVE, "reconcile": RECONCILE, "release": RELEASE,
           "read_window": READ_WINDOW,
           "set_ban": SET_BAN, "read_hash": READ_HASH, "ledger": LEDGER,
           "heartbeat": HEARTBEAT}
