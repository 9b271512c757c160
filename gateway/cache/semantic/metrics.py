"""The semantic cache's Prometheus series (registered on the registry the app passes in)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

PREFIX = "slm_gateway_semantic_cache"
EMBED_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
SIMILARITY_BUCKETS = tuple(round(0.5 + i / 40, 3) for i in range(21))

REJECT_REASONS = (
    "scope", "turns", "length", "empty", "classes", "threshold", "guard", "entry", "timeout", "error",
)
"""Why a lookup did not hit: no scope for the request (`scope`), too many turns, prompt too long, nothing stored
in the scope (`empty`), nothing stored with the prompt's exact guard classes (`classes`: its numbers, negation,
polarity, ... differ from every stored prompt's, so the guard would refuse each; decided without embedding or
scanning), best candidate below the threshold, refused by the lexical guard, entry gone from the exact store,
deadline passed, embedder or store failure."""


class SemanticMetrics:
    """Hits, misses by reason, guard refusals by check, embed latency and hit similarity (the dollars semantic hits
    saved are a request metric: `GatewayMetrics.semantic_savings`, written by `gateway.accounting`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hits = Counter(f"{PREFIX}_hits_total", "Semantic cache hits.", registry=registry)
        self.rejected = Counter(
            f"{PREFIX}_rejected_total", "Semantic lookups that did not hit, by reason.", ["reason"], registry=registry
        )
        self.guard_refusals = Counter(
            f"{PREFIX}_guard_refusals_total",
            "Candidates above the threshold that the lexical guard refused, by the check that failed.",
            ["check"],
            registry=registry,
        )
        self.embed_seconds = Histogram(
            f"{PREFIX}_embed_seconds", "Time to embed one prompt.", buckets=EMBED_BUCKETS, registry=registry
        )
        self.similarity = Histogram(
            f"{PREFIX}_hit_similarity", "Cosine similarity of semantic hits.", buckets=SIMILARITY_BUCKETS,
            registry=registry,
        )
        self._rejected = {reason: self.rejected.labels(reason) for reason in REJECT_REASONS}
        self._refused: dict[str, Counter] = {}
        """Each labelled series looked up once (`labels()` takes a lock and checks the labels: a guard miss
        counts up to `candidates` refusals)."""

    # the observer interface SemanticCache calls
    def hit(self, similarity: float) -> None:
        self.hits.inc()
        self.similarity.observe(similarity)

    def miss(self, reason: str) -> None:
        series = self._rejected.get(reason)
        (series if series is not None else self.rejected.labels(reason)).inc()

    def guard_refused(self, check: str) -> None:
        series = self._refused.get(check)
        if series is None:
            series = self._refused[check] = self.guard_refusals.labels(check)
        series.inc()

    def embedded(self, seconds: float) -> None:
        self.embed_seconds.observe(seconds)
