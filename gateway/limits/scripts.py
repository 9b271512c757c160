"""The two Lua scripts that make a limit check atomic across replicas: reserve, and settle (or refund).

One Redis hash per scope (KEYS: one per scope, `<prefix>:c:<scope>`), so that a reserve is two commands per
scope (HGET, HSET) and a settle four. Inside a script every `redis.call` and every value passed to or from one
costs µs of its own (more than the command itself), so a scope's counters travel as one packed field:

- `s`: eleven doubles (`struct.pack('<ddddddddddd')`, Redis' own Lua library): the UTC minute (its number) and
  its requests and settled tokens; the UTC day (`YYYYMMDD`) and its settled nano-dollars; the UTC month
  (`YYYYMM`) and its settled nano-dollars; the holds' sums (tokens, nano-dollars) and count (the requests in
  flight); and a time (ms) before which no hold's lease ends (0: no hold), so expired holds are looked for
  only when one may have expired;
- `h:<request id>`: one hold, three doubles (`HOLD`): its lease end (ms), tokens and nano-dollars.

A window is counted under its id: a replica whose clock is in a later window starts it from zero; one whose
clock lags (an earlier window than stored) counts into the stored one. All the integers stay far below 2^53,
which doubles hold exactly.
"""

from __future__ import annotations

from gateway.limits.store import MONTH_TTL

FORMAT = "<ddddddddddd"
"""`s`'s layout (struct / Python's `struct` alike): minute, requests, tokens, day, nano, month, nano, held
tokens, held nano, holds, earliest lease end."""
HOLD = "<ddd"
"""A hold's layout: lease end (ms), tokens, nano-dollars."""

_STATE = f"""
-- a scope's counters, in the windows ARGV[w .. w + 2] (a later window starts from zero); `v`: the packed `s`
local function state(v, w)
  local s = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
  if v then s = {{struct.unpack('{FORMAT}', v)}} end
  local minute, day, month = tonumber(ARGV[w]), tonumber(ARGV[w + 1]), tonumber(ARGV[w + 2])
  if s[1] < minute then s[1], s[2], s[3] = minute, 0, 0 end
  if s[4] < day then s[4], s[5] = day, 0 end
  if s[6] < month then s[6], s[7] = month, 0 end
  return s, not v
end
local function packed(s)
  return struct.pack('{FORMAT}', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11])
end
"""

RESERVE = (
    _STATE
    + f"""
-- expired holds (their replica died): dropped with their sums, the earliest lease end recomputed; written at
-- once (the request may still be refused)
local function purge(key, s, now)
  local all = redis.call('HGETALL', key)
  local gone, next_end = {{}}, 0
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == 'h:' then
      local ends, t, u = struct.unpack('{HOLD}', all[i + 1])
      if ends <= now then
        s[8], s[9], s[10] = s[8] - t, s[9] - u, s[10] - 1
        table.insert(gone, f)
      elseif next_end == 0 or ends < next_end then
        next_end = ends
      end
    end
  end
  s[11] = next_end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  redis.call('HSET', key, 's', packed(s))
end
-- ARGV: now ms, hold field, hold value, tokens, nano, lease end ms, minute, day, month, then 5 caps per
-- scope (-1: none): rpm, tpm, concurrency, nano-dollars per day, per month
local now, field, hold = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local est_t, est_u, ends = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local seen, fresh = {{}}, {{}}
for i, key in ipairs(KEYS) do
  local v = redis.call('HGET', key, 's')
  local s, new = state(v, 7)
  if s[11] > 0 and s[11] <= now then purge(key, s, now) end
  local a = 9 + (i - 1) * 5
  local rpm, tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local uday, umon = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local toks = s[3] + s[8]
  if conc >= 0 and s[10] + 1 > conc then return {{0, i - 1, 'concurrency', conc, s[10]}} end
  if rpm >= 0 and s[2] + 1 > rpm then return {{0, i - 1, 'requests', rpm, s[2]}} end
  if tpm >= 0 and toks + est_t > tpm then return {{0, i - 1, 'tokens', tpm, toks}} end
  if uday >= 0 and s[5] + s[9] + est_u > uday then return {{0, i - 1, 'usd_day', uday, s[5] + s[9]}} end
  if umon >= 0 and s[7] + s[9] + est_u > umon then return {{0, i - 1, 'usd_month', umon, s[7] + s[9]}} end
  seen[i], fresh[i] = s, new
end
local out = {{1}}
for i, key in ipairs(KEYS) do
  local s = seen[i]
  s[2], s[8], s[9], s[10] = s[2] + 1, s[8] + est_t, s[9] + est_u, s[10] + 1
  if s[11] == 0 or ends < s[11] then s[11] = ends end
  redis.call('HSET', key, 's', packed(s), field, hold)
  if fresh[i] then redis.call('EXPIRE', key, {MONTH_TTL}) end
  out[#out + 1] = s[2]
  out[#out + 1] = s[3] + s[8]
  out[#out + 1] = s[5]
  out[#out + 1] = s[7]
end
return out
"""
)

SETTLE = (
    _STATE
    + f"""
-- ARGV: hold field, tokens used, nano-dollars spent, minute, day, month
local field, t, u = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {{}}
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 's', field)
  local s = state(v[1], 4)
  if v[2] then  -- else no hold left to drop (its lease ended and a reserve purged it)
    local _, held_t, held_u = struct.unpack('{HOLD}', v[2])
    redis.call('HDEL', key, field)
    s[8], s[9], s[10] = s[8] - held_t, s[9] - held_u, s[10] - 1
    if s[10] == 0 then s[11] = 0 end
  end
  s[3], s[5], s[7] = s[3] + t, s[5] + u, s[7] + u
  redis.call('HSET', key, 's', packed(s))
  redis.call('EXPIRE', key, {MONTH_TTL})
  out[#out + 1] = s[2]
  out[#out + 1] = s[3] + s[8]
  out[#out + 1] = s[5]
  out[#out + 1] = s[7]
end
return out
"""
)

USAGE = (
    _STATE
    + """
-- ARGV: minute, day, month
local s = state(redis.call('HGET', KEYS[1], 's'), 1)
return {s[2], s[3] + s[8], s[5], s[7], s[10]}
"""
)
