"""`POST /v1/feedback` (gateway key required when keys are set)."""

from __future__ import annotations

import msgspec
from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler

from gateway.api.routes import JSON, read_body, request_id_of
from gateway.auth import KeyChecker
from gateway.learning.service import Learning


def feedback_route(learning: Learning, keys: KeyChecker, max_body_bytes: int) -> HTTPRouteHandler:
    """The feedback handler bound to one app's `Learning`."""

    @post("/v1/feedback", status_code=200)
    async def feedback(request: Request) -> Response:
        request.state.request_id = request_id_of(request)
        tenant = keys.check(request.headers.get("authorization"))
        row = await learning.feedback(await read_body(request, max_body_bytes), tenant)
        body = {"object": "feedback", "request_id": row["request_id"], "served_tier": row["served_tier"],
                "recorded": True}
        return Response(msgspec.json.encode(body), media_type=JSON,
                        headers={"x-request-id": request.state.request_id})

    return feedback
