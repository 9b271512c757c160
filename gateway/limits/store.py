"""The limit store's contract (`LimitStore`): keys and teams, and the atomic reserve / settle of a request.

Two backends: `RedisLimitStore` (shared by every replica: two Lua scripts) and `MemoryLimitStore` (one
process). Both keep the same counters per scope (a key or a team):

- settled usage per fixed window: requests and tokens of the current UTC minute, nano-dollars of the UTC day
  and of the UTC month;
- holds: the requests in flight (each with its lease end: their count is the concurrency) and what each
  reserved (tokens, nano-dollars), with their sums.

`reserve` admits a request only if, in every scope, settled + held + its estimate stays within each cap; it
then holds the estimate. `settle` drops the hold and adds what the request actually used. Holds are never
folded into the settled counters, so a hold whose replica died expires with its lease and leaves no drift.
"""

from __future__ import annotations

import calendar
import time
from abc import ABC, abstractmethod

import msgspec

from gateway.limits.records import NANO, KeyRecord, Limits

MINUTE_TTL = 120
DAY_TTL = 2 * 86_400
MONTH_TTL = 32 * 86_400
class StoreUnavailable(Exception):
    """The store could not be reached in time (Redis down, slow, refusing)."""


class Scope:
    """One set of caps a request counts against: `k:<key id>` or `t:<team>`, and its caps in the scripts' order."""

    __slots__ = ("name", "limits", "caps")

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self.caps = caps(limits)


class Denied(msgspec.Struct, frozen=True):
    """The first cap a request would break: its scope, kind (one of `metrics.REASONS`), cap and what is already used."""

    scope: str
    reason: str
    limit: float
    used: float


class ScopeUsage(msgspec.Struct, frozen=True):
    """A scope's counters right after a reserve or settle (requests and tokens include holds; dollars settled)."""

    scope: str
    requests: int
    tokens: int
    day_nano: int
    month_nano: int


class Granted(msgspec.Struct, frozen=True):
    usage: list[ScopeUsage]


class Windows(msgspec.Struct, frozen=True):
    """The window ids of one instant (UTC): minute number, day and month."""

    minute: int
    day: str
    month: str

    @classmethod
    def at(cls, now: float) -> Windows:
        t = time.gmtime(now)
        return cls(int(now // 60), time.strftime("%Y%m%d", t), time.strftime("%Y%m", t))


class WindowClock:
    """`Windows.at`, computed once a minute (a store asks for every check)."""

    __slots__ = ("_minute", "_windows")

    def __init__(self) -> None:
        self._minute = -1
        self._windows = Windows(0, "", "")

    def at(self, now: float) -> Windows:
        minute = int(now // 60)
        if minute != self._minute:
            self._windows = Windows.at(now)
            self._minute = minute
        return self._windows


def seconds_to_reset(reason: str, now: float) -> float:
    """Seconds until the window of `reason` starts over (concurrency: a hint of one second)."""
    if reason in ("requests", "tokens"):
        return 60.0 - now % 60.0
    if reason == "usd_day":
        return 86_400.0 - now % 86_400.0
    if reason == "usd_month":
        t = time.gmtime(now)
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0)) - now
    return 1.0


def caps(limits: Limits) -> list[float]:
    """The five caps in the scripts' order (-1: none): rpm, tpm, concurrency, nano-dollars per day and month."""
    def nano(usd: float | None) -> float:
        return -1 if usd is None else round(usd * NANO)

    return [
        -1 if limits.rpm is None else limits.rpm,
        -1 if limits.tpm is None else limits.tpm,
        -1 if limits.concurrency is None else limits.concurrency,
        nano(limits.usd_per_day),
        nano(limits.usd_per_month),
    ]


class LimitStore(ABC):
    """Keys, teams and counters. Every method raises only `StoreUnavailable` on backend trouble."""

    shared: bool = False
    """True when every replica sees the same keys and counters."""

    async def start(self) -> None:
        """Open connections (a backend that is down does not stop startup)."""

    async def close(self) -> None:
        """Release connections."""

    async def flush(self) -> None:
        """Write what the store keeps back to write later (a leased store's blocks: `gateway.limits.lease`)."""

    # -- keys and teams -----------------------------------------------------------------------------------------
    @abstractmethod
    async def put_key(self, record: KeyRecord) -> None:
        """Add or replace a key (by its id) and bump the version."""

    @abstractmethod
    async def keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included."""

    @abstractmethod
    async def put_team(self, team: str, limits: Limits) -> None:
        """Set a team's caps and bump the version."""

    @abstractmethod
    async def teams(self) -> dict[str, Limits]:
        """Every team that has caps."""

    @abstractmethod
    async def version(self) -> int:
        """A number that changes with every key or team change (replicas reload when it does)."""

    # -- counters -----------------------------------------------------------------------------------------------
    @abstractmethod
    async def reserve(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, lease: float
    ) -> Granted | Denied:
        """Admit and hold `tokens` / `nano` in every scope, atomically, or say which cap it would break."""

    @abstractmethod
    async def settle(
        self, scopes: list[Scope], request_id: str, tokens: int, nano: int, now: float, *, held: tuple[int, int]
    ) -> list[ScopeUsage]:
        """Drop the request's hold (if it still has one: `held`, the tokens and nano-dollars its reserve held) and
        count what it used, atomically."""

    @abstractmethod
    async def usage(self, scope: str, now: float) -> ScopeUsage:
        """A scope's counters now (holds included in requests / tokens)."""
