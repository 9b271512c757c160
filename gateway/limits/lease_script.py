"""The Lua script that refreshes a replica's blocks (`gateway.limits.lease`): per scope, in one atomic call,

1. drop the replica's old block (its hold field `h:L<replica>`, read back: what Redis really holds, none once
   its lease ended and a reserve purged it);
2. settle what the requests admitted from it used since the last call (tokens of the minute, nano-dollars of the
   day and month) and give back the requests of the minute it did not use (only while that minute lasts);
3. hold the part of the block the replica keeps (`base`: its requests in flight and a free part it may still
   admit from while the call travels) plus a new grant, sized here against the scope's counters as they are:
   at most `fraction` of each cap's headroom, in whole requests of the replica's recent estimate, and none at
   all when a cap's headroom is under `few` estimates (or `few` slots of concurrency): near a cap every request
   is reserved alone (`CHECK`) as without blocks.

The counters' layout is `gateway.limits.scripts`; a block's hold has a fourth double, its concurrency slots, so
that an expired block is dropped with all its slots (`hold_of`). A written block holds at least one slot, so that
the scope's earliest lease end keeps being tracked and a dead replica's block expires with its lease.
"""

from __future__ import annotations

from gateway.limits.scripts import _STATE, BLOCK
from gateway.limits.store import MONTH_TTL

PER_SCOPE = 17
"""Arguments per scope (see `LEASE`)."""

LEASE = (
    _STATE
    + f"""
-- ARGV: now ms, minute, day, month, the blocks' lease end ms, fraction, few; then {PER_SCOPE} per scope (KEYS[i]):
-- hold field, base tokens, base nano-dollars, base slots, requests given back, the minute they were granted in,
-- tokens used, nano-dollars used, requests wanted, tokens and nano-dollars per request, slots wanted, and the
-- 5 caps (-1: none): rpm, tpm, concurrency, nano-dollars per day, per month.
-- Returns per scope: requests granted, the hold's tokens, nano-dollars and slots, 1 when a cap's headroom refused
-- a grant, then the counters: requests, tokens (holds included), nano-dollars of the day, of the month.
local now, ends = tonumber(ARGV[1]), tonumber(ARGV[5])
local f, few = tonumber(ARGV[6]), tonumber(ARGV[7])
local out = {{}}
for i = 1, #KEYS do
  local key, a = KEYS[i], 8 + (i - 1) * {PER_SCOPE}
  local field = ARGV[a]
  local base_t, base_u, base_s = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local back, back_minute = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local used_t, used_u = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  local want, est_t, est_u, want_s = tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9]), tonumber(ARGV[a + 10]), tonumber(ARGV[a + 11])
  local rpm, tpm, conc = tonumber(ARGV[a + 12]), tonumber(ARGV[a + 13]), tonumber(ARGV[a + 14])
  local uday, umon = tonumber(ARGV[a + 15]), tonumber(ARGV[a + 16])
  local s, new, rolled = state(redis.call('HGET', key, 's'), 2)
  local dirty = false
  if s[11] > 0 and s[11] <= now then  -- expired holds (their replica died): dropped with their sums
    drop_expired(key, s, now)
    dirty = true
  end
  local old = redis.call('HGET', key, field)
  if old then
    local _, t, u, n = hold_of(old)
    s[8], s[9], s[10] = s[8] - t, s[9] - u, s[10] - n
    dirty = true
  end
  if used_t ~= 0 or used_u ~= 0 then
    s[3], s[5], s[7] = s[3] + used_t, s[5] + used_u, s[7] + used_u
    dirty = true
  end
  if back > 0 and s[1] == back_minute then  -- a later minute started from zero: nothing to give back
    s[2] = math.max(0, s[2] - back)
    dirty = true
  end
  local n, near = want, 0
  local function fit(cap, used, per)
    if cap < 0 or per <= 0 or n <= 0 then return end
    local room = cap - used
    if room < few * per then n, near = 0, 1 else n = math.min(n, math.floor(room * f / per)) end
  end
  fit(rpm, s[2], 1)
  fit(tpm, s[3] + s[8] + base_t, est_t)
  fit(uday, s[5] + s[9] + base_u, est_u)
  fit(umon, s[7] + s[9] + base_u, est_u)
  local gs = 0
  if n > 0 then
    gs = want_s
    if conc >= 0 then
      local room = conc - s[10] - base_s
      if room < few then n, gs, near = 0, 0, 1 else gs = math.min(gs, math.floor(room * f)) end
    end
  end
  if n < 0 then n = 0 end
  if n == 0 then gs = 0 end
  local ht, hu, hs = base_t + n * est_t, base_u + n * est_u, base_s + gs
  if ht > 0 or hu > 0 or hs > 0 then
    if hs < 1 then hs = 1 end
    s[2], s[8], s[9], s[10] = s[2] + n, s[8] + ht, s[9] + hu, s[10] + hs
    if s[11] == 0 or ends < s[11] then s[11] = ends end
    redis.call('HSET', key, 's', packed(s), field, struct.pack('{BLOCK}', ends, ht, hu, hs))
    dirty = false
  else
    if old then redis.call('HDEL', key, field) end
    if s[10] <= 0 then s[11] = 0 end
  end
  if dirty then redis.call('HSET', key, 's', packed(s)) end
  if (new or rolled) and (dirty or hs > 0) then redis.call('EXPIRE', key, {MONTH_TTL}) end
  for _, x in ipairs({{n, ht, hu, hs, near, s[2], s[3] + s[8], s[5], s[7]}}) do out[#out + 1] = x end
end
return out
"""
)
