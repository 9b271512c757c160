"""Which requests the cache may answer and store, and what the client asked for in `Cache-Control`.

The rules, in order:

1. Never cached: `n > 1`, `logprobs` / `top_logprobs` (entries keep no log probabilities), audio output.
2. The router's `RouteDecision.cacheable`, when it is not None, decides (a policy rule's `cache:`).
2b. A request that asks for a cache kind (`x-gateway-cache: exact|semantic`, header or body field) consents to a cached answer: it is
   cacheable (`x-gateway-cache: off` is neither looked up nor stored).
3. A request whose last message is a tool (or function) result is cached only when it is deterministic
   (`temperature: 0` or a `seed`): tool results are often live data, so `cache_nondeterministic` does not
   extend to them.
4. Otherwise: deterministic requests, and every request when `cache.cache_nondeterministic` is on.

Independently of the request, answers that contain tool calls are never stored (see `gateway.cache.entry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from gateway.errors import InvalidRequest
from gateway.openai.request import ParsedRequest
from gateway.openai.wire import CACHE_HEADER
from gateway.routing.decision import RouteDecision


class ClientDirectives(msgspec.Struct, frozen=True):
    """`Cache-Control: no-cache` skips the lookup; `no-store` skips the store."""

    no_cache: bool = False
    no_store: bool = False


NO_DIRECTIVES = ClientDirectives()


def client_directives(headers: Mapping[str, str]) -> ClientDirectives:
    """Parse the request's `Cache-Control` header (unknown directives are ignored)."""
    value = headers.get("cache-control")
    if not value:
        return NO_DIRECTIVES
    tokens = {part.strip().split("=", 1)[0].lower() for part in value.split(",")}
    return ClientDirectives(no_cache="no-cache" in tokens, no_store="no-store" in tokens)


CacheRequest = Literal["off", "exact", "semantic"]
CACHE_REQUESTS: tuple[CacheRequest, ...] = ("off", "exact", "semantic")


def requested_cache(headers: Mapping[str, str], body: object = None) -> CacheRequest | None:
    """The cache kind the request asks for in the `x-gateway-cache` header, else in the body field of that name
    (`ParsedRequest.cache_request`); None: not said. A 400 for another value (`invalid_cache_header`, or
    `invalid_value` naming the body field)."""
    value = headers.get(CACHE_HEADER)
    if value is not None:
        kind = value.strip().lower()
        if kind not in CACHE_REQUESTS:
            raise InvalidRequest(
                f"Header '{CACHE_HEADER}' must be one of off, exact, semantic; got {value[:40]!r}.",
                param=CACHE_HEADER, code="invalid_cache_header",
            )
        return kind  # type: ignore[return-value]
    if body is None:
        return None
    kind = body.strip().lower() if isinstance(body, str) else None
    if kind not in CACHE_REQUESTS:
        raise InvalidRequest(
            f"'{CACHE_HEADER}' must be one of \"off\", \"exact\", \"semantic\"; got {str(body)[:40]!r}.",
            param=CACHE_HEADER, code="invalid_value",
        )
    return kind  # type: ignore[return-value]


def is_deterministic(parsed: ParsedRequest) -> bool:
    """temperature 0, or a seed given."""
    chat = parsed.chat
    return chat.temperature == 0 or chat.seed is not None


def never_cacheable(parsed: ParsedRequest) -> bool:
    """Requests whose answers an entry cannot represent."""
    chat = parsed.chat
    if chat.n is not None and chat.n > 1:
        return True
    raw = parsed.raw
    if raw.get("logprobs") or raw.get("top_logprobs"):
        return True
    if raw.get("store") is True:  # the provider must keep this very completion, to be read back by its id
        return True
    modalities = raw.get("modalities")
    return bool(raw.get("audio")) or (isinstance(modalities, list) and "audio" in modalities)


def is_cacheable(
    parsed: ParsedRequest, decision: RouteDecision, cache_nondeterministic: bool, requested: CacheRequest | None = None
) -> bool:
    """Whether the cache may answer and store this request (see the module docstring)."""
    if requested == "off" or never_cacheable(parsed):
        return False
    if decision.cacheable is not None:
        return decision.cacheable
    if requested is not None:
        return True
    if is_deterministic(parsed):
        return True
    if parsed.chat.messages[-1].role in ("tool", "function"):
        return False
    return cache_nondeterministic


def tenant_of_request(tenant: str, headers: Mapping[str, str], tenant_header: str | None) -> str:
    """The cache tenant: the key's tenant, subdivided by `cache.tenant_header` when that header is configured.

    The header can only narrow the namespace of the caller's gateway key, never widen it, so a caller cannot
    read another key's entries by forging the header.
    """
    if tenant_header:
        sub = headers.get(tenant_header)
        if sub:
            return f"{tenant}/{sub}"
    return tenant
