"""A small circuit breaker: after a failure, skip the backend for a while instead of hammering it."""

from __future__ import annotations

import time
from collections.abc import Callable


class Breaker:
    """Closed until a failure; then open for `base` seconds, doubling per consecutive failure up to `cap`.

    While open, `allow()` is False. After the pause one caller may try again (half-open); a success closes
    the breaker, a failure reopens it for longer.
    """

    def __init__(self, base: float = 0.1, cap: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.cap = cap
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._failures > 0 and self._clock() < self._open_until

    def allow(self) -> bool:
        """Whether a call may go to the backend now."""
        if self._failures == 0:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        # Half-open: let this caller try, and hold the others back until it reports.
        self._open_until = now + self._pause()
        return True

    def success(self) -> None:
        self._failures = 0
        self._open_until = 0.0

    def failure(self) -> None:
        self._failures += 1
        self._open_until = self._clock() + self._pause()

    def _pause(self) -> float:
        return min(self.cap, self.base * (2 ** min(self._failures - 1, 16)))
