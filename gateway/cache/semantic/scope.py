"""The hard scope of a semantic lookup: candidates are searched only among entries whose scope is equal.

Equal means: the same tenant, the same tier and model, the same hash of every generation parameter (the
canonical request of `gateway.cache.keys` without `messages`: temperature, max_tokens, tools, response_format,
seed, stop, ...) and the same hash of the system prompt and every earlier turn. Only the last user message's
text may differ, and it is what gets embedded; its other fields (a `name`, say) are part of the context hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.cache.keys import canonical_request, tenant_namespace

SCOPE_VERSION = 1
_encode = msgspec.json.Encoder(order="sorted").encode


@dataclass(frozen=True, slots=True)
class SemanticScope:
    """Everything that must be equal for two prompts to share an answer."""

    tenant: str
    tier: str
    model: str
    params_digest: str
    context_digest: str
    turns: int
    """User turns in the conversation, the last one included (1 for a single prompt)."""

    @property
    def tenant_ns(self) -> str:
        return tenant_namespace(self.tenant)

    @property
    def scope_id(self) -> str:
        """`{tenant namespace}:sem:{digest}`: the tenant's namespace first, so a tenant purge covers it."""
        material = _encode([SCOPE_VERSION, self.tenant, self.tier, self.model, self.params_digest, self.context_digest])
        return f"{self.tenant_ns}:sem:{hashlib.blake2b(material, digest_size=16).hexdigest()}"


def _digest(value: Any) -> str:
    return hashlib.blake2b(_encode(value), digest_size=16).hexdigest()


def _text(content: Any) -> str | None:
    """A message's text: a string, or a list of only text parts; None for anything else (images, audio)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return None
            parts.append(part["text"])
        return "\n".join(parts)
    return None


def scope_of_request(
    tenant: str, tier: str, model: str, raw: Mapping[str, Any]
) -> tuple[SemanticScope, str] | str:
    """The scope and the text to embed, or the reason the request has none (`no-messages`, `not-user`,
    `not-text`)."""
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        return "no-messages"
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user":
        return "not-user"
    text = _text(last.get("content"))
    if text is None or not text.strip():
        return "not-text"
    canonical = canonical_request(raw)
    params = {name: value for name, value in canonical.items() if name != "messages"}
    context = [canonical_request(m) if isinstance(m, Mapping) else m for m in messages[:-1]]
    if len(last) > 2:  # fields besides role and content (a plain last message keeps the scope ids written before)
        extra = {name: value for name, value in canonical_request(last).items() if name not in ("role", "content")}
        if extra:
            context.append({"last": extra})
    turns = sum(1 for m in messages if isinstance(m, Mapping) and m.get("role") == "user")
    return SemanticScope(tenant, tier, model, _digest(params), _digest(context), turns), text
