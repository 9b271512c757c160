"""What the client sees when the upstream fails: its error rebuilt as an OpenAI error, with secrets scrubbed.

Upstream error text is untrusted: providers echo the API key they were sent (masked by the big ones, verbatim by
some), so every string relayed from an upstream error goes through a `KeyScrubber`. An upstream 401/403 means the
gateway's *upstream* credentials are wrong, which the client cannot fix: it becomes a 502 `upstream_auth_failed`
(never a 401, which reads as a bad gateway key), and another tier may still answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from gateway.errors import GatewayError, TierUnavailable, UpstreamStatusError, error_json

REDACTED = "[redacted]"
# Key-shaped tokens: OpenAI-style `sk-...` (sk-proj-, sk-ant-, ...), and bearer tokens.
_KEY_SHAPED = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{6,}|\b[Bb]earer\s+[A-Za-z0-9._~+/=\-]{6,}")
_RETRY_AFTER = re.compile(r"[A-Za-z0-9 ,:\-.]{1,64}")
AUTH_STATUSES = frozenset({401, 403})


class KeyScrubber:
    """Replaces the configured secrets and anything key-shaped in a string with `[redacted]`."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _KEY_SHAPED.sub(REDACTED, text)

    def optional(self, value: object) -> str | None:
        """A scrubbed string, or None for anything that is not a non-empty string."""
        return self(value) if isinstance(value, str) and value else None


def retry_after(value: str | None) -> dict[str, str]:
    """The `retry-after` header to pass on (seconds or an HTTP date), or none when it is absent or odd."""
    if value is None:
        return {}
    value = value.strip()
    return {"retry-after": value} if _RETRY_AFTER.fullmatch(value) else {}


def tier_subject(tier: str) -> str:
    """How an error message names an HTTP tier: "The upstream", or "The <name> tier" for a named SLM tier."""
    return "The upstream" if tier == "upstream" else f"The {tier} tier"


def key_setting(tier: str) -> str:
    """The setting that holds an HTTP tier's API key."""
    return "upstream.api_key" if tier == "upstream" else f"slm_tiers.{tier}.api_key"


def status_error(
    status: int, content: bytes, scrub: KeyScrubber, retry_after_header: str | None, tier: str = "upstream"
) -> GatewayError:
    """The error for an answer with status >= 400 from the HTTP tier `tier` (`content` is the start of its body)."""
    if status in AUTH_STATUSES:
        return TierUnavailable(
            f"{tier_subject(tier)} refused this gateway's {'upstream ' if tier == 'upstream' else ''}credentials "
            f"(HTTP {status}); "
            f"the gateway operator must check {key_setting(tier)}.",
            kind="auth",
            status_code=502,
            error_type="upstream_error",
            code="upstream_auth_failed",
        )
    headers = retry_after(retry_after_header) if status in (429, 503) else {}
    message = f"{tier_subject(tier)} answered HTTP {status}."
    error = _error_object(content)
    if error is None:
        payload = error_json(message, "upstream_error", None, f"upstream_{status}")
    else:
        message = scrub.optional(error.get("message")) or message
        payload = error_json(
            message,
            scrub.optional(error.get("type")) or "upstream_error",
            scrub.optional(error.get("param")),
            scrub.optional(error.get("code")),
        )
    failure = UpstreamStatusError(status, payload, message)
    failure.headers = headers
    return failure


def stream_error(payload: bytes, scrub: KeyScrubber, tier: str) -> TierUnavailable:
    """The error for an `{"error": ...}` event inside an upstream stream (the stream ends with it)."""
    error = _error_object(payload) or {}
    detail = scrub.optional(error.get("message"))
    who = tier_subject(tier)
    message = f"{who} stream failed: {detail}" if detail else f"{who} stream failed."
    return TierUnavailable(
        message, kind="protocol", status_code=502, error_type="upstream_error", code="upstream_stream_error"
    )


def is_error_event(payload: bytes) -> bool:
    """Whether a stream payload is an error event (`{"error": ...}` without `choices`), not a chunk that merely
    contains the string "error" (a token, a content delta)."""
    try:
        parsed = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return False
    return isinstance(parsed, dict) and parsed.get("error") is not None and "choices" not in parsed


def _error_object(content: bytes) -> dict[str, object] | None:
    try:
        parsed = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return parsed["error"]
    return None
