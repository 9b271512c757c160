"""`build_gateway(settings)`: every component of one gateway, wired into a `Pipeline` (framework-free)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.access_log import build_access_log
from gateway.accounting import Accounting
from gateway.auth import KeyChecker
from gateway.cache import build_cache_layer
from gateway.costs import CostModel
from gateway.dispatch import Dispatcher, Tiers
from gateway.embedding.shared import SharedEmbedder
from gateway.health import build_health
from gateway.learning.service import build_learning
from gateway.limits.build import build_limits
from gateway.limits.layer import LimitLayer
from gateway.metrics import GatewayMetrics
from gateway.model_labels import ModelLabels
from gateway.pipeline import Pipeline
from gateway.routing.decision import Router
from gateway.routing.reloadable import router_from_settings
from gateway.settings import Settings, SlmTierSettings
from gateway.tiers.base import Backend
from gateway.tiers.bundled_model import ensure_bundled_model
from gateway.tiers.gguf_name import model_id
from gateway.tiers.http import OpenAIHTTPBackend

if TYPE_CHECKING:
    from gateway.embedding.base import Embedder


def local_model_path(settings: Settings) -> str:
    """The GGUF to load: the configured one, else the bundled model (assembled and verified on first use)."""
    if settings.local.model_path:
        return settings.local.model_path
    cache_dir = Path(settings.model_cache_dir) if settings.model_cache_dir else None
    return str(ensure_bundled_model(cache_dir))


def semantic_embedder(settings: Settings, shared: SharedEmbedder) -> Embedder | None:
    """The gateway's one embedder when the semantic cache is on (a load failure stops the start: it was asked for)."""
    if not (settings.cache.enabled and settings.cache.semantic.enabled):
        return None
    embedder = shared.get()
    if embedder is None:
        raise RuntimeError("cache.semantic.enabled, but the bundled embedder could not be loaded (see the log)")
    return embedder


def queue_gauges(metrics: GatewayMetrics, tier: str) -> Callable[[int, int], None]:
    """The `on_queue_change` of an in-process tier: its `tier_queue_depth` and `tier_inflight` series (shown as 0
    from the start), and for `local` the unlabelled `local_queue_depth` / `local_inflight` as well."""
    depth, inflight = metrics.tier_queue_depth.labels(tier), metrics.tier_inflight.labels(tier)
    depth.set(0)
    inflight.set(0)
    local = tier == "local"

    def on_change(waiting: int, running: int) -> None:
        depth.set(waiting)
        inflight.set(running)
        if local:
            metrics.local_queue_depth.set(waiting)
            metrics.local_inflight.set(running)

    return on_change


def build_tiers(settings: Settings, metrics: GatewayMetrics) -> Tiers:
    """The local and upstream backends the settings ask for."""
    from gateway.tiers.local import LlamaCppBackend  # llama_cpp is imported only when the real tiers are built

    on_queue_change = queue_gauges(metrics, "local")

    model_path = local_model_path(settings)
    model_name = settings.local.model_name or model_id(model_path)  # the GGUF's own name by default
    local = LlamaCppBackend(
        model_path,
        served_model_name=model_name,
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
    slm = {name: build_slm_tier(name, tier, metrics) for name, tier in settings.slm_tiers.items()}
    return Tiers(
        local=local,
        upstream=upstream,
        upstream_default_model=settings.upstream.default_model,
        local_model_name=model_name,
        slm=slm,
        slm_models={name: tier.model_name or name for name, tier in settings.slm_tiers.items()},
    )


def build_slm_tier(name: str, tier: SlmTierSettings, metrics: GatewayMetrics | None = None) -> Backend:
    """A named SLM tier: a GGUF in-process (its queue in `metrics`), or a remote OpenAI-compatible server honouring
    `tier.features`."""
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
            on_queue_change=queue_gauges(metrics, name) if metrics is not None else None,
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
    embedder: SharedEmbedder | None = None,
    reload_pid: int | None = None,
) -> Pipeline:
    """The pipeline for `settings`: route → cache → dispatch, recorded by one `Accounting`.

    `tiers`, `router` and `metrics` may be passed in (tests run the middle with `gateway.devtools.FakeBackend`).
    `embedder` (one per gateway, loaded on first use) is the one every user of embeddings gets. `reload_pid`: the
    process whose SIGHUP reloads every worker (auto-retraining's promote; default this process).
    """
    metrics = metrics or GatewayMetrics()
    tiers = tiers or build_tiers(settings, metrics)
    embedder = embedder or SharedEmbedder()
    router = router or router_from_settings(settings, metrics, embedder.get)
    costs = CostModel(settings.costs, settings.upstream.default_model)
    model_labels = ModelLabels([tiers.local_model_name, *tiers.slm_models.values(), *costs.known_models()])
    access_log = build_access_log(settings.access_log, settings.access_log_prompts)
    accounting = Accounting(metrics, costs, model_labels, access_log)
    limiter = build_limits(settings, costs, metrics.limits, tiers)  # None when limits are off: no layer at all
    dispatcher = Dispatcher(tiers)
    inner = LimitLayer(dispatcher, limiter) if limiter else dispatcher
    cache = build_cache_layer(settings.cache, inner, metrics, semantic_embedder(settings, embedder))
    health = build_health(
        tiers.local, tiers.upstream, cache.cache.store, metrics.cache_backend_up, settings.server.readiness_cache_seconds,
        slm=tiers.slm,
    )
    learning = build_learning(settings, tiers, costs, metrics, router, reload_pid=reload_pid)
    keys = KeyChecker(settings.api_keys, settings.admin_api_keys, limiter.directory if limiter else None)
    return Pipeline(settings, tiers, router, cache, keys, metrics, accounting, health, learning=learning,
                    embedder=embedder, limits=limiter)
