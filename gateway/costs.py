"""What a request cost, and what it saved compared with sending it upstream.

Cost: a cache hit costs nothing; a local answer its tokens at `local_per_million_tokens` plus the time it ran
at `local_per_hour`; an upstream answer its tokens at the answering model's price. Savings (local answers and
cache hits only): what the reference upstream model would have charged for the same tokens, minus the cost,
never below zero. The reference is the requested model when it is priced, else the upstream default.
"""

from __future__ import annotations

from gateway.openai.wire import Usage
from gateway.settings import CostSettings, UpstreamPrice

_PER_MILLION = 1_000_000.0


class CostModel:
    """Prices from the config's cost table. Unknown upstream models cost 0 (and so save 0)."""

    def __init__(self, costs: CostSettings, reference_model: str) -> None:
        self._prices = costs.upstream
        self._local_per_token = costs.local_per_million_tokens / _PER_MILLION
        self._local_per_second = costs.local_per_hour / 3600.0
        self.reference_model = reference_model

    def known_models(self) -> list[str]:
        """The models this table prices, and the reference model."""
        return [*self._prices, self.reference_model]

    def price_of(self, model: str) -> UpstreamPrice | None:
        """The price entry of an upstream model: exact name, else the longest configured prefix (dated names)."""
        price = self._prices.get(model)
        if price is not None:
            return price
        best = max((name for name in self._prices if model.startswith(name)), key=len, default=None)
        return self._prices[best] if best is not None else None

    def upstream_cost(self, model: str, usage: Usage) -> float:
        """Dollars an upstream answer of `usage` tokens costs with `model`."""
        price = self.price_of(model) or self.price_of(self.reference_model)
        if price is None:
            return 0.0
        return (usage.prompt_tokens * price.input_per_million + usage.completion_tokens * price.output_per_million) / _PER_MILLION

    def local_cost(self, usage: Usage, busy_seconds: float) -> float:
        """Dollars a local answer costs: per token, plus the share of the hourly price for the time it ran."""
        return usage.total_tokens * self._local_per_token + busy_seconds * self._local_per_second

    def reference_for(self, requested_model: str) -> str:
        """The upstream model a request would have used: its own name when priced, else the default."""
        return requested_model if self.price_of(requested_model) is not None else self.reference_model

    def charge(
        self, tier: str, requested_model: str, answered_model: str, usage: Usage, busy_seconds: float
    ) -> tuple[float, float | None]:
        """(cost, savings) of an answer by `tier` ("upstream", "cache", or "local" / a named SLM tier, which cost
        what the local tier does); savings is None upstream."""
        if tier == "cache":
            cost = 0.0
        elif tier == "upstream":
            return self.upstream_cost(answered_model, usage), None
        else:
            cost = self.local_cost(usage, busy_seconds)
        upstream_price = self.upstream_cost(self.reference_for(requested_model), usage)
        return cost, max(0.0, upstream_price - cost)
