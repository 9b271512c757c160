"""`Accounting`: the one writer of request metrics. It records each `Exchange` once, when the exchange is done."""

from __future__ import annotations

import time

from gateway.access_log import AccessLog
from gateway.costs import CostModel
from gateway.errors import GatewayError
from gateway.failure_kinds import HTTP_KINDS, IN_PROCESS_KINDS, failure_kind
from gateway.exchange import CLIENT_CLOSED_REQUEST, NO_TIER, SEMANTIC_HIT, Exchange
from gateway.metric_children import Children
from gateway.metrics import GatewayMetrics
from gateway.model_labels import ModelLabels
from gateway.openai.wire import Usage
from gateway.routing.decision import Tier
from gateway.routing.policy_router import REJECTED


class Accounting:
    """Counts decisions, requests, latencies, tokens, cost and savings, and tier failures and fallbacks."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        costs: CostModel,
        model_labels: ModelLabels | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.metrics = metrics
        self.costs = costs
        self.model_labels = model_labels or ModelLabels(costs.known_models())
        self.access_log = access_log
        m = metrics  # the request path's series, looked up once per label tuple (metric_children.py)
        self._decisions = Children(m.routing_decisions)
        self._requests = Children(m.requests)
        self._duration = Children(m.request_duration)
        self._first_token = Children(m.time_to_first_token)
        self._overhead = Children(m.overhead)
        self._prompt_tokens = Children(m.prompt_tokens)
        self._completion_tokens = Children(m.completion_tokens)
        self._cost = Children(m.cost)
        self._savings = Children(m.savings)
        self._fallbacks = Children(m.fallbacks)
        self._tier_errors = Children(m.tier_errors)

    def routed(self, ex: Exchange) -> None:
        """Count the routing decision (as soon as it is made)."""
        decision = ex.decision
        assert decision is not None
        self._decisions(decision.tier, decision.reason).inc()
        if decision.score is not None:
            self.metrics.classifier_score.observe(decision.score)

    def rejected(self, ex: Exchange) -> None:
        """Count a routing decision that refused the request (whatever the router)."""
        self._decisions(REJECTED, ex.reason).inc()

    def record(self, ex: Exchange) -> None:
        """Record one finished request: counts, latency, overhead, tokens, cost and savings; its access log line."""
        total = time.perf_counter() - ex.started
        self._count(ex, total)
        if self.access_log is not None:
            self.access_log(ex, total)

    def _count(self, ex: Exchange, total: float) -> None:
        if ex.failures is not None:
            for tier, exc in ex.failures:
                self._count_failure(tier, exc)
        decision = ex.decision
        if ex.fallback is not None and decision is not None:
            self._fallbacks(decision.tier, ex.fallback).inc()
        if ex.refused:  # answered with an error status: counted under the decided tier ("none" before routing)
            self._requests(decision.tier if decision is not None else NO_TIER, ex.status, ex.reason).inc()
            return
        tier = ex.tier
        if ex.first_token_at is not None:
            self._first_token(tier).observe(ex.first_token_at - ex.started)
        self._requests(tier, ex.status, ex.reason).inc()
        self._duration(tier, "true" if ex.stream else "false").observe(total)
        self._overhead(tier).observe(max(0.0, total - ex.tier_seconds))
        if ex.status >= 400 and ex.status != CLIENT_CLOSED_REQUEST:  # a stream the client left: what it generated
            return
        usage = ex.usage
        model = self.model_labels(ex.answered_model)  # bounded: clients choose model names
        self._prompt_tokens(tier, model).inc(usage.prompt_tokens)
        self._completion_tokens(tier, model).inc(usage.completion_tokens)
        assert ex.parsed is not None
        cost, savings = self.costs.charge(tier, ex.parsed.chat.model, ex.answered_model, usage, ex.tier_seconds)
        self._cost(tier).inc(cost)
        if savings is not None:
            self._savings(tier).inc(savings)
            if ex.cache == SEMANTIC_HIT:
                self.metrics.semantic_savings.inc(savings)

    def outside_chat(
        self, tier: str, status: int, reason: str, started: float, usage: Usage | None = None, model: str = ""
    ) -> None:
        """Record a request that has no chat view (passed through as-is, or an embedding): count and latency;
        with the `usage` a successful answer reported (by `model`), its tokens and cost too."""
        self._requests(tier, status, reason).inc()
        self._duration(tier, "false").observe(time.perf_counter() - started)
        if usage is None or status >= 400:
            return
        label = self.model_labels(model)
        self._prompt_tokens(tier, label).inc(usage.prompt_tokens)
        self._completion_tokens(tier, label).inc(usage.completion_tokens)
        cost, savings = self.costs.charge(tier, model, model, usage, 0.0)
        self._cost(tier).inc(cost)
        if savings is not None:
            self._savings(tier).inc(savings)

    def _count_failure(self, tier: Tier, exc: GatewayError) -> None:
        """Count a tier's failure under that tier (`tier_errors_total`); the upstream's and the local tier's also in
        their own series (`upstream_errors_total`, `local_rejected_total`), as before named tiers existed."""
        kind = failure_kind(exc)
        if kind is None:
            return
        self._tier_errors(tier, kind).inc()
        if tier == "upstream" and kind in HTTP_KINDS:
            self.metrics.upstream_errors.labels(kind).inc()
        elif tier == "local" and kind in IN_PROCESS_KINDS:
            self.metrics.local_rejected.labels(kind).inc()
