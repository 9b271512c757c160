"""What a router decides for one request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec

from gateway.openai.request import ParsedRequest
from gateway.tiers.base import ALL_FEATURES, NO_FEATURES

Tier = str
"""A tier's name: "local" (the in-process model of `local`), "upstream", or a name from `slm_tiers`."""
UPSTREAM = "upstream"


class RouteDecision(msgspec.Struct, frozen=True):
    """The tier chosen for a request, why, and where to go if that tier fails.

    `reason` is a short machine-readable label (the policy rule's name, or "classifier"); `detail` is the
    human-readable explanation sent in `x-gateway-route-reason`.
    """

    tier: Tier
    reason: str
    detail: str
    fallback: Tier | None = None
    then: tuple[Tier, ...] = ()
    """Tiers tried after `fallback`, in order, while each fails recoverably (a rule's `fallback_tiers`)."""
    score: float | None = None
    threshold: float | None = None
    cacheable: bool | None = None
    """Policy override of the default cacheability (None: the cache decides)."""
    cache_kind: Literal["exact", "semantic"] | None = None
    """Policy choice of the cache kinds that may answer: exact repeats only, or paraphrases too (None: the
    cache's settings decide)."""
    familiarity: float | None = None
    """How familiar the prompt was to the classifier's training prompts, when a rule asked (see `When.familiarity`)."""
    small_tier: Tier = "local"
    """The small-model tier this request's rule weighs against upstream (its `slm_tier`; default `local`): the
    weak side of learning's labels when the upstream served it."""


class RouteContext(msgspec.Struct):
    """What a router may look at: the parsed request, the request headers, which tiers exist and which optional
    request features (`gateway.tiers.base.ALL_FEATURES`) each honours."""

    request: ParsedRequest
    headers: Mapping[str, str]
    has_upstream: bool
    has_local: bool
    local_features: frozenset[str] = NO_FEATURES
    upstream_features: frozenset[str] = ALL_FEATURES
    slm_tiers: Mapping[str, frozenset[str]] = msgspec.field(default_factory=dict)
    """The named SLM tiers (`slm_tiers`) and the features each honours."""
    slm_aliases: Mapping[str, str] = msgspec.field(default_factory=dict)
    """Model names that pin a named SLM tier (its name and the model it serves) -> the tier."""

    def has(self, tier: Tier) -> bool:
        """Whether `tier` is configured."""
        if tier == "local":
            return self.has_local
        return self.has_upstream if tier == UPSTREAM else tier in self.slm_tiers

    def features_of(self, tier: Tier) -> frozenset[str]:
        if tier == "local":
            return self.local_features
        return self.upstream_features if tier == UPSTREAM else self.slm_tiers.get(tier, NO_FEATURES)


class Router(Protocol):
    """Decides the tier for each request. One method, like RouteLLM's routers."""

    def decide(self, ctx: RouteContext) -> RouteDecision: ...
