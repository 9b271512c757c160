"""What a router decides for one request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

import msgspec

from gateway.openai.request import ParsedRequest
from gateway.tiers.base import ALL_FEATURES, NO_FEATURES

Tier = Literal["local", "upstream"]


class RouteDecision(msgspec.Struct, frozen=True):
    """The tier chosen for a request, why, and where to go if that tier fails.

    `reason` is a short machine-readable label (the policy rule's name, or "classifier"); `detail` is the
    human-readable explanation sent in `x-gateway-route-reason`.
    """

    tier: Tier
    reason: str
    detail: str
    fallback: Tier | None = None
    score: float | None = None
    threshold: float | None = None
    cacheable: bool | None = None
    """Policy override of the default cacheability (None: the cache decides)."""
    cache_kind: Literal["exact", "semantic"] | None = None
    """Policy choice of the cache kinds that may answer: exact repeats only, or paraphrases too (None: the
    cache's settings decide)."""
    familiarity: float | None = None
    """How familiar the prompt was to the classifier's training prompts, when a rule asked (see `When.familiarity`)."""


class RouteContext(msgspec.Struct):
    """What a router may look at: the parsed request, the request headers, which tiers exist and which optional
    request features (`gateway.tiers.base.ALL_FEATURES`) each honours."""

    request: ParsedRequest
    headers: Mapping[str, str]
    has_upstream: bool
    has_local: bool
    local_features: frozenset[str] = NO_FEATURES
    upstream_features: frozenset[str] = ALL_FEATURES

    def has(self, tier: Tier) -> bool:
        """Whether `tier` is configured."""
        return self.has_local if tier == "local" else self.has_upstream

    def features_of(self, tier: Tier) -> frozenset[str]:
        return self.local_features if tier == "local" else self.upstream_features


class Router(Protocol):
    """Decides the tier for each request. One method, like RouteLLM's routers."""

    def decide(self, ctx: RouteContext) -> RouteDecision: ...
