"""`MemoryLimitStore`: keys, teams and counters in this process (the default without Redis; one replica only).

The same rules as the Lua scripts in `gateway.limits.scripts`; atomic because nothing in a call awaits.
"""

from __future__ import annotations

import heapq

from gateway.limits.records import KeyRecord, Limits
from gateway.limits.store import (
    DAY_TTL,
    MINUTE_TTL,
    MONTH_TTL,
    Denied,
    Granted,
    LimitStore,
    Scope,
    ScopeUsage,
    WindowClock,
    Windows,
)


def scope_keys(prefix: str, scope: str, w: Windows) -> list[str]:
    """The six counter slots of `scope` at windows `w`: in flight, held, requests and tokens of the minute,
    nano-dollars of the day and of the month."""
    base = f"{prefix}:s:{scope}"
    return [f"{base}:inflight", f"{base}:held", f"{base}:req:{w.minute}", f"{base}:tok:{w.minute}",
            f"{base}:usd:d:{w.day}", f"{base}:usd:m:{w.month}"]


class _Holds:
    """One scope's requests in flight: lease expiry and what each holds, and the sums."""

    __slots__ = ("expiry", "held", "tokens", "nano", "by_expiry")

    def __init__(self) -> None:
        self.expiry: dict[str, float] = {}
        self.held: dict[str, tuple[int, int]] = {}
        self.by_expiry: list[tuple[float, str]] = []  # a heap; entries of dropped holds are skipped
        self.tokens = 0
        self.nano = 0

    def add(self, request_id: str, expiry: float, tokens: int, nano: int) -> None:
        self.expiry[request_id] = expiry
        self.held[request_id] = (tokens, nano)
        heapq.heappush(self.by_expiry, (expiry, request_id))
        self.tokens += tokens
        self.nano += nano

    def drop(self, request_id: str) -> None:
        self.expiry.pop(request_id, None)
        held = self.held.pop(request_id, None)
        if held is not None:
            self.tokens -= held[0]
            self.nano -= held[1]

    def purge(self, now: float) -> None:
        heap = self.by_expiry
        while heap and heap[0][0] <= now:
            expiry, rid = heapq.heappop(heap)
            if self.expiry.get(rid) == expiry:
                self.drop(rid)
        if len(heap) > 4 * len(self.expiry) + 64:  # settled holds' entries: rebuild now and then
            self.by_expiry = [(t, r) for r, t in self.expiry.items()]
            heapq.heapify(self.by_expiry)


class MemoryLimitStore(LimitStore):
    shared = False

    def __init__(self, prefix: str = "mem") -> None:
        self.prefix = prefix
        self._keys: dict[str, KeyRecord] = {}
        self._teams: dict[str, Limits] = {}
        self._version = 0
        self._holds: dict[str, _Holds] = {}
        self._counters: dict[str, tuple[float, int]] = {}  # key -> (expires at, value)
        self._windows = WindowClock()

    async def put_key(self, record: KeyRecord) -> None:
        self._keys[record.id] = record
        self._version += 1

    async def keys(self) -> list[KeyRecord]:
        return sorted(self._keys.values(), key=lambda k: (k.team, k.created, k.id))

    async def put_team(self, team: str, limits: Limits) -> None:
        self._teams[team] = limits
        self._version += 1

    async def teams(self) -> dict[str, Limits]:
        return dict(self._teams)

    async def version(self) -> int:
        return self._version

    def _get(self, key: str, now: float) -> int:
        found = self._counters.get(key)
        if found is None or found[0] <= now:
            return 0
        return found[1]

    def _add(self, key: str, amount: int, now: float, ttl: float) -> int:
        value = self._get(key, now) + amount
        self._counters[key] = (now + ttl, value)
        if len(self._counters) > 4096:  # forget expired windows now and then
            self._counters = {k: v for k, v in self._counters.items() if v[0] > now}
        return value

    def _holds_of(self, scope: str) -> _Holds:
        holds = self._holds.get(scope)
        if holds is None:
            holds = self._holds[scope] = _Holds()
        return holds

    async def reserve(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, lease: float
    ) -> Granted | Denied:
        w = self._windows.at(now)
        seen: list[tuple[list[str], _Holds, int, int, int]] = []
        for s in scopes:
            keys = scope_keys(self.prefix, s.name, w)
            holds = self._holds_of(s.name)
            holds.purge(now)
            rpm, tpm, conc, uday, umon = s.caps
            reqs = self._get(keys[2], now)
            toks = self._get(keys[3], now) + holds.tokens
            day, mon = self._get(keys[4], now), self._get(keys[5], now)
            if conc >= 0 and len(holds.expiry) + 1 > conc:
                return Denied(s.name, "concurrency", conc, len(holds.expiry))
            if rpm >= 0 and reqs + 1 > rpm:
                return Denied(s.name, "requests", rpm, reqs)
            if tpm >= 0 and toks + tokens > tpm:
                return Denied(s.name, "tokens", tpm, toks)
            if uday >= 0 and day + holds.nano + nano > uday:
                return Denied(s.name, "usd_day", uday, day + holds.nano)
            if umon >= 0 and mon + holds.nano + nano > umon:
                return Denied(s.name, "usd_month", umon, mon + holds.nano)
            seen.append((keys, holds, toks, day, mon))
        usage = []
        for s, (keys, holds, toks, day, mon) in zip(scopes, seen):
            holds.add(request_id, now + lease, tokens, nano)
            reqs = self._add(keys[2], 1, now, MINUTE_TTL)
            usage.append(ScopeUsage(s.name, reqs, toks + tokens, day, mon))
        return Granted(usage)

    async def settle(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, *, held: tuple[int, int]
    ) -> list[ScopeUsage]:
        w = self._windows.at(now)
        usage = []
        for s in scopes:
            keys = scope_keys(self.prefix, s.name, w)
            holds = self._holds_of(s.name)
            holds.drop(request_id)
            toks = self._add(keys[3], tokens, now, MINUTE_TTL)
            day = self._add(keys[4], nano, now, DAY_TTL)
            mon = self._add(keys[5], nano, now, MONTH_TTL)
            usage.append(ScopeUsage(s.name, self._get(keys[2], now), toks + holds.tokens, day, mon))
        return usage

    async def usage(self, scope: str, now: float) -> ScopeUsage:
        keys = scope_keys(self.prefix, scope, self._windows.at(now))
        holds = self._holds.get(scope) or _Holds()
        return ScopeUsage(scope, self._get(keys[2], now), self._get(keys[3], now) + holds.tokens,
                          self._get(keys[4], now), self._get(keys[5], now))
