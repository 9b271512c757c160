"""The two Lua scripts that make a limit check atomic across replicas: reserve, and settle (or refund).

KEYS: six per scope (see `store.scope_keys`): in-flight sorted set (score: lease expiry, ms), holds hash
(request id -> "tokens:nano", plus the sums `_t` and `_u`), requests and tokens of the minute, nano-dollars of
the day and of the month.
"""

from __future__ import annotations

from gateway.limits.store import DAY_TTL, MINUTE_TTL, MONTH_TTL

_PURGE = """
local function purge(inflight, held, now)
  local gone = redis.call('ZRANGEBYSCORE', inflight, '-inf', now)
  for _, rid in ipairs(gone) do
    drop(held, rid)
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now) end
end
"""

_DROP = """
local function drop(held, rid)
  local h = redis.call('HGET', held, rid)
  if h then
    local sep = string.find(h, ':', 1, true)
    local t = redis.call('HINCRBY', held, '_t', -tonumber(string.sub(h, 1, sep - 1)))
    redis.call('HINCRBY', held, '_u', -tonumber(string.sub(h, sep + 1)))
    redis.call('HDEL', held, rid)
    return t
  end
end
local function num(v) return tonumber(v or '0') or 0 end
"""

RESERVE = (
    _DROP
    + _PURGE
    + f"""
-- ARGV: now_ms, request id, lease_ms, tokens, nano, scopes, then 5 caps per scope (-1: none)
local now, id, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local est_t, est_u, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local seen = {{}}
for s = 0, n - 1 do
  local k, a = s * 6, 6 + s * 5
  purge(KEYS[k + 1], KEYS[k + 2], now)
  local rpm, tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local uday, umon = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local inflight = redis.call('ZCARD', KEYS[k + 1])
  local c = redis.call('MGET', KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6])
  local h = redis.call('HMGET', KEYS[k + 2], '_t', '_u')
  local reqs, held_u = num(c[1]), num(h[2])
  local toks = num(c[2]) + num(h[1])
  local day, mon = num(c[3]), num(c[4])
  if conc >= 0 and inflight + 1 > conc then return {{0, s, 'concurrency', conc, inflight}} end
  if rpm >= 0 and reqs + 1 > rpm then return {{0, s, 'requests', rpm, reqs}} end
  if tpm >= 0 and toks + est_t > tpm then return {{0, s, 'tokens', tpm, toks}} end
  if uday >= 0 and day + held_u + est_u > uday then return {{0, s, 'usd_day', uday, day + held_u}} end
  if umon >= 0 and mon + held_u + est_u > umon then return {{0, s, 'usd_month', umon, mon + held_u}} end
  seen[s + 1] = {{toks, day, mon}}
end
local out = {{1}}
for s = 0, n - 1 do
  local k = s * 6
  redis.call('ZADD', KEYS[k + 1], now + lease, id)
  redis.call('PEXPIRE', KEYS[k + 1], lease)
  redis.call('HSET', KEYS[k + 2], id, est_t .. ':' .. est_u)
  redis.call('HINCRBY', KEYS[k + 2], '_t', est_t)
  redis.call('HINCRBY', KEYS[k + 2], '_u', est_u)
  redis.call('PEXPIRE', KEYS[k + 2], lease)
  local reqs = redis.call('INCR', KEYS[k + 3])
  if reqs == 1 then redis.call('EXPIRE', KEYS[k + 3], {MINUTE_TTL}) end
  local v = seen[s + 1]
  table.insert(out, reqs)
  table.insert(out, v[1] + est_t)
  table.insert(out, v[2])
  table.insert(out, v[3])
end
return out
"""
)

SETTLE = (
    _DROP
    + f"""
-- ARGV: request id, tokens used, nano-dollars spent, scopes
local id, t, u, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {{}}
for s = 0, n - 1 do
  local k = s * 6
  local held_t = drop(KEYS[k + 2], id)  -- the hold's sum after the drop (nil: no hold left to drop)
  redis.call('ZREM', KEYS[k + 1], id)
  local toks = redis.call('INCRBY', KEYS[k + 4], t)
  redis.call('EXPIRE', KEYS[k + 4], {MINUTE_TTL})
  local day = redis.call('INCRBY', KEYS[k + 5], u)
  redis.call('EXPIRE', KEYS[k + 5], {DAY_TTL})
  local mon = redis.call('INCRBY', KEYS[k + 6], u)
  redis.call('EXPIRE', KEYS[k + 6], {MONTH_TTL})
  table.insert(out, num(redis.call('GET', KEYS[k + 3])))
  table.insert(out, toks + (held_t or num(redis.call('HGET', KEYS[k + 2], '_t'))))
  table.insert(out, day)
  table.insert(out, mon)
end
return out
"""
)

USAGE = """
local function num(v) return tonumber(v or '0') or 0 end
return {num(redis.call('GET', KEYS[3])), num(redis.call('GET', KEYS[4])) + num(redis.call('HGET', KEYS[2], '_t')),
        num(redis.call('GET', KEYS[5])), num(redis.call('GET', KEYS[6])), redis.call('ZCARD', KEYS[1])}
"""
