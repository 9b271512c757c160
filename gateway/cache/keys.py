"""Cache keys: a tenant namespace plus a hash of the canonical request.

The canonical request is the decoded JSON body with the fields that do not change the answer removed (`stream`,
`stream_options`, `user`, ...), explicit defaults and nulls dropped, integral floats written as ints, and a
lone `stop` string written as a list; it is re-encoded with sorted keys, so key order and whitespace never
matter. The tier the router chose and the model that tier is sent are hashed too (a pinned local answer is not
an upstream one).

Cross-tenant hits are impossible by construction: the tenant's namespace is the key's prefix, and the full
tenant string is part of the hashed material as well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

KEY_VERSION = 1
"""Bumped whenever the canonical form or the entry encoding changes (old entries then simply miss)."""

IGNORED_FIELDS: frozenset[str] = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)
"""Request fields that never change the answer."""

DEFAULTS: Mapping[str, Any] = {
    "n": 1,
    "temperature": 1,
    "top_p": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
}
"""OpenAI's documented defaults: giving them explicitly is the same request as leaving them out."""

_encode = msgspec.json.Encoder(order="sorted").encode  # JSON: arbitrary-size ints, one float spelling


def canonical_request(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The request fields that determine the answer, normalised (see the module docstring)."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None or name in IGNORED_FIELDS:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if name in DEFAULTS:
            default = DEFAULTS[name]
            if value == default and isinstance(value, bool) == isinstance(default, bool):
                continue
        if name == "stop" and isinstance(value, str):
            value = [value]
        out[name] = value
    return out


def tenant_namespace(tenant: str) -> str:
    """A short, fixed-alphabet namespace for a tenant (safe in a Redis key whatever the tenant string holds)."""
    return "t" + hashlib.blake2b(tenant.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def cache_key(prefix: str, tenant: str, tier: str, model: str, raw: Mapping[str, Any]) -> str:
    """`{prefix}:{tenant namespace}:{digest}`; the digest covers tenant, tier, model and the canonical request."""
    material = _encode([KEY_VERSION, tenant, tier, model, canonical_request(raw)])
    digest = hashlib.blake2b(material, digest_size=20).hexdigest()
    return f"{prefix}:{tenant_namespace(tenant)}:{digest}"


def lock_key(key: str) -> str:
    """The key of the cross-replica lock held while one request computes the entry for `key`."""
    return key + ":lock"
