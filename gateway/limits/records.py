"""What the key store holds: gateway keys (by the sha256 of the key, never the key) and per-team limits."""

from __future__ import annotations

import hashlib
import secrets

import msgspec

KEY_PREFIX = "sk-slm-"
NANO = 1_000_000_000
"""Dollars are counted in nano-dollars (integers: no float drift in the counters)."""


class Limits(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Caps of one key or team; None: no cap of that kind."""

    rpm: int | None = None
    """Requests per minute."""
    tpm: int | None = None
    """Tokens (prompt + completion) per minute."""
    concurrency: int | None = None
    """Requests in flight at once."""
    usd_per_day: float | None = None
    """US dollars per UTC day (from the cost table)."""
    usd_per_month: float | None = None
    """US dollars per UTC calendar month."""

    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.concurrency, self.usd_per_day, self.usd_per_month))

    def merged(self, other: Limits) -> Limits:
        """These limits with every cap `other` sets replaced."""
        return msgspec.structs.replace(self, **{k: v for k, v in msgspec.structs.asdict(other).items() if v is not None})


class KeyRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One gateway key: its public id, the sha256 of the key, its team, and what it may do."""

    id: str
    """Public id (`key-` and 12 hex digits of the hash): what `keys list` shows and `keys revoke` takes."""
    sha256: str
    team: str
    name: str = ""
    created: float = 0.0
    expires_at: float | None = None
    """Unix time after which the key is refused (401)."""
    revoked: bool = False
    allowed_tiers: list[str] | None = None
    """Tiers (local|upstream) the key may be routed to; None: any."""
    allowed_models: list[str] | None = None
    """Model names the key may ask for; None: any."""
    limits: Limits = msgspec.field(default_factory=Limits)

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


def hash_key(key: str) -> str:
    """The sha256 (hex) a key is stored and looked up by."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(sha256: str) -> str:
    return "key-" + sha256[:12]


def new_key() -> str:
    """A fresh random gateway key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def valid_name(value: str) -> bool:
    """Team names and ids: 1-64 characters of letters, digits, `-`, `_`, `.`."""
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value) and value.isascii()
