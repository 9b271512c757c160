"""Prometheus metrics of the gateway: one `GatewayMetrics` per app, no module-level registry.

Every metric name starts with ``slm_gateway_`` and follows Prometheus conventions (base units, ``_total`` for
counters, ``_seconds`` for durations). With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes), values
are written by prometheus-client's multiprocess mode and `render` aggregates all workers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess

from gateway.learning.metrics import LearningMetrics
from gateway.limits.metrics import LimitMetrics

PREFIX = "slm_gateway"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
SCORE_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))


def multiprocess_dir() -> str | None:
    """The multiprocess directory when the gateway runs several workers, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class GatewayMetrics:
    """All gateway metrics, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        self.requests = Counter(
            f"{p}_requests_total",
            "Chat completion requests answered, by tier (local|upstream|cache), HTTP status and route reason.",
            ["tier", "status", "reason"],
            registry=r,
        )
        self.request_duration = Histogram(
            f"{p}_request_duration_seconds",
            "Total time from request received to last byte sent, by tier.",
            ["tier", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            f"{p}_time_to_first_token_seconds",
            "Time from request received to the first content token sent (streaming requests), by tier.",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            f"{p}_overhead_seconds",
            "Time the gateway itself adds: total time minus time spent waiting on the tier.",
            ["tier"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            f"{p}_prompt_tokens_total", "Prompt (input) tokens, by tier and model.", ["tier", "model"], registry=r
        )
        self.completion_tokens = Counter(
            f"{p}_completion_tokens_total",
            "Completion (output) tokens, by tier and model.",
            ["tier", "model"],
            registry=r,
        )
        self.local_queue_depth = Gauge(
            f"{p}_local_queue_depth",
            "Requests waiting for a local generation slot.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.local_inflight = Gauge(
            f"{p}_local_inflight",
            "Local generations running now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.tier_queue_depth = Gauge(
            f"{p}_tier_queue_depth",
            "Requests waiting for a generation slot, by in-process tier (local and every slm_tiers GGUF).",
            ["tier"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.tier_inflight = Gauge(
            f"{p}_tier_inflight",
            "Generations running now, by in-process tier (local and every slm_tiers GGUF).",
            ["tier"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.local_rejected = Counter(
            f"{p}_local_rejected_total",
            "Requests the local tier turned away, by reason (queue_full|context_too_long).",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            f"{p}_upstream_errors_total",
            "Upstream failures by kind (connect|timeout|auth|status_4xx|status_5xx|protocol).",
            ["kind"],
            registry=r,
        )
        self.tier_errors = Counter(
            f"{p}_tier_errors_total",
            "Tier failures by tier and kind (connect|timeout|auth|status_4xx|status_5xx|protocol for an HTTP tier, "
            "queue_full|context_too_long for an in-process one), every tier: local, upstream and each of slm_tiers.",
            ["tier", "kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            f"{p}_fallbacks_total",
            "Requests retried on another tier after a tier failed, by from and to tier.",
            ["from_tier", "to_tier"],
            registry=r,
        )
        self.cache_lookups = Counter(
            f"{p}_cache_lookups_total", "Cache lookups by result (hit|miss|bypass).", ["result"], registry=r
        )
        self.cache_errors = Counter(
            f"{p}_cache_errors_total",
            "Cache backend failures by operation (get|set|connect|decode).",
            ["operation"],
            registry=r,
        )
        self.cache_backend_up = Gauge(
            f"{p}_cache_backend_up",
            "1 while the cache backend (Redis) answers, 0 while it cannot be reached (the in-process cache is always 1).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.routing_decisions = Counter(
            f"{p}_routing_decisions_total",
            "Routing decisions by chosen tier and reason (the policy rule name, or 'classifier').",
            ["tier", "reason"],
            registry=r,
        )
        self.classifier_score = Histogram(
            f"{p}_classifier_score",
            "Classifier p_strong scores of auto-routed requests.",
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.classifier_duration = Histogram(
            f"{p}_classifier_duration_seconds",
            "Time to score one request with the classifier, feature extraction included.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            f"{p}_reloads_total",
            "Policy / classifier reloads by component and result (success|failure).",
            ["component", "result"],
            registry=r,
        )
        self.cost = Counter(
            f"{p}_cost_dollars_total", "What requests cost, in US dollars, by tier.", ["tier"], registry=r
        )
        self.savings = Counter(
            f"{p}_savings_dollars_total",
            "Upstream price of locally served or cached requests minus what they cost, in US dollars, by tier.",
            ["tier"],
            registry=r,
        )
        self.semantic_savings = Counter(
            f"{p}_semantic_cache_savings_dollars_total",
            "The part of the cache tier's savings that semantic hits (paraphrases of a cached prompt) made, in US dollars.",
            registry=r,
        )
        self.learning = LearningMetrics(r)
        self.limits = LimitMetrics(r)

    def render(self) -> tuple[bytes, str]:
        """The exposition text (all workers in multiprocess mode) and its content type."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
