"""Gateway API keys: bearer-token check, the tenant a key belongs to, and the admin keys of `/admin/*`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from gateway.errors import AuthenticationFailed, GatewayError

if TYPE_CHECKING:
    from gateway.limits.directory import KeyDirectory

ANONYMOUS_TENANT = "anonymous"


def authorization_of(headers: Mapping[str, str]) -> str | None:
    """The caller's key as an `Authorization` value: `Authorization`, else `x-api-key`, else `api-key` (Azure)."""
    given = headers.get("authorization")
    if given:
        return given
    key = headers.get("x-api-key") or headers.get("api-key")
    return f"Bearer {key}" if key else None


class AdminDenied(GatewayError):
    """403: the caller's key is not an admin key (or admin endpoints are disabled)."""

    status_code = 403
    error_type = "permission_error"


class KeyChecker:
    """Checks `Authorization: Bearer <key>` against the configured gateway keys (open when there are none).

    Admin endpoints (`check_admin`) take only `admin_keys`. Without admin keys they are open when the gateway
    has no keys at all (development mode) and refused (403) as soon as tenant keys are configured.

    With a `directory` (limits on: gateway keys stored hashed in the key store) the gateway is never open: a
    stored key that is usable passes too, and its tenant is its team's (`team-<name>`).
    """

    def __init__(
        self, keys: Iterable[str], admin_keys: Iterable[str] = (), directory: KeyDirectory | None = None
    ) -> None:
        self._keys = tuple(k.encode() for k in keys)
        self._tenants = {k: tenant_of(k.decode()) for k in self._keys}
        self._admin_keys = tuple(k.encode() for k in admin_keys)
        self._directory = directory

    @property
    def admin_open(self) -> bool:
        """Admin endpoints need no key: no tenant key, no admin key and no key store is configured."""
        return not self._keys and not self._admin_keys and self._directory is None

    def check(self, authorization: str | None) -> str:
        """Return the caller's tenant id, or raise AuthenticationFailed (401)."""
        if not self._keys and self._directory is None:
            return ANONYMOUS_TENANT
        given = _bearer(authorization)
        for key in self._keys:  # compare with every key, in constant time each
            if hmac.compare_digest(given, key):
                return self._tenants[key]
        if self._directory is not None:
            record = self._directory.find(given.decode(errors="replace"))
            if record is not None:
                return team_tenant(record.team)
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")

    def check_admin(self, authorization: str | None) -> None:
        """Pass an admin key; raise 401 without a key or with an unknown one, 403 with a tenant key or when admin
        endpoints are disabled (tenant keys but no admin key configured)."""
        if self.admin_open:
            return
        if not self._admin_keys:
            raise AdminDenied(
                "Admin endpoints are disabled: this gateway has no admin key (admin_api_keys).", code="admin_disabled"
            )
        given = _bearer(authorization)
        if any([hmac.compare_digest(given, key) for key in self._admin_keys]):
            return
        stored = self._directory is not None and self._directory.find(given.decode(errors="replace")) is not None
        if stored or any([hmac.compare_digest(given, key) for key in self._keys]):
            raise AdminDenied("This endpoint needs an admin key; a gateway API key is not enough.", code="admin_key_required")
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")


def _bearer(authorization: str | None) -> bytes:
    """The key of `Authorization: Bearer <key>`, or AuthenticationFailed (401) when there is none."""
    if not authorization or not authorization[:7].lower() == "bearer ":
        raise AuthenticationFailed("Missing API key. Send 'Authorization: Bearer <key>'.", code="missing_api_key")
    return authorization[7:].strip().encode()


def team_tenant(team: str) -> str:
    """The tenant id of every stored key of `team` (they share cache entries and feedback)."""
    return "team-" + team


def tenant_of(key: str) -> str:
    """A stable, non-reversible tenant id for a key (the key itself never leaves this module)."""
    return "t-" + hashlib.sha256(key.encode()).hexdigest()[:24]
