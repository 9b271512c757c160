"""`Learning`: shadow judging and feedback for one app, and the one hook the request path calls.

The hook, `Learning.attach`, runs when a chat request has an answer ready to send (errors never reach it). It
ignores cache hits and opted-out requests, remembers the request for feedback, and for a sampled request returns
a callback that the HTTP layer runs once the client has the whole answer (litestar's response `background`):
only then is the finished request offered to the shadow queue.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from gateway.costs import CostModel
from gateway.dispatch import AfterSend, Answer, StreamAnswer, Tiers
from gateway.exchange import Exchange
from gateway.learning.budget import DailyBudget
from gateway.learning.feedback import FeedbackDesk
from gateway.learning.finished import Finished, StreamText, completion_text, last_user_prompt
from gateway.learning.labels import LabelSink
from gateway.learning.metrics import LearningMetrics
from gateway.learning.privacy import PrivacyGuard, opted_out
from gateway.learning.recent import RecentRequests, Remembered
from gateway.learning.redis_client import close_client, learning_redis
from gateway.learning.retrain import AutoRetrain
from gateway.learning.shadow import ShadowJudge
from gateway.openai.wire import FinalChunk, Usage
from gateway.routing.scorer import model_facts
from gateway.settings import Settings

log = logging.getLogger("slm_gateway.learning")


class Learning:
    """Shadow sampler + worker, recent-request memory and feedback desk, built from the settings."""

    def __init__(self, settings: Settings, *, tiers: Tiers, costs: CostModel, metrics: LearningMetrics,
                 router: Any, reload_pid: int | None = None) -> None:
        ls = settings.learning
        self.settings = ls
        self.tiers = tiers
        self.metrics = metrics
        self.router = router
        wanted = ls.shadow_rate > 0 or ls.feedback or ls.auto_retrain.interval_seconds > 0
        self.redis = learning_redis(settings.cache.redis_url) if wanted and settings.cache.redis_url else None
        self.sink = LabelSink(
            path=ls.labels_path, redis=self.redis, stream=ls.redis_stream, stream_max_len=ls.stream_max_len,
            on_error=lambda sink: metrics.write_errors.labels(sink).inc(),
            on_drop=metrics.rows_lost.inc,
        )
        self.privacy = PrivacyGuard(router)
        self.budget = DailyBudget(ls.max_judge_dollars_per_day, redis=self.redis, key_prefix=ls.redis_stream)
        self.judge_model = ls.judge_model or settings.upstream.default_model
        self.shadow = ShadowJudge(
            ls, tiers=tiers, costs=costs, sink=self.sink, budget=self.budget, metrics=metrics,
            privacy=self.privacy, judge_model=self.judge_model, on_job=self.observe_router,
        )
        self.shadow_on = ls.shadow_rate > 0 and self.sink.configured and tiers.upstream is not None
        self.feedback_on = ls.feedback and self.sink.configured
        self.recent = RecentRequests(ls.recent_requests, redis=self.redis, key_prefix=ls.redis_stream,
                                     ttl_seconds=ls.recent_ttl_seconds)
        self.desk = FeedbackDesk(self.recent, self.sink, metrics, self.privacy, ls.tenant_salt)
        self._opt_out_tags = frozenset(ls.opt_out_tags)
        self.retrain = AutoRetrain(
            ls.auto_retrain, labels_path=ls.labels_path, redis=self.redis, stream=ls.redis_stream,
            target=settings.classifier_model, reload_pid=os.getpid() if reload_pid is None else reload_pid,
            metrics=metrics,
        )
        if wanted and not self.sink.configured:
            log.warning("learning is on but labels go nowhere: set learning.labels_path or cache.redis_url")

    @property
    def active(self) -> bool:
        return self.shadow_on or self.feedback_on or self.retrain.on

    async def start(self) -> None:
        self.observe_router()
        if self.shadow_on:
            await self.shadow.start()
        if self.feedback_on:
            await self.recent.start()
        await self.retrain.start()

    async def stop(self) -> None:
        await self.retrain.stop()
        await self.shadow.stop()
        await self.recent.stop()
        if self.redis is not None:
            await close_client(self.redis)

    def observe_router(self) -> None:
        """Show the router model in use (its version and evaluated APGR) in the metrics."""
        policy = getattr(self.router, "current", self.router)
        facts = model_facts(getattr(policy, "scorer", None))
        if facts is not None:
            self.metrics.set_model(*facts)

    # -- the hook ------------------------------------------------------------------------------------------
    def attach(self, answer: Answer | StreamAnswer, ex: Exchange) -> AfterSend | None:
        """Remember the request for feedback; for a sampled one, the callback to run after the answer is sent.

        A request served by a named SLM tier is learned like a local one: its labels grade that tier (its
        `local_model`) against the upstream; an upstream-served request is shadowed on its rule's small tier.

        For a sampled stream, `answer.chunks` is wrapped to collect the text the client receives.
        """
        served = ex.tier  # "cache" for a hit
        parsed, decision, request_id, tenant, headers = ex.parsed, ex.decision, ex.request_id, ex.tenant, ex.headers
        if parsed is None or decision is None or self.tiers.get(served) is None:
            return None  # a cache hit (tier "cache"), or no tier answered
        small = served if served != "upstream" else decision.small_tier
        if isinstance(answer, Answer) and answer.status != 200:
            return None
        if not (self.shadow_on or self.feedback_on):  # auto-retraining alone has nothing to do per request
            return None
        if opted_out(headers, parsed.raw, self.settings.opt_out_header, self._opt_out_tags):
            if self.shadow_on:
                self.metrics.skipped.labels("opt_out").inc()
            return None
        prompt = last_user_prompt(parsed)
        if len(prompt) > self.settings.max_prompt_chars:
            self.metrics.skipped.labels("too_long").inc()
            return None
        served_model = ex.model or self.tiers.model_for(served, parsed.chat.model)
        if self.feedback_on and not self.privacy.rule_keeps_local(decision.reason):
            local = served != "upstream"
            self.recent.remember(Remembered(
                request_id=request_id, tenant=tenant, served_tier=served, prompt=prompt,
                local_model=served_model if local else None, upstream_model=None if local else served_model,
                router_score=decision.score,
            ))
        if not self.shadow_on or not self.shadow.sampled():
            return None

        def finished(text: str, usage: Usage) -> Finished:
            return Finished(
                request_id=request_id, tenant=tenant, request=parsed, served_tier=served,
                served_model=served_model, answer_text=text, usage=usage, reason=decision.reason,
                score=decision.score, requested_model=parsed.chat.model, small_tier=small,
            )

        if isinstance(answer, Answer):
            body = answer.body

            async def offer_answer() -> None:
                self.shadow.offer(finished(completion_text(body), ex.usage))

            return offer_answer
        collected = StreamText()
        done = [False]
        answer.chunks = _collecting(answer.chunks, collected, done)

        async def offer_stream() -> None:
            if done[0]:
                self.shadow.offer(finished(collected.text, ex.usage))

        return offer_stream

    async def feedback(self, body: bytes, tenant: str) -> dict[str, object]:
        return await self.desk.record(body, tenant)


async def _collecting(chunks: AsyncIterator[bytes], collected: StreamText, done: list[bool]) -> AsyncIterator[bytes]:
    """Relay `chunks`, feeding each to `collected`; `done[0]` once the stream ended with [DONE]."""
    try:
        async for chunk in chunks:
            collected.feed(chunk)
            if isinstance(chunk, FinalChunk):
                done[0] = chunk.endswith(b"data: [DONE]\n\n")
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def build_learning(settings: Settings, tiers: Tiers, costs: CostModel, metrics: Any, router: Any,
                   reload_pid: int | None = None) -> Learning | None:
    """The app's `Learning`, or None when neither shadow judging, feedback nor auto-retraining is on."""
    learning = Learning(settings, tiers=tiers, costs=costs, metrics=metrics.learning, router=router,
                        reload_pid=reload_pid)
    if learning.active:
        return learning
    learning.observe_router()  # the model version is shown either way
    return None
