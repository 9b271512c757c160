"""Prometheus metrics of keys, rate limits and budgets (registered in the gateway's registry by GatewayMetrics).

Request metrics stay `gateway.accounting`'s; these count only what the limiter decides and what teams spend.
Imports nothing of the gateway (`gateway.metrics` includes it).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "slm_gateway"
REASONS = ("requests", "tokens", "concurrency", "usd_day", "usd_month")
"""Why a request is refused: which cap it would break."""
CHECK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
SCOPE_KINDS = ("key", "team")
STORE_ACTIONS = (("reserve", "open"), ("reserve", "closed"), ("settle", "lost"), ("refresh", "stale"))


class LimitMetrics:
    """Limited requests by scope and reason, team spend and budget left (and a key's, for keys with a dollar cap of
    their own), limit-store errors, check latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p, r = PREFIX, registry
        self.limited = Counter(
            f"{p}_limited_requests_total",
            "Requests refused with a 429 by a key or team cap, by scope kind (key|team) and reason "
            "(requests|tokens|concurrency|usd_day|usd_month|unavailable).",
            ["scope", "reason"], registry=r,
        )
        self.team_spend = Counter(
            f"{p}_team_spend_dollars_total", "What requests of gateway keys cost, in US dollars, by team.",
            ["team"], registry=r,
        )
        self.budget_remaining = Gauge(
            f"{p}_team_budget_remaining_dollars",
            "Dollars a team may still spend in the current UTC day / month (teams with that cap only).",
            ["team", "period"], registry=r, multiprocess_mode="livemin",
        )
        self.budget_used = Gauge(
            f"{p}_team_budget_used_ratio",
            "Share of a team's day / month budget spent (settled), 0..1 and above.",
            ["team", "period"], registry=r, multiprocess_mode="livemax",
        )
        # a key's own dollar caps: series only for keys that have one (bounded by the caps an operator sets)
        self.key_spend = Counter(
            f"{p}_key_spend_dollars_total",
            "What requests of a gateway key with a dollar cap of its own cost, in US dollars, by key id and team.",
            ["key", "team"], registry=r,
        )
        self.key_budget_remaining = Gauge(
            f"{p}_key_budget_remaining_dollars",
            "Dollars a key may still spend in the current UTC day / month (keys with that cap of their own only).",
            ["key", "team", "period"], registry=r, multiprocess_mode="livemin",
        )
        self.key_budget_used = Gauge(
            f"{p}_key_budget_used_ratio",
            "Share of a key's own day / month budget spent (settled), 0..1 and above.",
            ["key", "team", "period"], registry=r, multiprocess_mode="livemax",
        )
        self.store_errors = Counter(
            f"{p}_limits_store_errors_total",
            "Limit store (Redis) failures by operation and what was done: reserve served unchecked (open) or "
            "refused (closed), settle not counted (lost), key refresh kept the last keys (stale).",
            ["operation", "action"], registry=r,
        )
        self.check_seconds = Histogram(
            f"{p}_limits_check_seconds", "Time of one limit check (the reserve round trip).",
            buckets=CHECK_BUCKETS, registry=r,
        )
        for scope in SCOPE_KINDS:
            for reason in (*REASONS, "unavailable"):
                self.limited.labels(scope, reason)
        for operation, action in STORE_ACTIONS:
            self.store_errors.labels(operation, action)


def period_id(period: str, now: float) -> str:
    """The UTC day (`YYYYMMDD`) or month (`YYYYMM`) of `now`."""
    return time.strftime("%Y%m%d" if period == "day" else "%Y%m", time.gmtime(now))


class BudgetGauges:
    """A team's or key's budget left and used in one period (day|month), as the last settle left it; `roll` shows
    a new period as unspent once the old one has ended (else an idle team's gauges, and the 80% alert, would keep
    the last period's spend until its next request)."""

    __slots__ = ("remaining", "used", "period", "cap", "window", "_day")

    def __init__(self, metrics: LimitMetrics, scope: str, team: str, period: str) -> None:
        """`scope`: `t:<team>` or `k:<key id>` (a key's series also carry its team)."""
        if scope.startswith("k:"):
            self.remaining = metrics.key_budget_remaining.labels(scope[2:], team, period)
            self.used = metrics.key_budget_used.labels(scope[2:], team, period)
        else:
            self.remaining = metrics.budget_remaining.labels(team, period)
            self.used = metrics.budget_used.labels(team, period)
        self.period = period
        self.cap = 0.0
        self.window = ""
        self._day = -1  # the UTC day (Unix days) `window` was computed for: a day or month changes only with it

    def _window(self, now: float) -> str:
        day = int(now // 86_400)
        if day != self._day:
            self._day, self.window = day, period_id(self.period, now)
        return self.window

    def show(self, cap: float, spent: float, now: float) -> None:
        """`spent` dollars of `cap` in the period of `now`."""
        self.cap = cap
        self._window(now)
        self.remaining.set(max(0.0, cap - spent))
        self.used.set(spent / cap if cap > 0 else 1.0)

    def roll(self, now: float) -> None:
        if self.window and period_id(self.period, now) != self.window:
            self.show(self.cap, 0.0, now)
