"""`Limiter`: the per key and per team caps of one request: reserve an estimate before, settle the real use after.

The estimate (what is held until the request settles): prompt tokens as the request's JSON bytes / 3 (the body
as received; an over-estimate for most text), completion tokens as `max_tokens` (else the local tier's default
for local requests, else `limits.reserve_completion_tokens`) times `n`, and dollars as `CostModel.charge` of those tokens
on the decided tier or its fallback, whichever costs more. What a request settles: the tokens and the cost
(`CostModel.charge`) of what it used; a stream the client left: what was generated plus the estimated prompt; a
complete answer the client left before it was ready: its reservation when it was upstream (the upstream may bill
it, the gateway never learns how much), nothing locally; a request that failed: nothing.

Bound (documented in docs/limits.md): a request is admitted only while settled + held + its estimate stays within
every cap, atomically across replicas, so spend exceeds a cap only by what requests use beyond their estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import msgspec

from gateway.costs import CostModel
from gateway.dispatch import PIN_MODEL_NAMES
from gateway.exchange import CLIENT_CLOSED_REQUEST, Exchange
from gateway.limits.directory import KeyDirectory
from gateway.limits.errors import LimitExceeded, NotPermitted
from gateway.limits.headers import RETRY_AFTER, duration, rate_headers
from gateway.limits.headers import LIMIT_REQUESTS, LIMIT_TOKENS, REMAINING_REQUESTS, REMAINING_TOKENS
from gateway.limits.headers import RESET_REQUESTS, RESET_TOKENS
from gateway.limits.metrics import BudgetGauges, LimitMetrics
from gateway.limits.over_budget import OverBudgetLocal
from gateway.limits.records import NANO, KeyRecord
from gateway.limits.store import Denied, LimitStore, Scope, ScopeUsage, StoreUnavailable, seconds_to_reset
from gateway.openai.wire import Usage
from gateway.settings import LimitSettings

log = logging.getLogger("slm_gateway.limits")
Outcome = Literal["done", "failed", "abandoned"]


class Hold:
    """What one admitted request holds: its scopes and estimate (`checked` False: served while the store was down)."""

    __slots__ = ("record", "scopes", "hold_id", "prompt_tokens", "tokens", "nano", "checked", "usage")

    def __init__(
        self, record: KeyRecord, scopes: list[Scope], hold_id: str, prompt_tokens: int, tokens: int, nano: int,
        checked: bool, usage: list[ScopeUsage] | None = None,
    ) -> None:
        self.record = record
        self.scopes = scopes
        self.hold_id = hold_id
        self.prompt_tokens = prompt_tokens
        self.tokens = tokens
        self.nano = nano
        self.checked = checked
        self.usage = usage


class Limiter:
    """Reserves and settles requests of gateway keys against their key's and team's caps in `store`."""

    def __init__(
        self,
        store: LimitStore,
        directory: KeyDirectory,
        costs: CostModel,
        metrics: LimitMetrics,
        settings: LimitSettings,
        *,
        local_max_tokens: int = 512,
        over_budget: OverBudgetLocal | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.directory = directory
        self.costs = costs
        self.metrics = metrics
        self.settings = settings
        self.local_max_tokens = local_max_tokens
        self.over_budget = over_budget
        """Set (`limits.over_budget_local`): an over-budget request is served locally when it can be."""
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._hold_prefix = os.urandom(8).hex()  # hold ids: unique across replicas and restarts, no syscall each
        self._hold_numbers = itertools.count()
        self._store_down = False
        self._metric_series: dict[str, Any] = {}  # team, or `k:<id>` of a key with a $ cap -> its metric children
        self._roller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.start()
        await self.directory.start()
        if self._roller is None:
            self._roller = asyncio.create_task(self._roll_at_midnight(), name="limits-budget-periods")

    async def close(self) -> None:
        if self._roller is not None:
            roller, self._roller = self._roller, None
            roller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await roller
        await self.drain()
        await self.directory.close()
        await self.store.close()

    async def _roll_at_midnight(self) -> None:
        while True:
            await asyncio.sleep(seconds_to_reset("usd_day", self.clock()) + 0.05)
            self.roll_budgets(self.clock())

    def roll_budgets(self, now: float) -> None:
        """Show the budget gauges of a UTC day or month that has begun as unspent (run just after midnight UTC)."""
        for series in self._metric_series.values():
            for period in ("day", "month"):
                gauges = series.get(period)
                if gauges is not None:
                    gauges.roll(now)

    async def drain(self) -> None:
        """Wait for the settles still running (polled: they may run on another thread's loop, as in tests), then
        for the store to write what it keeps back (a leased store's blocks)."""
        while self._tasks:
            await asyncio.sleep(0.002)
        await self.store.flush()

    # -- before -----------------------------------------------------------------------------------------------
    def scopes(self, record: KeyRecord) -> list[Scope]:
        """The key's caps and its team's, each only when it has any."""
        return self.directory.scopes(record)

    @staticmethod
    def check_allowed(record: KeyRecord, ex: Exchange) -> None:
        """403 when the key may not use the decided tier or the requested model."""
        assert ex.parsed is not None
        if record.allowed_tiers is not None and ex.tier not in record.allowed_tiers:
            raise NotPermitted(f"This key may not use the {ex.tier} tier.", param="model", code="tier_not_allowed")
        if record.allowed_models is not None and ex.parsed.chat.model not in record.allowed_models:
            raise NotPermitted(
                f"This key may not use the model {ex.parsed.chat.model!r}.", param="model", code="model_not_allowed"
            )

    def estimate(self, ex: Exchange) -> tuple[int, int, int]:
        """(prompt tokens, total tokens, nano-dollars) to hold for the exchange."""
        assert ex.parsed is not None and ex.decision is not None
        chat = ex.parsed.chat
        prompt = (ex.parsed.size or len(msgspec.json.encode(ex.parsed.raw))) // 3  # the body as received
        default = self.local_max_tokens if ex.tier == "local" else self.settings.reserve_completion_tokens
        completion = (ex.parsed.max_new_tokens or default) * max(1, chat.n or 1)
        usage = Usage(prompt, completion)
        cost = self.costs.charge(ex.tier, chat.model, ex.model, usage, 0.0)[0]
        fallback = ex.decision.fallback
        if fallback is not None and fallback != ex.tier:
            if fallback == "upstream":  # the model the dispatcher would send there
                model = self.costs.reference_model if chat.model in PIN_MODEL_NAMES else chat.model
            else:
                model = ex.model
            cost = max(cost, self.costs.charge(fallback, chat.model, model, usage, 0.0)[0])
        return prompt, prompt + completion, math.ceil(cost * NANO)

    async def reserve(self, ex: Exchange, record: KeyRecord, scopes: list[Scope]) -> Hold:
        """Hold the exchange's estimate in every scope, or raise `LimitExceeded` (429)."""
        prompt, tokens, nano = self.estimate(ex)
        hold_id = self._hold_id()
        now = self.clock()
        started = time.perf_counter()
        try:
            result = await self.store.reserve(scopes, hold_id, tokens, nano, now, self.settings.lease_seconds)
        except StoreUnavailable as exc:
            return self._store_failed(ex, record, scopes, hold_id, prompt, tokens, nano, exc)
        self.metrics.check_seconds.observe(time.perf_counter() - started)
        if self._store_down:
            self._store_down = False
            log.info("limits: the limit store answers again")
        if isinstance(result, Denied):
            if self.over_budget is not None and result.reason in ("usd_day", "usd_month"):
                local = await self._reserve_locally(ex, record, scopes, hold_id, now)
                if local is not None:
                    return local
            raise self._refusal(result, record, now)
        return Hold(record, scopes, hold_id, prompt, tokens, nano, True, result.usage)

    def _hold_id(self) -> str:
        return f"{self._hold_prefix}{next(self._hold_numbers):x}"

    async def _reserve_locally(
        self, ex: Exchange, record: KeyRecord, scopes: list[Scope], hold_id: str, now: float
    ) -> Hold | None:
        """Over budget: re-route to the local tier and hold its estimate there; None (decision restored) when it
        cannot be re-routed or does not fit either."""
        assert self.over_budget is not None
        previous = self.over_budget.reroute(ex, record)
        if previous is None:
            return None
        prompt, tokens, nano = self.estimate(ex)
        try:
            result = await self.store.reserve(scopes, hold_id, tokens, nano, now, self.settings.lease_seconds)
        except StoreUnavailable as exc:  # local only now: `fail_open_local` decides
            return self._store_failed(ex, record, scopes, hold_id, prompt, tokens, nano, exc)
        if isinstance(result, Denied):
            self.over_budget.restore(ex, previous)
            return None
        return Hold(record, scopes, hold_id, prompt, tokens, nano, True, result.usage)

    def _store_failed(
        self, ex: Exchange, record: KeyRecord, scopes: list[Scope], hold_id: str, prompt: int, tokens: int, nano: int,
        exc: StoreUnavailable,
    ) -> Hold:
        assert ex.decision is not None
        local_only = ex.tier == "local" and ex.decision.fallback != "upstream"  # no upstream spend possible
        return self._unchecked(ex.tier, local_only, record, scopes, hold_id, prompt, tokens, nano, exc)

    def _unchecked(
        self, tier: str, local_only: bool, record: KeyRecord, scopes: list[Scope], hold_id: str, prompt: int,
        tokens: int, nano: int, exc: StoreUnavailable,
    ) -> Hold:
        """The store is down: serve unchecked (fail open) or raise the 429 `limits_unavailable`."""
        serve = self.settings.fail_open_local if local_only else self.settings.fail_open_upstream
        if not self._store_down:
            self._store_down = True
            what = "serving them unchecked" if serve else "refusing them (429)"
            log.warning("limits: the limit store is unreachable (%s); %s requests: %s", exc, tier, what)
        if serve:
            self.metrics.store_errors.labels("reserve", "open").inc()
            return Hold(record, scopes, hold_id, prompt, tokens, nano, False)
        self.metrics.store_errors.labels("reserve", "closed").inc()
        self.metrics.limited.labels("key" if scopes[0].name.startswith("k:") else "team", "unavailable").inc()
        raise LimitExceeded(
            "Rate limits cannot be checked right now; please retry shortly.",
            code="limits_unavailable", headers={RETRY_AFTER: "1"},
        )

    def _refusal(self, denied: Denied, record: KeyRecord, now: float) -> LimitExceeded:
        kind = "key" if denied.scope.startswith("k:") else "team"
        self.metrics.limited.labels(kind, denied.reason).inc()
        who = f"key {record.id}" if kind == "key" else f"team {record.team}"
        reset = seconds_to_reset(denied.reason, now)
        headers = {RETRY_AFTER: str(max(1, math.ceil(reset)))}
        if denied.reason in ("usd_day", "usd_month"):
            period = "day" if denied.reason == "usd_day" else "month"
            message = (
                f"Budget exceeded for {who}: ${denied.limit / NANO:.6f} per {period}, "
                f"${denied.used / NANO:.6f} spent or reserved. It resets in {duration(reset)}."
            )
            return LimitExceeded(message, code="budget_exceeded", headers=headers)
        limit, used = int(denied.limit), int(denied.used)
        if denied.reason == "requests":
            headers |= {LIMIT_REQUESTS: str(limit), REMAINING_REQUESTS: str(max(0, limit - used)),
                        RESET_REQUESTS: duration(reset)}
            what = "requests per minute (rpm)"
        elif denied.reason == "tokens":
            headers |= {LIMIT_TOKENS: str(limit), REMAINING_TOKENS: str(max(0, limit - used)),
                        RESET_TOKENS: duration(reset)}
            what = "tokens per minute (tpm)"
        else:
            what = "concurrent requests"
        message = f"Rate limit reached for {what} on {who}: Limit {limit}, Used {used}. Please try again in {duration(reset)}."
        return LimitExceeded(message, code="rate_limit_exceeded", headers=headers)

    async def reserve_relayed(
        self, ex: Exchange, tier: str, model: str, prompt: int, completion: int | None, requested: str | None = None
    ) -> Hold | None:
        """A request relayed as it is (passthrough, JSON forwarded upstream, embeddings: no chat layers): the
        key's tier and model permissions, and one reserve of `prompt` + `completion` tokens (None: the
        `reserve_completion_tokens`) and their cost on `tier` with `model` (`requested`: the model name the
        client asked for, default `model`). None without a stored key."""
        record = self.directory.of_headers(ex.headers)
        if record is None:
            return None
        if record.allowed_tiers is not None and tier not in record.allowed_tiers:
            raise NotPermitted(f"This key may not use the {tier} tier.", param="model", code="tier_not_allowed")
        asked = model if requested is None else requested
        if asked and record.allowed_models is not None and asked not in record.allowed_models:
            raise NotPermitted(f"This key may not use the model {asked!r}.", param="model", code="model_not_allowed")
        scopes = self.scopes(record)
        tokens = prompt + (self.settings.reserve_completion_tokens if completion is None else completion)
        nano = math.ceil(self.costs.charge(tier, model, model, Usage(prompt, tokens - prompt), 0.0)[0] * NANO)
        hold_id = self._hold_id()
        if not scopes:
            return Hold(record, scopes, "", prompt, tokens, nano, False)
        now = self.clock()
        try:
            result = await self.store.reserve(scopes, hold_id, tokens, nano, now, self.settings.lease_seconds)
        except StoreUnavailable as exc:
            return self._unchecked(tier, tier == "local", record, scopes, hold_id, prompt, tokens, nano, exc)
        if isinstance(result, Denied):
            raise self._refusal(result, record, now)
        return Hold(record, scopes, hold_id, prompt, tokens, nano, True, result.usage)

    def settle_relayed_later(
        self, hold: Hold, tier: str, model: str, status: int, usage: Usage | None, seconds: float = 0.0
    ) -> None:
        """Settle a relayed request: the tokens and cost of the usage its answer reported (none: nothing);
        `seconds`: the tier's busy time (for `costs.local_per_hour`)."""
        if usage is None or status >= 400:
            spent = (0, 0, 0.0)
        else:
            cost = self.costs.charge(tier, model, model, usage, seconds)[0]
            spent = (usage.total_tokens, round(cost * NANO), cost)
        self._spawn(self._write(hold, *spent))

    def settle_reserved_later(self, hold: Hold) -> None:
        """Settle a relayed request with what it reserved (its answer ended before it said what it used)."""
        self._spawn(self._write(hold, hold.tokens, hold.nano, hold.nano / NANO))

    def settle_relayed_after(
        self, hold: Hold, tier: str, model: str, spent: Coroutine[Any, Any, tuple[Usage | None, float]]
    ) -> None:
        """Settle a relayed request once `spent` says what it used (usage, busy seconds): a generation that is
        still stopping. `spent` failing settles nothing but the request."""

        async def settle() -> None:
            try:
                usage, seconds = await spent
            except Exception:
                usage, seconds = None, 0.0
            self.settle_relayed_later(hold, tier, model, 200, usage, seconds)

        self._spawn(settle())

    def headers(self, hold: Hold) -> dict[str, str]:
        """The `x-ratelimit-*` headers of an admitted request."""
        if hold.usage is None:
            return {}
        return rate_headers(hold.scopes, hold.usage, seconds_to_reset("requests", self.clock()))

    async def hit_headers(self, ex: Exchange) -> dict[str, str]:
        """The `x-ratelimit-*` headers of an answer that never reached the limit layer (a cache hit holds and uses
        nothing), from the scopes' counters now; none without a stored key with rpm / tpm caps, or while the store
        is down (the hit is served either way)."""
        record = self.directory.of_headers(ex.headers)
        if record is None:
            return {}
        scopes = [s for s in self.scopes(record) if s.limits.rpm is not None or s.limits.tpm is not None]
        if not scopes:
            return {}
        now = self.clock()
        try:
            usage = [await self.store.usage(scope.name, now) for scope in scopes]
        except StoreUnavailable:
            return {}
        return rate_headers(scopes, usage, seconds_to_reset("requests", now))

    def relayed_headers(self, hold: Hold, upstream: list[tuple[str, str]]) -> dict[str, str]:
        """The `x-ratelimit-*` headers of an admitted relayed request, and `upstream` (the relayed answer's
        headers, changed in place) without the upstream's own: those describe the gateway's upstream account,
        shared by every key, not the caller's caps."""
        upstream[:] = [(k, v) for k, v in upstream if not k.lower().startswith("x-ratelimit-")]
        return self.headers(hold)

    # -- after ------------------------------------------------------------------------------------------------
    def settle_later(self, hold: Hold, ex: Exchange, outcome: Outcome) -> None:
        """Settle in the background (the answer does not wait for it); `drain` waits for it."""
        self._spawn(self.settle(hold, ex, outcome))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spent(self, hold: Hold, ex: Exchange, outcome: Outcome) -> tuple[int, int, float]:
        """(tokens, nano-dollars, dollars) the request settles with."""
        assert ex.parsed is not None
        if outcome == "failed":
            return 0, 0, 0.0
        if outcome == "abandoned":
            if ex.tier != "upstream":
                return 0, 0, 0.0
            return hold.tokens, hold.nano, hold.nano / NANO
        usage = ex.usage
        if ex.status == CLIENT_CLOSED_REQUEST and usage.prompt_tokens == 0:
            usage = Usage(hold.prompt_tokens, usage.completion_tokens)
        cost = self.costs.charge(ex.tier, ex.parsed.chat.model, ex.answered_model, usage, ex.tier_seconds)[0]
        return usage.total_tokens, round(cost * NANO), cost

    async def settle(self, hold: Hold, ex: Exchange, outcome: Outcome) -> None:
        await self._write(hold, *self.spent(hold, ex, outcome))

    async def _write(self, hold: Hold, tokens: int, nano: int, cost: float) -> None:
        """Drop the hold and add what was used (and count the team's spend, and the key's when it has a $ cap)."""
        record = hold.record
        team = record.team
        series = self._series(team)
        series["spend"].inc(cost)  # at zero too: the team's series exists from its first request
        own = record.limits
        if own.usd_per_day is not None or own.usd_per_month is not None:
            self._series("k:" + record.id, team)["spend"].inc(cost)
        if not hold.scopes:
            return
        now = self.clock()
        try:
            usage = await self.store.settle(hold.scopes, hold.hold_id, tokens, nano, now, held=(hold.tokens, hold.nano))
        except StoreUnavailable as exc:
            self.metrics.store_errors.labels("settle", "lost").inc()
            log.warning("limits: a settle was lost (%s): %d tokens, $%.6f of team %s not counted", exc, tokens, cost, team)
            return
        for scope, used in zip(hold.scopes, usage):
            if scope.name.startswith("t:"):
                self._budget_gauges(series, scope, used, now)
            elif scope.limits.usd_per_day is not None or scope.limits.usd_per_month is not None:
                self._budget_gauges(self._series(scope.name, team), scope, used, now)

    def _series(self, name: str, team: str | None = None) -> dict[str, Any]:
        """The metric children of a team (`name`: the team) or of a key with a $ cap (`name`: `k:<id>`)."""
        series = self._metric_series.get(name)
        if series is None:
            m = self.metrics
            if team is None:
                series = {"scope": "t:" + name, "team": name, "spend": m.team_spend.labels(name)}
            else:
                series = {"scope": name, "team": team, "spend": m.key_spend.labels(name[2:], team)}
            self._metric_series[name] = series
        return series

    def _budget_gauges(self, series: dict[str, Any], scope: Scope, used: ScopeUsage, now: float) -> None:
        """Budget left and used of the periods the team (or key) has a cap for (a gauge appears with its cap)."""
        for period, cap, spent in (("day", scope.limits.usd_per_day, used.day_nano),
                                   ("month", scope.limits.usd_per_month, used.month_nano)):
            if cap is None:
                continue
            gauges = series.get(period)
            if gauges is None:
                gauges = series[period] = BudgetGauges(self.metrics, series["scope"], series["team"], period)
            gauges.show(cap, spent / NANO, now)
