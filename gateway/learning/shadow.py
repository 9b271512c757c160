"""Shadow judging: after a client has its answer, get the other tier's answer to the same request, ask the judge
to grade both, and write one label row.

"The other tier" of a request served by the local tier or a named SLM tier (`slm_tiers`) is the upstream; of an
upstream-served request, the small-model tier its rule weighs against the upstream (`RouteDecision.small_tier`,
the rule's `slm_tier`, default `local`). The label's weak side (`weak_correct`, `local_model`) is that small tier.

On the request path `ShadowJudge.offer` costs one random draw and, for a sampled request, one non-blocking put
into a bounded queue (a full queue drops, counted). Background workers (started and stopped with the app) take
jobs in order. A shadow generation on a small-model tier starts only when that tier is idle (no client request
waiting or running), holds a small semaphore of its own, and is cancelled (at its next token) as soon as a client
request waits for that tier: client requests always go first. Every failure (tier, judge, Redis) is counted and
costs the label, never the worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway.openai.request import ParsedRequest, parse_chat_request
from gateway.costs import CostModel
from gateway.dispatch import Tiers
from gateway.errors import GatewayError
from gateway.learning.budget import DailyBudget
from gateway.learning.finished import Finished, completion_text, last_user_prompt
from gateway.learning.judge import MalformedVerdict, judge_request, parse_verdict
from gateway.learning.labels import LabelSink, hash_tenant, label_row
from gateway.learning.metrics import LearningMetrics
from gateway.learning.privacy import PrivacyGuard
from gateway.routing.capabilities import required_features
from gateway.settings import LearningSettings
from gateway.tasks import cancel_and_wait
from gateway.tiers.base import Backend, Completion

log = logging.getLogger("slm_gateway.learning")

PREEMPT_POLL_SECONDS = 0.005
"""How often a running shadow generation looks for a client request waiting for its tier (then it is cancelled:
the generation stops at its next token and the client's request gets the model)."""


def shadow_request(request: ParsedRequest, max_tokens: int) -> ParsedRequest:
    """The same request, not streamed, with at most `max_tokens` new tokens."""
    raw = {k: v for k, v in request.raw.items() if k not in ("stream", "stream_options", "max_completion_tokens")}
    given = request.max_new_tokens
    raw["max_tokens"] = min(given, max_tokens) if given else max_tokens
    return parse_chat_request(msgspec.json.encode(raw))


class ShadowJudge:
    """The sampler (`offer`) and the workers that turn sampled requests into judged label rows."""

    def __init__(
        self,
        settings: LearningSettings,
        *,
        tiers: Tiers,
        costs: CostModel,
        sink: LabelSink,
        budget: DailyBudget,
        metrics: LearningMetrics,
        privacy: PrivacyGuard,
        judge_model: str,
        rng: random.Random | None = None,
        on_job: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.rate = settings.shadow_rate
        self.tiers = tiers
        self.costs = costs
        self.sink = sink
        self.budget = budget
        self.metrics = metrics
        self.privacy = privacy
        self.judge_model = judge_model
        self._random = (rng or random.Random()).random
        self._on_job = on_job or (lambda: None)
        self.queue: asyncio.Queue[Finished] = asyncio.Queue(settings.queue_size)
        self._local_slots = asyncio.Semaphore(settings.local_concurrency)
        self._workers: list[asyncio.Task[None]] = []

    # -- the request path --------------------------------------------------------------------------------------
    def sampled(self) -> bool:
        """One random draw: whether this request is shadowed."""
        return self.rate > 0 and self._random() < self.rate

    def offer(self, finished: Finished) -> None:
        """Queue a sampled, finished request for judging (never blocks; a full queue drops, counted)."""
        try:
            self.queue.put_nowait(finished)
        except asyncio.QueueFull:
            self.metrics.dropped.labels("queue_full").inc()
            return
        self.metrics.queue_depth.set(self.queue.qsize())

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"learning-shadow-{i}") for i in range(self.settings.workers)
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._workers)
        self._workers = []

    async def _work(self) -> None:
        while True:
            finished = await self.queue.get()
            self.metrics.queue_depth.set(self.queue.qsize())
            try:
                self._on_job()
                await self.judge(finished)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must cost one label, not the worker
                log.exception("shadow judging failed for request %s", finished.request_id)
            finally:
                self.queue.task_done()

    # -- one job -----------------------------------------------------------------------------------------------
    def _local_idle(self, local: Backend) -> bool:
        waiting = getattr(local, "waiting", 0)
        inflight = getattr(local, "inflight", 0)
        return waiting == 0 and inflight < getattr(local, "max_concurrency", 1)

    async def _spend(self, kind: str, model: str, completion: Completion) -> None:
        dollars = self.costs.upstream_cost(model, completion.usage)
        self.metrics.spend.labels(kind).inc(dollars)
        await self.budget.add(dollars)

    async def _other_answer(self, finished: Finished, other: str, backend: Backend) -> Completion | None:
        request = shadow_request(finished.request, self.settings.shadow_max_tokens)
        model = self.tiers.model_for(other, finished.requested_model)  # type: ignore[arg-type]
        shadow_id = f"{finished.request_id}-shadow"
        try:
            if other != "upstream":  # a small-model tier: only when idle, within the shadow slots
                if not self._local_idle(backend) or self._local_slots.locked():
                    self.metrics.dropped.labels("local_busy").inc()
                    return None
                async with self._local_slots:
                    return await self._preemptible(backend, backend.complete(request, model, shadow_id))
            completion = await backend.complete(request, model, shadow_id)
        except GatewayError as exc:
            log.info("shadow answer from %s failed for %s: %s", other, finished.request_id, exc.message)
            self.metrics.shadow_errors.labels(other).inc()
            return None
        await self._spend("shadow", completion.model, completion)
        return completion

    async def _preemptible(self, backend: Backend, generation: Awaitable[Completion]) -> Completion | None:
        """Run a shadow generation on a small-model tier; cancel it (None, counted) as soon as a client request
        waits for that tier, so that client requests go first even after a shadow generation started."""
        task = asyncio.ensure_future(generation)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=PREEMPT_POLL_SECONDS)
                if done:
                    return task.result()
                if getattr(backend, "waiting", 0) > 0:
                    await cancel_and_wait(task)
                    self.metrics.dropped.labels("preempted").inc()
                    return None
        finally:
            if not task.done():  # this job itself was cancelled (shutdown)
                await cancel_and_wait(task)

    async def judge(self, finished: Finished) -> dict[str, Any] | None:
        """Shadow, judge and label one finished request; the row written, or None (the reason is counted)."""
        if self.privacy.is_private(finished.request, finished.reason):
            self.metrics.skipped.labels("private").inc()
            return None
        other = "upstream" if finished.served_tier != "upstream" else finished.small_tier
        backend = self.tiers.get(other)  # type: ignore[arg-type]
        upstream = self.tiers.upstream
        if backend is None or upstream is None:
            self.metrics.skipped.labels("no_tier").inc()
            return None
        if other != "upstream" and not required_features(finished.request) <= getattr(backend, "features", frozenset()):
            self.metrics.skipped.labels("unsupported").inc()
            return None
        if self.budget.exhausted():
            self.metrics.dropped.labels("budget").inc()
            return None
        shadow = await self._other_answer(finished, other, backend)
        if shadow is None:
            return None
        shadow_text = completion_text(shadow.body)
        if other != "upstream":
            local_text, upstream_text = shadow_text, finished.answer_text
            local_model, upstream_model = shadow.model, finished.served_model
        else:
            local_text, upstream_text = finished.answer_text, shadow_text
            local_model, upstream_model = finished.served_model, shadow.model
        prompt = last_user_prompt(finished.request)
        body = judge_request(self.judge_model, prompt, local_text, upstream_text, self.settings.judge_max_tokens)
        try:
            verdict_completion = await upstream.complete(
                parse_chat_request(msgspec.json.encode(body)), self.judge_model, f"{finished.request_id}-judge"
            )
        except GatewayError as exc:
            log.info("judge call failed for %s: %s", finished.request_id, exc.message)
            self.metrics.judge_errors.labels("upstream").inc()
            return None
        await self._spend("judge", self.judge_model, verdict_completion)
        try:
            verdict = parse_verdict(completion_text(verdict_completion.body))
        except MalformedVerdict as exc:
            log.info("malformed judge reply for %s: %s", finished.request_id, exc)
            self.metrics.judge_errors.labels("malformed").inc()
            return None
        self.metrics.verdicts.labels(
            "ok" if verdict.local_ok else "bad", "ok" if verdict.upstream_ok else "bad"
        ).inc()
        row = label_row(
            prompt=prompt,
            weak_correct=verdict.local_ok,
            strong_correct=verdict.upstream_ok,
            source="judge",
            request_id=finished.request_id,
            tenant_hash=hash_tenant(finished.tenant, self.settings.tenant_salt),
            served_tier=finished.served_tier,
            local_model=local_model,
            upstream_model=upstream_model,
            judge_model=self.judge_model,
            router_score=finished.score,
        )
        await self.sink.append(row)
        self.metrics.labels.labels("judge").inc()
        return row
