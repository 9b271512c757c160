"""The Lua script that makes a limit check atomic across replicas: settle (or refund) the requests that ended,
then reserve one, in one call (`CHECK`); and the read of a scope's counters (`USAGE`).

One Redis hash per scope (KEYS: one per scope, `<prefix>:c:<scope>`), so that a reserve is two commands per
scope (HGET, HSET) and a settle three (HGET, HDEL: its hold, whose amounts the caller passes, HSET); a settle that
rides along with a reserve of the same scope shares its read and write (three in all). EXPIRE (32 days) is set on
a scope's first write and its first of each UTC day, not on every one. Inside a script every `redis.call` and
every value passed to or from one costs µs of its own (more than the command itself), so a scope's counters
travel as one packed field:

- `s`: eleven doubles (`struct.pack('<ddddddddddd')`, Redis' own Lua library): the UTC minute (its number) and
  its requests and settled tokens; the UTC day (`YYYYMMDD`) and its settled nano-dollars; the UTC month
  (`YYYYMM`) and its settled nano-dollars; the holds' sums (tokens, nano-dollars) and count (the requests in
  flight); and a time (ms) before which no hold's lease ends (0: no hold), so expired holds are looked for
  only when one may have expired;
- `h:<request id>`: one hold, three doubles (`HOLD`): its lease end (ms), tokens and nano-dollars; a replica's
  block (`gateway.limits.lease`, field `h:L<replica>`) has a fourth, the concurrency slots it holds (`BLOCK`).

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
BLOCK = "<dddd"
"""A replica's block (`gateway.limits.lease`): lease end (ms), tokens, nano-dollars, concurrency slots."""

_STATE = f"""
-- a scope's counters, in the windows ARGV[w .. w + 2] (a later window starts from zero); `v`: the packed `s`
local function state(v, w)
  local s = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
  if v then s = {{struct.unpack('{FORMAT}', v)}} end
  local minute, day, month = tonumber(ARGV[w]), tonumber(ARGV[w + 1]), tonumber(ARGV[w + 2])
  if s[1] < minute then s[1], s[2], s[3] = minute, 0, 0 end
  local rolled = s[4] < day
  if rolled then s[4], s[5] = day, 0 end
  if s[6] < month then s[6], s[7] = month, 0 end
  return s, not v, rolled
end
-- a hold's lease end, tokens, nano-dollars and slots (a request's: 1; a replica's block, `gateway.limits.lease`:
-- a fourth double)
local function hold_of(v)
  local ends, t, u = struct.unpack('{HOLD}', v)
  local n = 1
  if #v >= 32 then n = struct.unpack('<d', v, 25) end
  return ends, t, u, n
end
-- a scope's holds whose lease ended before `now` (their replica died): dropped with their sums from `s`, and the
-- earliest lease end of those left recomputed (s[11])
local function drop_expired(key, s, now)
  local all, gone, next_end = redis.call('HGETALL', key), {{}}, 0
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, 1, 2) == 'h:' then
      local ends, t, u, n = hold_of(all[i + 1])
      if ends <= now then
        s[8], s[9], s[10] = s[8] - t, s[9] - u, s[10] - n
        table.insert(gone, f)
      elseif next_end == 0 or ends < next_end then
        next_end = ends
      end
    end
  end
  s[11] = next_end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
end
local function packed(s)
  return struct.pack('{FORMAT}', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11])
end
"""

