"""HTTP handlers for the rest of the OpenAI API: Responses, legacy completions, embeddings, models, passthrough."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

from litestar import Request, Response, get, post, route
from litestar.background_tasks import BackgroundTask
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Stream

from gateway.api.event_stream import EventStream
from gateway.api.routes import JSON, SSE_HEADERS, read_body, request_id_of
from gateway.auth import authorization_of
from gateway.dispatch import Answer, StreamAnswer
from gateway.dropin import DropIn, Proxied, decode_json
from gateway.errors import GatewayError, error_json
from gateway.exchange import Exchange
from gateway.passthrough import ProxiedResponse

PASSTHROUGH_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _proxied(proxied: ProxiedResponse, extra: Mapping[str, str] | None = None) -> Stream:
    """The upstream's answer relayed as it arrives, its status and headers kept."""
    headers = {name.lower(): value for name, value in proxied.headers}
    media_type = headers.pop("content-type", JSON)
    headers.update(extra or {})
    return Stream(proxied.body(), status_code=proxied.status, headers=headers, media_type=media_type)


def _answer(answer: Answer | StreamAnswer | Proxied) -> Response:
    if isinstance(answer, tuple):
        return _proxied(*answer)
    after = BackgroundTask(answer.after_send) if answer.after_send is not None else None  # once it is all sent
    if isinstance(answer, StreamAnswer):
        return EventStream(answer.chunks, media_type="text/event-stream", headers={**SSE_HEADERS, **answer.headers},
                           background=after)
    return Response(answer.body, status_code=answer.status, media_type=JSON, headers=answer.headers,
                    background=after)


def build_dropin_routes(
    dropin: DropIn, passthrough_max_body_bytes: int
) -> tuple[list[HTTPRouteHandler], Callable[[Request], Awaitable[Response]]]:
    """Route handlers bound to one `DropIn` (no module-level state), and the relay of `GET /v1/chat/completions`
    (OpenAI's stored completions), which the chat route (`gateway.api.routes`, an ASGI handler owning the path)
    hands its GETs to."""
    pipeline = dropin.pipeline
    max_body = pipeline.settings.max_body_bytes

    def begin(request: Request) -> tuple[Exchange, str]:
        """The request's exchange and the caller's tenant (a bad key ends the exchange as refused)."""
        request_id = request_id_of(request.headers)
        request.state.request_id = request_id
        ex = pipeline.exchange(request_id, request.headers, time.perf_counter())
        try:
            tenant = pipeline.keys.check(authorization_of(request.headers))
        except GatewayError as exc:
            pipeline.refuse(ex, exc)
            raise
        return ex, tenant

    async def json_body(request: Request, ex: Exchange) -> object:
        try:
            return decode_json(await read_body(request, max_body))
        except GatewayError as exc:
            pipeline.refuse(ex, exc)
            raise

    @post("/v1/responses", status_code=200)
    async def responses(request: Request) -> Response:
        ex, tenant = begin(request)
        raw = await json_body(request, ex)
        return _answer(await dropin.refusing(ex, dropin.responses(ex, tenant, raw, request.headers.items())))

    @post("/v1/completions", status_code=200)
    async def completions(request: Request) -> Response:
        ex, tenant = begin(request)
        raw = await json_body(request, ex)
        return _answer(await dropin.refusing(ex, dropin.completions(ex, tenant, raw, request.headers.items())))

    @post("/v1/embeddings", status_code=200)
    async def embeddings(request: Request) -> Response:
        ex, _tenant = begin(request)
        raw = await json_body(request, ex)
        return _answer(await dropin.refusing(ex, dropin.embeddings(ex, raw, request.headers.items())))

    @get("/v1/models")
    async def list_models(request: Request) -> Response:
        pipeline.keys.check(authorization_of(request.headers))
        return Response(await dropin.catalog.listing(), media_type=JSON)

    @get("/v1/models/{model_id:path}")
    async def get_model(request: Request, model_id: FromPath[str]) -> Response:
        pipeline.keys.check(authorization_of(request.headers))
        model_id = model_id.lstrip("/")
        found = await dropin.catalog.find(model_id)
        if found is not None:
            return Response(found, media_type=JSON)
        if dropin.proxy is not None:
            proxied = await dropin.proxy.send("GET", f"models/{model_id}", "", request.headers.items(), None,
                                              request_id_of(request.headers))
            return _proxied(proxied)
        body = error_json(f"The model '{model_id}' does not exist", "invalid_request_error", "model",
                          "model_not_found")
        return Response(body, status_code=404, media_type=JSON)

    @route("/v1/{path:path}", http_method=PASSTHROUGH_METHODS, request_max_body_size=passthrough_max_body_bytes)
    async def passthrough(request: Request, path: FromPath[str]) -> Response:
        return await relay(request, path)

    async def stored_completions(request: Request) -> Response:
        """OpenAI's list of stored chat completions (`store: true` requests, answered upstream): the chat route
        owns the path, so without this a GET was a 405 instead of reaching the upstream."""
        return await relay(request, "chat/completions")

    async def relay(request: Request, path: str) -> Response:
        ex, _tenant = begin(request)
        path = path.lstrip("/")
        if dropin.proxy is None:
            message = (
                f"Invalid URL ({request.method} /v1/{path}): this gateway serves it only by passing it to an "
                "upstream, and none is configured."
            )
            dropin.count("none", 404, "passthrough", ex.started)
            return Response(error_json(message, "invalid_request_error", None, "unknown_url"), status_code=404,
                            media_type=JSON, headers={"x-request-id": ex.request_id})
        has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        body = request.stream() if has_body else None
        hold = None
        if pipeline.limits is not None:  # limits off: no work
            length = request.headers.get("content-length", "0")
            try:
                hold = await dropin.limit_relayed(ex, "upstream", "", int(length) // 3 if length.isdigit() else 0, 0)
            except GatewayError as exc:
                pipeline.refuse(ex, exc)
                raise
        try:
            proxied = await dropin.proxy.send(
                request.method, path, request.url.query or "", request.headers.items(), body, ex.request_id
            )
        except BaseException:
            dropin.settle_relayed(hold, "upstream", "", 502, None)
            raise
        dropin.when_relayed(ex, proxied, hold=hold)
        extra = {"x-request-id": ex.request_id, "x-gateway-route": "upstream", **dropin.limit_headers(hold, proxied)}
        return _proxied(proxied, extra)

    return [responses, completions, embeddings, list_models, get_model, passthrough], stored_completions
