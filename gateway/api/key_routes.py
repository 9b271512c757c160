"""The admin API of gateway keys and caps (admin key required): `/admin/keys`, `/admin/teams/{team}/limits`.

Present only when limits are on (`limits.enabled`). A new key is in the answer of its `POST` and nowhere else.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from litestar import Request, Response, get, post, put
from litestar.handlers import HTTPRouteHandler

from gateway.api.routes import JSON, read_body
from gateway.errors import InvalidRequest, error_json
from gateway.limits.admin import KeyAdmin, KeyRequest, public
from gateway.limits.records import Limits
from gateway.limits.store import StoreUnavailable
from gateway.pipeline import Pipeline

T = TypeVar("T")


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid body: {exc}", code="invalid_value") from None
    except msgspec.DecodeError:
        raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None


def _unavailable(request: Request, exc: StoreUnavailable) -> Response:
    """503 in OpenAI's shape when the key store (Redis) cannot be reached."""
    body = error_json(f"The key store cannot be reached: {exc}", "service_unavailable", None, "key_store_unavailable")
    return Response(body, status_code=503, media_type=JSON)


ON_STORE_DOWN = {StoreUnavailable: _unavailable}


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type=JSON)


def build_key_routes(gateway: Pipeline) -> list[HTTPRouteHandler]:
    """The key admin routes of `gateway` (none when limits are off)."""
    if gateway.limits is None:
        return []
    limiter = gateway.limits
    admin = KeyAdmin(limiter.store, clock=lambda: limiter.clock())  # the limiter's windows
    limit = gateway.settings.max_body_bytes

    async def _refreshed() -> None:  # this replica sees its own change at once
        assert gateway.limits is not None
        await gateway.limits.directory.refresh()

    @post("/admin/keys", status_code=201, exception_handlers=ON_STORE_DOWN)
    async def create_key(request: Request) -> Response:
        gateway.keys.check_admin(request.headers.get("authorization"))
        key, record = await admin.create(_decode(await read_body(request, limit), KeyRequest))
        await _refreshed()
        return _json({**public(record), "key": key}, 201)

    @get("/admin/keys", exception_handlers=ON_STORE_DOWN)
    async def list_keys(request: Request) -> Response:
        gateway.keys.check_admin(request.headers.get("authorization"))
        return _json({"object": "list", "data": [public(r) for r in await admin.list()]})

    @post("/admin/keys/{kid:str}/revoke", status_code=200, exception_handlers=ON_STORE_DOWN)
    async def revoke_key(request: Request) -> Response:
        kid = request.path_params["kid"]
        gateway.keys.check_admin(request.headers.get("authorization"))
        record = await admin.revoke(kid)
        await _refreshed()
        return _json(public(record))

    @put("/admin/keys/{kid:str}/limits", status_code=200, exception_handlers=ON_STORE_DOWN)
    async def key_limits(request: Request) -> Response:
        kid = request.path_params["kid"]
        gateway.keys.check_admin(request.headers.get("authorization"))
        record = await admin.set_key_limits(kid, _decode(await read_body(request, limit), Limits))
        await _refreshed()
        return _json(public(record))

    @get("/admin/keys/{kid:str}/usage", exception_handlers=ON_STORE_DOWN)
    async def key_usage(request: Request) -> Response:
        kid = request.path_params["kid"]
        gateway.keys.check_admin(request.headers.get("authorization"))
        return _json(await admin.usage(kid=kid))

    @put("/admin/teams/{team:str}/limits", status_code=200, exception_handlers=ON_STORE_DOWN)
    async def team_limits(request: Request) -> Response:
        team = request.path_params["team"]
        gateway.keys.check_admin(request.headers.get("authorization"))
        limits = await admin.set_team_limits(team, _decode(await read_body(request, limit), Limits))
        await _refreshed()
        return _json({"object": "gateway.team", "team": team, "limits": limits})

    @get("/admin/teams/{team:str}/usage", exception_handlers=ON_STORE_DOWN)
    async def team_usage(request: Request) -> Response:
        team = request.path_params["team"]
        gateway.keys.check_admin(request.headers.get("authorization"))
        return _json(await admin.usage(team=team))

    return [create_key, list_keys, revoke_key, key_limits, key_usage, team_limits, team_usage]
