"""Prometheus metrics of shadow judging and feedback (registered in the gateway's registry by GatewayMetrics).

Every known label value is created at zero, so that dashboards and alerts see the series before any label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

PREFIX = "slm_gateway"
LABEL_SOURCES = ("judge", "feedback")
VERDICT_VALUES = ("ok", "bad")
SPEND_KINDS = ("judge", "shadow")
DROP_REASONS = ("queue_full", "local_busy", "preempted", "budget")
SKIP_REASONS = ("private", "opt_out", "unsupported", "no_tier", "too_long")
JUDGE_ERRORS = ("malformed", "upstream")
TIERS = ("local", "upstream")
SINKS = ("redis", "file")
FEEDBACK_RESULTS = ("recorded", "unknown_request", "duplicate", "invalid")
RETRAIN_RESULTS = ("installed", "refused", "undecided", "skipped", "failed")


class LearningMetrics:
    """Labels collected, judge verdicts and spend, shadow drops and the router model in use."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p, r = PREFIX, registry
        self.labels = Counter(f"{p}_learning_labels_total", "Label rows written, by source (judge|feedback).",
                              ["source"], registry=r)
        self.verdicts = Counter(
            f"{p}_learning_verdicts_total",
            "Judge verdicts on shadowed requests, by grade of the local and of the upstream answer (ok|bad).",
            ["local", "upstream"], registry=r,
        )
        self.spend = Counter(
            f"{p}_learning_spend_dollars_total",
            "What shadow judging spent, in US dollars, by kind (judge calls | upstream shadow answers).",
            ["kind"], registry=r,
        )
        self.dropped = Counter(
            f"{p}_learning_shadow_dropped_total",
            "Sampled requests not judged for lack of room, by reason (queue_full|local_busy|preempted|budget; "
            "preempted: a client request came for the small-model tier during the shadow generation).",
            ["reason"], registry=r,
        )
        self.skipped = Counter(
            f"{p}_learning_shadow_skipped_total",
            "Requests never shadowed by rule, by reason (private|opt_out|unsupported|no_tier|too_long; opt_out "
            "and too_long: every such request).",
            ["reason"], registry=r,
        )
        self.judge_errors = Counter(
            f"{p}_learning_judge_errors_total",
            "Judge calls that gave no verdict, by kind (malformed reply | upstream failure); the label is dropped.",
            ["kind"], registry=r,
        )
        self.shadow_errors = Counter(
            f"{p}_learning_shadow_errors_total",
            "Shadow answers that failed, by the tier asked (local|upstream); the label is dropped.",
            ["tier"], registry=r,
        )
        self.write_errors = Counter(
            f"{p}_learning_label_write_errors_total",
            "Label writes that failed, by sink (redis|file); the row is retried with the next one.",
            ["sink"], registry=r,
        )
        self.rows_lost = Counter(
            f"{p}_learning_labels_lost_total", "Label rows dropped because no sink could take them.", registry=r
        )
        self.queue_depth = Gauge(
            f"{p}_learning_shadow_queue_depth", "Shadow jobs waiting.", registry=r, multiprocess_mode="livesum"
        )
        self.feedback = Counter(
            f"{p}_learning_feedback_total",
            "POST /v1/feedback calls by result (recorded|unknown_request|duplicate|invalid).",
            ["result"], registry=r,
        )
        self.retrains = Counter(
            f"{p}_learning_retrains_total",
            "learning.auto_retrain runs, by result (installed|refused|undecided: promote's verdict; skipped: too few "
            "new labels; failed).",
            ["result"], registry=r,
        )
        self.model_apgr = Gauge(
            f"{p}_router_model_apgr",
            "Evaluated APGR of the router model in use (NaN when its metadata has none), by model version.",
            ["version"], registry=r, multiprocess_mode="max",
        )
        for source in LABEL_SOURCES:
            self.labels.labels(source)
        for local in VERDICT_VALUES:
            for upstream in VERDICT_VALUES:
                self.verdicts.labels(local, upstream)
        for kind in SPEND_KINDS:
            self.spend.labels(kind)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for kind in JUDGE_ERRORS:
            self.judge_errors.labels(kind)
        for tier in TIERS:
            self.shadow_errors.labels(tier)
        for sink in SINKS:
            self.write_errors.labels(sink)
        for result in FEEDBACK_RESULTS:
            self.feedback.labels(result)
        for result in RETRAIN_RESULTS:
            self.retrains.labels(result)
        self._version: str | None = None

    def set_model(self, version: str, apgr: float | None) -> None:
        """Show `version` (and its APGR) as the router model in use."""
        if version == self._version:
            return
        if self._version is not None:
            try:
                self.model_apgr.remove(self._version)
            except KeyError:
                pass
        self._version = version
        self.model_apgr.labels(version).set(float("nan") if apgr is None else apgr)
