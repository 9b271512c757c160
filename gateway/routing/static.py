"""The fixed router: pins by model name or `x-gateway-route` header, else upstream when one exists."""

from __future__ import annotations

from gateway.errors import InvalidRequest
from gateway.routing.capabilities import first_missing, required_features
from gateway.routing.decision import RouteContext, RouteDecision, Tier

ROUTE_HEADER = "x-gateway-route"
PIN_NAMES: frozenset[str] = frozenset({"local", "upstream"})


def pinned_tier(ctx: RouteContext) -> tuple[Tier, str] | None:
    """The tier a client pinned with `x-gateway-route` or `model: local|upstream` (or a named SLM tier by its
    name or its model's), and how it pinned it."""
    header = ctx.headers.get(ROUTE_HEADER)
    if header:
        value = header.strip().lower()
        if value in PIN_NAMES or value in ctx.slm_tiers:
            return value, f"header {ROUTE_HEADER}: {value}"
    model = ctx.request.chat.model
    if model in PIN_NAMES:
        return model, f"model {model!r}"
    if model in ctx.slm_aliases:
        return ctx.slm_aliases[model], f"model {model!r}"
    return None


class StaticRouter:
    """Routes without a classifier: pins first (never spilled to the other tier), then any model name upstream
    (or local when there is none). A request needing a feature its tier lacks goes upstream, or gets a 400."""

    def __init__(self, spill_to_upstream: bool = True) -> None:
        self.spill_to_upstream = spill_to_upstream  # kept for callers; pinned requests never spill any more

    def decide(self, ctx: RouteContext) -> RouteDecision:
        needs = required_features(ctx.request)
        pinned = pinned_tier(ctx)
        if pinned is not None:
            tier, how = pinned
            if not ctx.has(tier):
                raise InvalidRequest(f"The request is pinned to the {tier} tier ({how}), which this gateway does not "
                                     "have.", param="model", code=f"{tier}_not_configured")
            if needs - ctx.features_of(tier):
                _, param = first_missing(ctx.request, needs - ctx.features_of(tier))
                raise InvalidRequest(f"The request is pinned to the {tier} tier ({how}), which does not support "
                                     f"'{param}'.", param=param, code=f"unsupported_on_{tier}")
            return RouteDecision(tier=tier, reason="pinned", detail=f"pinned by {how}")
        if ctx.has_upstream:
            return RouteDecision(tier="upstream", reason="default", detail="model name goes upstream as-is")
        if needs - ctx.local_features:
            _, param = first_missing(ctx.request, needs - ctx.local_features)
            raise InvalidRequest(f"'{param}' is not supported by the local model, and no upstream is configured on "
                                 "this gateway.", param=param, code="unsupported_on_local")
        return RouteDecision(tier="local", reason="no_upstream", detail="no upstream configured")