CHECK = (
    _STATE
    + f"""
-- ARGV: now ms, minute, day, month, the number of settles, then per settle: its scopes' count, hold field,
-- tokens used, nano-dollars spent, tokens and nano-dollars held (what its reserve held), 1 to count it only
-- while its hold is there (a settle sent again, that may have run already) else 0; then, for a reserve
-- (none when ARGV ends there): hold field, hold value, tokens, nano-dollars, lease end ms, and 5 caps per scope
-- (-1: none): rpm, tpm, concurrency, nano-dollars per day, per month. KEYS: each settle's scopes in turn, then the reserve's. The settles come first, so a request
-- that ended before this one was admitted never counts against it.
local now = tonumber(ARGV[1])
local states, order = {{}}, {{}}
-- a scope's state, read once per call
local function load(key)
  local st = states[key]
  if not st then
    local s, new, rolled = state(redis.call('HGET', key, 's'), 2)
    st = {{s = s, new = new, rolled = rolled, write = false}}
    states[key], order[#order + 1] = st, key
  end
  return st
end
local function rows(out, s)
  out[#out + 1] = s[2]
  out[#out + 1] = s[3] + s[8]
  out[#out + 1] = s[5]
  out[#out + 1] = s[7]
end
-- expired holds (their replica died): dropped with their sums, the earliest lease end recomputed
local function purge(key, st)
  drop_expired(key, st.s, now)
  st.write = true
end
local settled, k, a = {{}}, 0, 6
for _ = 1, tonumber(ARGV[5]) do
  local n, field, t, u = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local held_t, held_u, strict = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), ARGV[a + 6] == '1'
  a = a + 7
  for _ = 1, n do
    k = k + 1
    local st = load(KEYS[k])
    local s = st.s
    local held = redis.call('HDEL', KEYS[k], field) == 1  -- else no hold left (its lease ended, a reserve purged it)
    if held then
      s[8], s[9], s[10] = s[8] - held_t, s[9] - held_u, s[10] - 1
      if s[10] == 0 then s[11] = 0 end
    end
    if held or not strict then
      s[3], s[5], s[7] = s[3] + t, s[5] + u, s[7] + u
      st.write = true
    end
    rows(settled, s)
  end
end
local out, field, hold = {{}}, nil, nil
if #ARGV >= a then
  field, hold = ARGV[a], ARGV[a + 1]
  local est_t, est_u, ends = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local first = k
  for i = first + 1, #KEYS do
    local st = load(KEYS[i])
    local s = st.s
    if s[11] > 0 and s[11] <= now then purge(KEYS[i], st) end
    local c = a + 4 + (i - first - 1) * 5
    local rpm, tpm, conc = tonumber(ARGV[c + 1]), tonumber(ARGV[c + 2]), tonumber(ARGV[c + 3])
    local uday, umon = tonumber(ARGV[c + 4]), tonumber(ARGV[c + 5])
    local toks, j = s[3] + s[8], i - first - 1
    if conc >= 0 and s[10] + 1 > conc then out = {{0, j, 'concurrency', conc, s[10]}}
    elseif rpm >= 0 and s[2] + 1 > rpm then out = {{0, j, 'requests', rpm, s[2]}}
    elseif tpm >= 0 and toks + est_t > tpm then out = {{0, j, 'tokens', tpm, toks}}
    elseif uday >= 0 and s[5] + s[9] + est_u > uday then out = {{0, j, 'usd_day', uday, s[5] + s[9]}}
    elseif umon >= 0 and s[7] + s[9] + est_u > umon then out = {{0, j, 'usd_month', umon, s[7] + s[9]}}
    end
    if out[1] == 0 then break end
  end
  if out[1] ~= 0 then
    out = {{1}}
    for i = first + 1, #KEYS do
      local st = states[KEYS[i]]
      local s = st.s
      s[2], s[8], s[9], s[10] = s[2] + 1, s[8] + est_t, s[9] + est_u, s[10] + 1
      if s[11] == 0 or ends < s[11] then s[11] = ends end
      st.hold = true
      rows(out, s)
    end
  end
end
for _, key in ipairs(order) do
  local st = states[key]
  if st.hold then
    redis.call('HSET', key, 's', packed(st.s), field, hold)
  elseif st.write then
    redis.call('HSET', key, 's', packed(st.s))
  end
  -- the counters outlive the month: set on a key's first write and again on its first write of each UTC day
  if (st.new or st.rolled) and (st.hold or st.write) then redis.call('EXPIRE', key, {MONTH_TTL}) end
end
return {{settled, out}}
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
