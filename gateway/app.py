"""The app factory: `create_app(settings)` wraps the framework-free `build_gateway(settings)` in a litestar app."""

from __future__ import annotations

import logging
import uuid

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException

from gateway.api.dropin_routes import build_dropin_routes
from gateway.api.key_routes import build_key_routes
from gateway.api.routes import JSON, build_routes
from gateway.build import build_gateway
from gateway.supervisor import reload_pid
from gateway.dropin_build import build_dropin, cors_config
from gateway.errors import GatewayError, error_json
from gateway.pipeline import Pipeline
from gateway.routing.reloadable import ReloadableRouter
from gateway.settings import Settings

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


def create_app(settings: Settings, pipeline: Pipeline | None = None) -> Litestar:
    """A ready-to-serve litestar app for `settings` (around `pipeline` when given, else `build_gateway(settings)`)."""
    pipeline = pipeline or build_gateway(settings, reload_pid=reload_pid())
    router = pipeline.router
    reloadable = isinstance(router, ReloadableRouter)
    dropin = build_dropin(settings, pipeline)
    dropin_routes, stored_completions = build_dropin_routes(dropin, settings.passthrough_max_body_bytes)
    return Litestar(
        route_handlers=[*build_routes(pipeline, stored_completions), *dropin_routes, *build_key_routes(pipeline)],
        cors_config=cors_config(settings.cors),
        on_startup=[pipeline.start, *([router.install_sighup] if reloadable else [])],
        on_shutdown=[pipeline.stop, dropin.close, *([router.remove_sighup] if reloadable else [])],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )
