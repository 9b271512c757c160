"""How long a request refused by a full local queue should wait: a moving average of recent generation times."""

from __future__ import annotations

import math


class ServiceTimes:
    """Exponentially weighted moving average of how long local generations take (seconds).

    `retry_after(waiting, concurrency)` estimates when the queue ahead of a new request will have drained:
    every waiting request plus the new one, served `concurrency` at a time, each taking the average time.
    """

    def __init__(self, *, prior_seconds: float = 2.0, weight: float = 0.2) -> None:
        self.average = prior_seconds
        self.weight = weight
        self.samples = 0

    def observe(self, seconds: float) -> None:
        """Record one finished generation (the first one replaces the prior)."""
        seconds = max(0.0, seconds)
        self.average = seconds if self.samples == 0 else self.average + self.weight * (seconds - self.average)
        self.samples += 1

    def retry_after(self, waiting: int, concurrency: int) -> int:
        """Whole seconds (at least 1) until a request arriving now behind `waiting` others would start."""
        rounds = (waiting + 1) / max(1, concurrency)
        return max(1, math.ceil(self.average * rounds))
