"""`KeyAdmin`: create, list, revoke keys and set caps (what `slm-gateway keys` and `/admin/keys` both call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from gateway.errors import GatewayError, InvalidRequest
from gateway.limits.records import NANO, KeyRecord, Limits, hash_key, key_id, new_key, valid_name
from gateway.limits.store import LimitStore, ScopeUsage

TIERS = ("local", "upstream")


class NotFound(GatewayError):
    status_code = 404
    error_type = "not_found_error"


class KeyRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of `POST /admin/keys` (and the flags of `keys create`)."""

    team: str
    name: str = ""
    expires_in_seconds: float | None = None
    allowed_tiers: list[str] | None = None
    allowed_models: list[str] | None = None
    limits: Limits = msgspec.field(default_factory=Limits)


def check_limits(limits: Limits) -> Limits:
    for field in ("rpm", "tpm", "concurrency"):
        value = getattr(limits, field)
        if value is not None and value < 0:
            raise InvalidRequest(f"limits.{field} must be 0 or more, got {value}", param=f"limits.{field}")
    for field in ("usd_per_day", "usd_per_month"):
        value = getattr(limits, field)
        if value is not None and not 0 <= value <= 1e6:
            raise InvalidRequest(f"limits.{field} must be between 0 and 1000000, got {value}", param=f"limits.{field}")
    return limits


def public(record: KeyRecord) -> dict[str, Any]:
    """A record as shown to admins (without the key's hash)."""
    out = msgspec.to_builtins(record)
    out.pop("sha256", None)
    out["object"] = "gateway.key"
    return out


def usage_view(used: ScopeUsage, limits: Limits | None) -> dict[str, Any]:
    return {
        "scope": used.scope, "requests_this_minute": used.requests, "tokens_this_minute": used.tokens,
        "usd_today": used.day_nano / NANO, "usd_this_month": used.month_nano / NANO,
        "limits": msgspec.to_builtins(limits or Limits()),
    }


class KeyAdmin:
    """Key and team management on a `LimitStore`."""

    def __init__(self, store: LimitStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def create(self, request: KeyRequest) -> tuple[str, KeyRecord]:
        """A new key and its record; the key is returned once and stored only as its sha256."""
        if not valid_name(request.team):
            raise InvalidRequest("team must be 1-64 letters, digits, '-', '_' or '.'", param="team")
        if len(request.name) > 200:
            raise InvalidRequest("name must be at most 200 characters", param="name")
        for tier in request.allowed_tiers or ():
            if tier not in TIERS:
                raise InvalidRequest(f"allowed_tiers: unknown tier {tier!r} (local|upstream)", param="allowed_tiers")
        if request.expires_in_seconds is not None and request.expires_in_seconds <= 0:
            raise InvalidRequest("expires_in_seconds must be positive", param="expires_in_seconds")
        key = new_key()
        digest = hash_key(key)
        now = self.clock()
        record = KeyRecord(
            id=key_id(digest), sha256=digest, team=request.team, name=request.name, created=round(now, 3),
            expires_at=None if request.expires_in_seconds is None else round(now + request.expires_in_seconds, 3),
            allowed_tiers=request.allowed_tiers, allowed_models=request.allowed_models,
            limits=check_limits(request.limits),
        )
        await self.store.put_key(record)
        return key, record

    async def list(self) -> list[KeyRecord]:
        return await self.store.keys()

    async def get(self, kid: str) -> KeyRecord:
        for record in await self.store.keys():
            if record.id == kid:
                return record
        raise NotFound(f"No key with id {kid!r}.", param="id", code="key_not_found")

    async def revoke(self, kid: str) -> KeyRecord:
        record = msgspec.structs.replace(await self.get(kid), revoked=True)
        await self.store.put_key(record)
        return record

    async def set_key_limits(self, kid: str, limits: Limits) -> KeyRecord:
        record = await self.get(kid)
        record = msgspec.structs.replace(record, limits=record.limits.merged(check_limits(limits)))
        await self.store.put_key(record)
        return record

    async def set_team_limits(self, team: str, limits: Limits) -> Limits:
        if not valid_name(team):
            raise InvalidRequest("team must be 1-64 letters, digits, '-', '_' or '.'", param="team")
        merged = ((await self.store.teams()).get(team) or Limits()).merged(check_limits(limits))
        await self.store.put_team(team, merged)
        return merged

    async def usage(self, *, kid: str | None = None, team: str | None = None) -> dict[str, Any]:
        if kid is not None:
            record = await self.get(kid)
            return usage_view(await self.store.usage(f"k:{record.id}", self.clock()), record.limits)
        assert team is not None
        limits = (await self.store.teams()).get(team)
        return usage_view(await self.store.usage(f"t:{team}", self.clock()), limits)
