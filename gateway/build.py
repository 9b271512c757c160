"""`build_gateway(settings)`: every component of one gateway, wired into a `Pipeline` (framework-free)."""

from __future__ import annotations

from pathlib import Path

from gateway.access_log import build_access_log
from gateway.accounting import Accounting
from gateway.auth import KeyChecker
from gateway.cache import build_cache_layer
from gateway.costs import CostModel
from gateway.dispatch import Dispatcher, Tiers
from gateway.health import build_health
from gateway.learning.service import build_learning
from gateway.metrics import GatewayMetrics
from gateway.model_labels import ModelLabels
from gateway.pipeline import Pipeline
from gateway.routing.decision import Router
from gateway.routing.reloadable import router_from_settings
from gateway.settings import Settings, SlmTierSettings
from gateway.tiers.base import Backend
from gateway.tiers.bundled_model import ensure_bundled_model
from gateway.tiers.http import OpenAIHTTPBackend


def local_model_path(settings: Settings) -> str:
    """The GGUF to load: the configured one, else the bundled model (assembled and verified on first use)."""
    if settings.local.model_path:
        return settings.local.model_path
    cache_dir = Path(settings.model_cache_dir) if settings.model_cache_dir else None
    return str(ensure_bundled_model(cache_dir))


def build_tiers(settings: Settings, metrics: GatewayMetrics) -> Tiers:
    """The local and upstream backends the settings ask for."""
    from gateway.tiers.local import LlamaCppBackend  # llama_cpp is imported only when the real tiers are built

    def on_queue_change(waiting: int, inflight: int) -> None:
        metrics.local_queue_depth.set(waiting)
        metrics.local_inflight.set(inflight)

    local = LlamaCppBackend(
        local_model_path(settings),
        served_model_name=settings.local.model_name,
        context_size=settings.local.context_size,
        max_concurrency=settings.local.max_concurrency,
        max_queue=settings.local.max_queue,
        threads=settings.local.threads,
        max_tokens_default=settings.local.max_tokens_default,
        on_queue_change=on_queue_change,
    )
    upstream = None
    if settings.upstream.url:
        upstream = OpenAIHTTPBackend(
            "upstream",
            settings.upstream.url,
            settings.upstream.api_key,
            connect_timeout=settings.upstream.connect_timeout,
            read_timeout=settings.upstream.read_timeout,
            max_connections=settings.upstream.max_connections,
            client=settings.upstream.client,
            auth_header=settings.upstream.auth_header,
            max_response_bytes=settings.upstream.max_response_bytes,
        )
    slm = {name: build_slm_tier(name, tier) for name, tier in settings.slm_tiers.items()}
    return Tiers(
        local=local,
        upstream=upstream,
        upstream_default_model=settings.upstream.default_model,
        local_model_name=settings.local.model_name,
        slm=slm,
        slm_models={name: tier.model_name or name for name, tier in settings.slm_tiers.items()},
    )


def build_slm_tier(name: str, tier: SlmTierSettings) -> Backend:
    """A named SLM tier: a GGUF in-process, or a remote OpenAI-compatible server honouring `tier.features`."""
    if tier.model_path is not None:
        from gateway.tiers.local import LlamaCppBackend

        return LlamaCppBackend(
            tier.model_path,
            name=name,
            served_model_name=tier.model_name or name,
            context_size=tier.context_size,
            max_concurrency=tier.max_concurrency,
            max_queue=tier.max_queue,
            threads=tier.threads,
            max_tokens_default=tier.max_tokens_default,
        )
    assert tier.url is not None
    remote = OpenAIHTTPBackend(
        name,
        tier.url,
        tier.api_key,
        connect_timeout=tier.connect_timeout,
        read_timeout=tier.read_timeout,
        max_connections=tier.max_connections,
    )
    remote.features = frozenset(tier.features or ())  # a remote SLM server is sent only what it can honour
    return remote


def build_gateway(
    settings: Settings,
    *,
    tiers: Tiers | None = None,
    router: Router | None = None,
    metrics: GatewayMetrics | None = None,
) -> Pipeline:
    """The pipeline for `settings`: route → cache → dispatch, recorded by one `Accounting`.

    `tiers`, `router` and `metrics` may be passed in (tests run the middle with `gateway.devtools.FakeBackend`).
    """
    metrics = metrics or GatewayMetrics()
    tiers = tiers or build_tiers(settings, metrics)
    router = router or router_from_settings(settings, metrics)
    costs = CostModel(settings.costs, settings.upstream.default_model)
    model_labels = ModelLabels(
        [settings.local.model_name, tiers.local_model_name, *tiers.slm_models.values(), *costs.known_models()]
    )
    access_log = build_access_log(settings.access_log, settings.access_log_prompts)
    accounting = Accounting(metrics, costs, model_labels, access_log)
    cache = build_cache_layer(settings.cache, Dispatcher(tiers), metrics)
    health = build_health(
        tiers.local, tiers.upstream, cache.cache.store, metrics.cache_backend_up, settings.server.readiness_cache_seconds
    )
    learning = build_learning(settings, tiers, costs, metrics, router)
    keys = KeyChecker(settings.api_keys, settings.admin_api_keys)
    return Pipeline(settings, tiers, router, cache, keys, metrics, accounting, health, learning=learning)
