"""`build_limits(settings)`: the limiter the settings ask for (None when limits are off), and its store."""

from __future__ import annotations

from gateway.costs import CostModel
from gateway.dispatch import Tiers
from gateway.limits.directory import KeyDirectory
from gateway.limits.lease import LeasedLimitStore
from gateway.limits.limiter import Limiter
from gateway.limits.memory_store import MemoryLimitStore
from gateway.limits.metrics import LimitMetrics
from gateway.limits.over_budget import OverBudgetLocal
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.store import LimitStore
from gateway.settings import Settings


def build_limit_store(settings: Settings) -> LimitStore:
    """Redis at `limits.redis_url` (default `cache.redis_url`), else the in-process store."""
    url = settings.limits.redis_url or settings.cache.redis_url
    if url:
        return RedisLimitStore(url, prefix=settings.limits.key_prefix, timeout_seconds=settings.limits.timeout_seconds)
    return MemoryLimitStore(settings.limits.key_prefix)


def build_limits(
    settings: Settings, costs: CostModel, metrics: LimitMetrics, tiers: Tiers | None = None
) -> Limiter | None:
    """The limiter `settings` ask for, or None when `limits.enabled` is off (`tiers`: for `over_budget_local`)."""
    if not settings.limits.enabled:
        return None
    store = build_limit_store(settings)
    if settings.limits.lease_blocks and isinstance(store, RedisLimitStore):
        store = LeasedLimitStore(store, settings.limits, metrics)
    directory = KeyDirectory(store, metrics, refresh_seconds=settings.limits.key_refresh_seconds)
    over_budget = OverBudgetLocal(tiers) if settings.limits.over_budget_local and tiers is not None else None
    return Limiter(store, directory, costs, metrics, settings.limits, local_max_tokens=settings.local.max_tokens_default,
                   over_budget=over_budget)
