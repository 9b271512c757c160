"""The HTTP surface: OpenAI's `/v1/chat/completions`, health, readiness and metrics (the rest of `/v1`:
`gateway.api.dropin_routes`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from litestar import Request, Response, asgi, get, post
from litestar.enums import MediaType
from litestar.exceptions import ClientException, HTTPException, InternalServerException, MethodNotAllowedException
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.api.asgi_answers import EventStreamAnswer, JSONAnswer
from gateway.api.cache_admin import build_cache_admin_routes
from gateway.api.disconnect import unless_disconnected
from gateway.api.request_ids import RequestIds
from gateway.auth import authorization_of
from gateway.dispatch import StreamAnswer
from gateway.exchange import CLIENT_CLOSED_REQUEST
from gateway.errors import GatewayError, RequestTooLarge
from gateway.openai.request import parse_chat_request
from gateway.pipeline import Pipeline
from gateway.supervisor import ask_supervisor_to_reload

JSON = "application/json"
CHAT_PATH = "/v1/chat/completions"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _uuid4_hex() -> str:
    return uuid.uuid4().hex


def request_id_of(headers: Mapping[str, str], new_id: Callable[[], str] = _uuid4_hex) -> str:
    """The caller's `x-request-id` when it sent a sane one, else a new id (`new_id()`, a uuid4's hex)."""
    given = headers.get("x-request-id")
    if given and len(given) <= 128 and given.isascii():
        return given
    return new_id()


def headers_of(scope: Scope) -> dict[str, str]:
    """The request's headers as a plain dict (lower-case names; the first of repeated ones, as litestar's `Headers`
    gives), for the exchange: read a few times per request, never a litestar `Headers` built per read."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"Request body is larger than this gateway accepts ({limit} bytes).", param=None, code="request_too_large"
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; `RequestTooLarge` when it is over `limit` bytes (litestar stops reading there)."""
    try:
        return await request.body()
    except HTTPException as exc:
        if exc.status_code != 413:
            raise
        raise _too_large(limit) from None


async def receive_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """`read_body` straight from ASGI `receive` with the headers already read (what litestar's `Request.body`
    does, without building its `Headers` and async generator): `RequestTooLarge` once the announced length or
    the bytes received are over `limit`; a 400 for an unreadable `content-length`; a 500 when the client left
    before the end of the body."""
    announced = headers.get("content-length")
    if announced is not None:
        try:
            length = int(announced)
        except ValueError:
            raise ClientException(f"Invalid content-length: {announced!r}") from None
        if length > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        event = await receive()
        if event["type"] == "http.request":
            body = event.get("body", b"")
            if body:
                total += len(body)
                if total > limit:
                    raise _too_large(limit)
                chunks.append(body)
            if not event.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif event["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")


def build_routes(
    gateway: Pipeline, stored_completions: Callable[[Request], Awaitable[Response]] | None = None
) -> list[BaseRouteHandler]:
    """Route handlers bound to one `Pipeline` (no module-level state); `stored_completions` answers a GET of the
    chat path (`gateway.api.dropin_routes`)."""
    max_body = gateway.settings.max_body_bytes
    new_id = RequestIds()
    allow = "POST, OPTIONS, GET" if stored_completions is not None else "POST, OPTIONS"

    async def chat(scope: Scope, receive: Receive) -> ASGIApp:
        """A chat completion: the answer as an ASGI app (gateway/api/asgi_answers.py)."""
        started = time.perf_counter()
        headers = headers_of(scope)
        request_id = request_id_of(headers, new_id)
        state = scope.get("state")
        if state is not None:  # where the error handlers look for it (`request.state` is a view of this dict)
            state["request_id"] = request_id
        exchange = gateway.exchange(request_id, headers, started)
        try:
            tenant = exchange.tenant = gateway.keys.check(authorization_of(headers))  # logged if the body fails
            exchange.accept(tenant, parse_chat_request(await receive_body(receive, headers, max_body)))
        except GatewayError as exc:
            gateway.refuse(exchange, exc)
            raise
        gateway.decide(exchange)
        work = gateway.answer(exchange)
        # only a local generation is worth a watcher (a task): cancelling it frees the slot for the next request
        answer = await (unless_disconnected(receive, work) if gateway.frees_a_slot(exchange) else work)
        if answer is None:  # the client left before the answer was ready; its work was cancelled
            return JSONAnswer(CLIENT_CLOSED_REQUEST, {}, b"")
        # `after_send` runs once the client has it all
        if isinstance(answer, StreamAnswer):
            answer.headers.update(SSE_HEADERS)
            return EventStreamAnswer(answer.chunks, answer.headers, answer.after_send)
        return JSONAnswer(answer.status, answer.headers, answer.body, answer.after_send)

    async def not_chat(scope: Scope, receive: Receive, send: Send) -> None:
        """Another method on the chat path, answered as litestar's HTTP routes did: OPTIONS 204, GET the stored
        completions, else 405."""
        request: Request = Request(scope, receive, send)
        method = scope["method"]
        if method == "OPTIONS":
            response: Response = Response(None, status_code=204, headers={"Allow": "OPTIONS, POST"},
                                          media_type=MediaType.TEXT)
        elif method == "GET" and stored_completions is not None:
            response = await stored_completions(request)
        else:
            raise MethodNotAllowedException(headers={"allow": allow})
        await response.to_asgi_response(app=None, request=request)(scope, receive, send)

    @asgi(CHAT_PATH, copy_scope=False)
    async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /v1/chat/completions` as a litestar ASGI route: routing, CORS and the exception handlers are
        litestar's; the per-request `Request`, signature model and response handling of an HTTP route are not
        (about 25 µs of CPU per request, `bench/request_cpu.py`)."""
        if scope["method"] != "POST":
            await not_chat(scope, receive, send)
            return
        answer = await chat(scope, receive)
        await answer(scope, receive, send)

    @get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @get("/readyz")
    async def readyz() -> Response:
        ready, checks = await gateway.readiness()
        return Response(checks, status_code=200 if ready else 503, media_type=JSON)

    @get("/metrics")
    async def metrics() -> Response:
        body, content_type = gateway.metrics.render()
        return Response(body, media_type=content_type)

    @post("/admin/reload", status_code=200)
    async def admin_reload(request: Request) -> Response:
        """Reload the routing policy and classifier here, then in every other worker (through the supervisor);
        422 (old ones kept) when a new one is invalid."""
        gateway.keys.check_admin(request.headers.get("authorization"))
        reload = getattr(gateway.router, "reload", None)
        if reload is None:
            return Response(b'{"status":"not reloadable","components":[]}', status_code=404, media_type=JSON)
        results = await reload()
        if gateway.learning is not None:
            gateway.learning.observe_router()
        ok = all(r.result == "success" for r in results)
        scope = "all workers" if ok and ask_supervisor_to_reload() else "this process"
        body = msgspec.json.encode({"status": "reloaded" if ok else "failed", "scope": scope, "components": results})
        return Response(body, status_code=200 if ok else 422, media_type=JSON)

    @post("/v1/feedback", status_code=200)
    async def feedback(request: Request) -> Response:
        """A one-sided label for a recent request of the caller's (gateway/learning/feedback.py)."""
        request.state.request_id = request_id_of(request.headers)
        tenant = gateway.keys.check(request.headers.get("authorization"))
        assert gateway.learning is not None
        row = await gateway.learning.feedback(await read_body(request, gateway.settings.max_body_bytes), tenant)
        body = {"object": "feedback", "request_id": row["request_id"], "served_tier": row["served_tier"],
                "recorded": True}
        return Response(msgspec.json.encode(body), media_type=JSON, headers={"x-request-id": request.state.request_id})

    handlers = [chat_completions, healthz, readyz, metrics, admin_reload, *build_cache_admin_routes(gateway)]
    if gateway.learning is not None and gateway.learning.feedback_on:
        handlers.append(feedback)
    return handlers
