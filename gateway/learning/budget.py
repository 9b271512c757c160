"""The daily cap on what shadow judging spends (judge calls and upstream shadow answers), per UTC day.

With Redis the day's total is shared by every replica (INCRBYFLOAT on one key per day); without it, or while
Redis is down, each process keeps its own total (and so may spend up to the cap each).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

DAY_SECONDS = 86_400


def utc_day(now: float | None = None) -> str:
    moment = dt.datetime.now(dt.UTC) if now is None else dt.datetime.fromtimestamp(now, dt.UTC)
    return moment.strftime("%Y-%m-%d")


class DailyBudget:
    """Dollars spent today against `cap`."""

    def __init__(self, cap: float, *, redis: Redis | None = None, key_prefix: str = "slmgw:labels:v1",
                 today: Callable[[], str] = utc_day) -> None:
        self.cap = cap
        self.redis = redis
        self.key_prefix = key_prefix
        self._today = today
        self._day = today()
        self._spent = 0.0

    def _roll(self) -> None:
        day = self._today()
        if day != self._day:
            self._day, self._spent = day, 0.0

    @property
    def spent(self) -> float:
        """Dollars spent today (as last known here)."""
        self._roll()
        return self._spent

    def exhausted(self) -> bool:
        return self.spent >= self.cap

    async def add(self, dollars: float) -> None:
        """Count `dollars` spent now."""
        self._roll()
        if dollars <= 0:
            return
        self._spent += dollars
        if self.redis is None:
            return
        key = f"{self.key_prefix}:spend:{self._day}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(key, dollars)
                pipe.expire(key, 2 * DAY_SECONDS)
                total, _ = await pipe.execute()
            self._spent = max(self._spent, float(total))
        except (RedisError, OSError, ValueError):
            pass  # the local total stands in
