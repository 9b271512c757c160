"""`POST /admin/cache/purge`: forget every cached answer and semantic vector of one tenant (admin key only).

Body: `{"tenant": "t-..."}` (the id in logs) or `{"api_key": "sk-..."}` (the gateway key whose tenant it is),
plus `"sub"` for a tenant subdivided by `cache.tenant_header`. Answer: `{"object": "cache.purge", "tenant",
"keys_removed", "semantic_scopes_removed"}`. On Redis this reaches every replica's entries (other replicas'
semantic mirrors reset on their next lookup); the in-process cache is this process's only.
"""

from __future__ import annotations

import msgspec
from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler

from gateway.auth import tenant_of
from gateway.cache.store import StoreError
from gateway.errors import GatewayError, InvalidRequest
from gateway.pipeline import Pipeline

JSON = "application/json"


class PurgeRequest(msgspec.Struct, forbid_unknown_fields=True):
    tenant: str | None = None
    api_key: str | None = None
    sub: str | None = None


class CacheUnavailable(GatewayError):
    """503: the cache store could not be purged (Redis down); nothing was half-reported as done."""

    status_code = 503
    error_type = "server_error"


def purge_target(body: bytes) -> str:
    """The cache tenant a purge body names; `InvalidRequest` (400) naming the field otherwise."""
    try:
        request = msgspec.json.decode(body or b"{}", type=PurgeRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid purge request: {exc}", param=None, code="invalid_value") from None
    except msgspec.DecodeError:
        raise InvalidRequest("The body must be a JSON object.", param=None, code="invalid_json") from None
    if (request.tenant is None) == (request.api_key is None):
        raise InvalidRequest("Give exactly one of 'tenant' and 'api_key'.", param="tenant", code="missing_required_parameter")
    for name in ("tenant", "api_key", "sub"):
        value = getattr(request, name)
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise InvalidRequest(f"'{name}' must be a non-empty string without spaces.", param=name, code="invalid_value")
    tenant = request.tenant if request.tenant is not None else tenant_of(request.api_key or "")
    return f"{tenant}/{request.sub}" if request.sub else tenant


def build_cache_admin_routes(gateway: Pipeline) -> list[HTTPRouteHandler]:
    @post("/admin/cache/purge", status_code=200)
    async def purge_cache(request: Request) -> Response:
        gateway.keys.check_admin(request.headers.get("authorization"))
        tenant = purge_target(await request.body())
        try:
            purged = await gateway.cache.purge_tenant(tenant)
        except StoreError as exc:
            raise CacheUnavailable(f"The cache store could not be purged: {exc}", code="cache_unavailable") from None
        body = {"object": "cache.purge", "tenant": tenant, "keys_removed": purged.keys,
                "semantic_scopes_removed": purged.semantic_scopes}
        return Response(msgspec.json.encode(body), media_type=JSON)

    return [purge_cache]
