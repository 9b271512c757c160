"""The fixed router: pins by model name or `x-gateway-route` header, else upstream when one exists."""

from __future__ import annotations

from gateway.routing.decision import RouteContext, RouteDecision, Tier

ROUTE_HEADER = "x-gateway-route"
PIN_NAMES: frozenset[str] = frozenset({"local", "upstream"})


def pinned_tier(ctx: RouteContext) -> tuple[Tier, str] | None:
    """The tier a client pinned with `x-gateway-route` or `model: local|upstream`, and how it pinned it."""
    header = ctx.headers.get(ROUTE_HEADER)
    if header:
        value = header.strip().lower()
        if value in PIN_NAMES:
            return value, f"header {ROUTE_HEADER}: {value}"  # type: ignore[return-value]
    model = ctx.request.chat.model
    if model in PIN_NAMES:
        return model, f"model {model!r}"  # type: ignore[return-value]
    return None


class StaticRouter:
    """Routes without a classifier: pins first, then any model name upstream (or local when there is none)."""

    def __init__(self, spill_to_upstream: bool = True) -> None:
        self.spill_to_upstream = spill_to_upstream

    def decide(self, ctx: RouteContext) -> RouteDecision:
        pinned = pinned_tier(ctx)
        if pinned is not None:
            tier, how = pinned
            fallback = "upstream" if tier == "local" and self.spill_to_upstream and ctx.has_upstream else None
            return RouteDecision(tier=tier, reason="pinned", detail=f"pinned by {how}", fallback=fallback)
        if ctx.has_upstream:
            return RouteDecision(tier="upstream", reason="default", detail="model name goes upstream as-is")
        return RouteDecision(tier="local", reason="no_upstream", detail="no upstream configured")
