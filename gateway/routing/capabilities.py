"""What a request needs from the tier that answers it: `required_features`, from the vocabulary of
`gateway.tiers.base` (a tier lacking one of them never serves the request), and the field that asks for each.
"""

from __future__ import annotations

from gateway.openai.request import TEXT_PARTS, ParsedRequest
from gateway.tiers.base import (
    AUDIO, IMAGES, LOGIT_BIAS, LOGPROBS, N, NO_FEATURES, RESPONSE_FORMAT, STORE, TOOLS, WEB_SEARCH,
)


def required_features(parsed: ParsedRequest) -> frozenset[str]:
    """The optional features `parsed` needs: tools (unless `tool_choice: none`), structured output (any
    `response_format` type but `text`), non-text content parts, `n > 1`, `logprobs` / `top_logprobs`, a non-empty
    `logit_bias`, audio output (`modalities` with "audio", or `audio`), `store: true`, `web_search_options`.

    O(number of messages); the common request (no tools, no response_format, string contents) allocates nothing.
    """
    chat = parsed.chat
    raw = parsed.raw
    found: set[str] | None = None
    if (chat.tools and raw.get("tool_choice") != "none") or (raw.get("functions") and raw.get("function_call") != "none"):
        found = {TOOLS}
    fmt = chat.response_format
    if fmt and fmt.get("type") != "text":
        found = (found or set()) | {RESPONSE_FORMAT}
    if chat.n is not None and chat.n > 1:
        found = (found or set()) | {N}
    if raw.get("logprobs") or raw.get("top_logprobs"):
        found = (found or set()) | {LOGPROBS}
    if chat.logit_bias:
        found = (found or set()) | {LOGIT_BIAS}
    if raw.get("audio") is not None or _asks_audio(raw.get("modalities")):
        found = (found or set()) | {AUDIO}
    if raw.get("store") is True:
        found = (found or set()) | {STORE}
    if raw.get("web_search_options") is not None:
        found = (found or set()) | {WEB_SEARCH}
    for message in chat.messages:
        content = message.content
        if content is None or type(content) is str:
            continue
        if any(part.get("type") not in TEXT_PARTS for part in content):
            found = (found or set()) | {IMAGES}
            break
    return NO_FEATURES if found is None else frozenset(found)


def _asks_audio(modalities: object) -> bool:
    return isinstance(modalities, list) and "audio" in modalities


def feature_param(parsed: ParsedRequest, feature: str) -> str:
    """The request field that asks for `feature` (for the error's `param`), e.g. `messages[0].content[1]`."""
    raw = parsed.raw
    if feature == TOOLS:
        return "tools" if parsed.chat.tools else "functions"
    if feature == LOGPROBS:
        return "logprobs" if raw.get("logprobs") else "top_logprobs"
    if feature == AUDIO:
        return "audio" if raw.get("audio") is not None else "modalities"
    if feature == IMAGES:
        for i, message in enumerate(parsed.chat.messages):
            if isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if part.get("type") not in TEXT_PARTS:
                        return f"messages[{i}].content[{j}]"
        return "messages"
    return feature  # "response_format", "n", "logit_bias", "store", ...: the field has the feature's name


def first_missing(parsed: ParsedRequest, missing: frozenset[str]) -> tuple[str, str]:
    """One missing feature (in a stable order) and the field that asks for it."""
    feature = min(missing)
    return feature, feature_param(parsed, feature)
