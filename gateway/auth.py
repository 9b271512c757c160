"""Gateway API keys: bearer-token check and the tenant a key belongs to."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from gateway.errors import AuthenticationFailed

ANONYMOUS_TENANT = "anonymous"


def authorization_of(headers: Mapping[str, str]) -> str | None:
    """The caller's key as an `Authorization` value: `Authorization`, else `x-api-key`, else `api-key` (Azure)."""
    given = headers.get("authorization")
    if given:
        return given
    key = headers.get("x-api-key") or headers.get("api-key")
    return f"Bearer {key}" if key else None


class KeyChecker:
    """Checks `Authorization: Bearer <key>` against the configured gateway keys (open when there are none)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(k.encode() for k in keys)
        self._tenants = {k: tenant_of(k.decode()) for k in self._keys}

    def check(self, authorization: str | None) -> str:
        """Return the caller's tenant id, or raise AuthenticationFailed (401)."""
        if not self._keys:
            return ANONYMOUS_TENANT
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise AuthenticationFailed(
                "Missing API key. Send 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        given = authorization[7:].strip().encode()
        for key in self._keys:  # compare with every key, in constant time each
            if hmac.compare_digest(given, key):
                return self._tenants[key]
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")


def tenant_of(key: str) -> str:
    """A stable, non-reversible tenant id for a key (the key itself never leaves this module)."""
    return "t-" + hashlib.sha256(key.encode()).hexdigest()[:24]
