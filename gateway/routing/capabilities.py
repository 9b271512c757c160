"""What a request needs from the tier that answers it: `required_features`, from the vocabulary of
`gateway.tiers.base` (a tier lacking one of them never serves the request), and the field that asks for each.
"""

from __future__ import annotations

from gateway.openai.request import ParsedRequest
from gateway.tiers.base import IMAGES, LOGPROBS, N, NO_FEATURES, RESPONSE_FORMAT, TOOLS


def required_features(parsed: ParsedRequest) -> frozenset[str]:
    """The optional features `parsed` needs: tools (unless `tool_choice: none`), structured output (any
    `response_format` type but `text`), non-text content parts, `n > 1`, `logprobs` / `top_logprobs`.

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
    for message in chat.messages:
        content = message.content
        if content is None or type(content) is str:
            continue
        if any(part.get("type") != "text" for part in content):
            found = (found or set()) | {IMAGES}
            break
    return NO_FEATURES if found is None else frozenset(found)


def feature_param(parsed: ParsedRequest, feature: str) -> str:
    """The request field that asks for `feature` (for the error's `param`), e.g. `messages[0].content[1]`."""
    raw = parsed.raw
    if feature == TOOLS:
        return "tools" if parsed.chat.tools else "functions"
    if feature == LOGPROBS:
        return "logprobs" if raw.get("logprobs") else "top_logprobs"
    if feature == IMAGES:
        for i, message in enumerate(parsed.chat.messages):
            if isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if part.get("type") != "text":
                        return f"messages[{i}].content[{j}]"
        return "messages"
    return feature  # "response_format", "n": the field has the feature's name


def first_missing(parsed: ParsedRequest, missing: frozenset[str]) -> tuple[str, str]:
    """One missing feature (in a stable order) and the field that asks for it."""
    feature = min(missing)
    return feature, feature_param(parsed, feature)
