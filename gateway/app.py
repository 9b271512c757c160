"""The app factory: `create_app(settings)` builds every component and wires them into a litestar app."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException

from gateway.api.dropin_routes import build_dropin_routes
from gateway.api.routes import JSON, build_routes
from gateway.auth import KeyChecker
from gateway.cache import build_cached_chat
from gateway.components import Gateway
from gateway.costs import CostModel
from gateway.dispatch import ChatDispatcher, Tiers
from gateway.dropin import DropIn
from gateway.dropin_build import build_dropin, cors_config
from gateway.errors import GatewayError, error_json
from gateway.metrics import GatewayMetrics
from gateway.routing.decision import Router
from gateway.routing.reloadable import ReloadableRouter, router_from_settings
from gateway.settings import Settings
from gateway.tiers.bundled_model import ensure_bundled_model
from gateway.tiers.http import OpenAIHTTPBackend
from gateway.tiers.local import LlamaCppBackend

log = logging.getLogger("slm_gateway")

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def local_model_path(settings: Settings) -> str:
    """The GGUF to load: the configured one, else the bundled model (assembled and verified on first use)."""
    if settings.local.model_path:
        return settings.local.model_path
    cache_dir = Path(settings.model_cache_dir) if settings.model_cache_dir else None
    return str(ensure_bundled_model(cache_dir))


def build_tiers(settings: Settings, metrics: GatewayMetrics) -> Tiers:
    """The local and upstream backends the settings ask for."""

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
        )
    return Tiers(
        local=local,
        upstream=upstream,
        upstream_default_model=settings.upstream.default_model,
        local_model_name=settings.local.model_name,
    )


def _error_response(request: Request, status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    request_id = request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
    return Response(body, status_code=status, media_type=JSON, headers={"x-request-id": request_id, **(headers or {})})


def _gateway_error(request: Request, exc: GatewayError) -> Response:
    return _error_response(request, exc.status_code, exc.body(), exc.headers)


def _http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else f"HTTP {status}"
    if status == 413:
        message = "Request body is too large."
    error_type = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _error_response(request, status, error_json(message, error_type, None, None), dict(exc.headers or {}))


def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error serving %s", request.url.path)
    body = error_json("The gateway failed to process the request.", "server_error", None, "internal_error")
    return _error_response(request, 500, body)


def create_app(
    settings: Settings,
    *,
    tiers: Tiers | None = None,
    router: Router | None = None,
    metrics: GatewayMetrics | None = None,
) -> Litestar:
    """Build a ready-to-serve litestar app for `settings`. Components may be passed in (tests, embedding)."""
    metrics = metrics or GatewayMetrics()
    tiers = tiers or build_tiers(settings, metrics)
    router = router or router_from_settings(settings, metrics)
    costs = CostModel(settings.costs, settings.upstream.default_model)
    dispatcher = ChatDispatcher(tiers, router, metrics, costs)
    cache = build_cached_chat(settings.cache, dispatcher, tiers, metrics)
    gateway = Gateway(settings, tiers, dispatcher, KeyChecker(settings.api_keys), metrics, cache=cache)
    dropin: DropIn = build_dropin(settings, gateway)
    chat_routes = [h for h in build_routes(gateway) if "/v1/models" not in h.paths]  # listed by dropin_routes
    app = Litestar(
        route_handlers=[*chat_routes, *build_dropin_routes(dropin, settings.passthrough_max_body_bytes)],
        cors_config=cors_config(settings.cors),
        on_startup=[gateway.start, *([router.install_sighup] if isinstance(router, ReloadableRouter) else [])],
        on_shutdown=[gateway.stop, dropin.close, *([router.remove_sighup] if isinstance(router, ReloadableRouter) else [])],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )
    app.state.gateway = gateway
    return app
