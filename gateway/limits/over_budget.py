"""`OverBudgetLocal` (`limits.over_budget_local`): a request over its key's or team's dollar cap that would spend
upstream is served by the local tier instead of a 429, when the local tier exists, the key may use it, it honours
what the request needs (`gateway.routing.capabilities`) and its own cost still fits under the caps."""

from __future__ import annotations

from gateway.dispatch import Tiers
from gateway.exchange import Exchange
from gateway.limits.records import KeyRecord
from gateway.routing.capabilities import required_features
from gateway.routing.decision import RouteDecision
from gateway.tiers.base import NO_FEATURES

BUDGET_REASON = "budget_exhausted"
"""The route reason label (`slm_gateway_requests_total{reason}`) of a request served locally over budget."""
BUDGET_DETAIL = "budget exhausted: served locally"
"""Its `x-gateway-route-reason`."""


class OverBudgetLocal:
    """Re-routes an over-budget exchange to the local tier (and back, when that does not fit either)."""

    def __init__(self, tiers: Tiers) -> None:
        self.tiers = tiers

    def reroute(self, ex: Exchange, record: KeyRecord) -> RouteDecision | None:
        """Route `ex` to the local tier, without fallback; the decision it had, or None when it cannot be."""
        decision, local = ex.decision, self.tiers.local
        assert decision is not None and ex.parsed is not None
        if local is None or (decision.tier != "upstream" and decision.fallback != "upstream"):
            return None
        if record.allowed_tiers is not None and "local" not in record.allowed_tiers:
            return None
        if required_features(ex.parsed) - getattr(local, "features", NO_FEATURES):
            return None
        new = RouteDecision(tier="local", reason=BUDGET_REASON, detail=BUDGET_DETAIL, cacheable=False)
        ex.routed(new, self.tiers.model_for("local", ex.parsed.chat.model))
        return decision

    def restore(self, ex: Exchange, decision: RouteDecision) -> None:
        """Put back the decision `reroute` replaced (the request is refused as it was decided)."""
        assert ex.parsed is not None
        ex.routed(decision, self.tiers.model_for(decision.tier, ex.parsed.chat.model))
