"""The judge protocol (keep it stable): one chat completion to the judge model, `response_format` json_schema
named `JUDGE_SCHEMA_NAME`, whose user message quotes the request's last user prompt verbatim and both answers.
The judge replies with the JSON object `{"local_ok": bool, "upstream_ok": bool}`; anything else is malformed.
"""

from __future__ import annotations

from typing import Any

import msgspec

JUDGE_SCHEMA_NAME = "slm_gateway_judge_v1"
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"local_ok": {"type": "boolean"}, "upstream_ok": {"type": "boolean"}},
    "required": ["local_ok", "upstream_ok"],
    "additionalProperties": False,
}
SYSTEM_PROMPT = (
    "You grade answers to a user's request. Answer A and answer B were written independently for the same "
    "request. For each, decide whether it is an acceptable answer: correct, complete enough, and following the "
    "request's instructions. Reply only with the JSON object the schema describes."
)
PROMPT_BEGIN = "<<<REQUEST\n"
PROMPT_END = "\nREQUEST>>>"


class MalformedVerdict(ValueError):
    """The judge's reply is not the verdict object (counted and dropped, never guessed)."""


class Verdict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The judge's grades: whether the local answer, and the upstream answer, are acceptable."""

    local_ok: bool
    upstream_ok: bool


def judge_user_message(prompt: str, local_answer: str, upstream_answer: str) -> str:
    """The judge's user message: the prompt verbatim between markers, then answer A (local) and B (upstream).

    Answers are labelled A/B rather than by tier so that the judge does not favour a tier by name.
    """
    return (
        f"Request (verbatim):\n{PROMPT_BEGIN}{prompt}{PROMPT_END}\n\n"
        f"Answer A:\n<<<A\n{local_answer}\nA>>>\n\n"
        f"Answer B:\n<<<B\n{upstream_answer}\nB>>>\n\n"
        'Reply {"local_ok": <is A acceptable>, "upstream_ok": <is B acceptable>}.'
    )


def judge_request(model: str, prompt: str, local_answer: str, upstream_answer: str, max_tokens: int) -> dict[str, Any]:
    """The chat completion body sent to the judge."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": judge_user_message(prompt, local_answer, upstream_answer)},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": JUDGE_SCHEMA_NAME, "strict": True, "schema": JUDGE_SCHEMA},
        },
        "temperature": 0,
        "max_tokens": max_tokens,
    }


def quoted_prompt(body: dict[str, Any]) -> str | None:
    """The prompt a judge request quotes (for the fake upstream's scripted verdicts), or None."""
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and PROMPT_BEGIN in content:
            start = content.index(PROMPT_BEGIN) + len(PROMPT_BEGIN)
            end = content.find(PROMPT_END, start)
            return content[start:end] if end >= 0 else None
    return None


def is_judge_request(body: dict[str, Any]) -> bool:
    """Whether a chat completion body is a judge request (by its response_format schema name)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return False
    schema = fmt.get("json_schema")
    return isinstance(schema, dict) and schema.get("name") == JUDGE_SCHEMA_NAME


def parse_verdict(content: str | None) -> Verdict:
    """The verdict in the judge's message content; MalformedVerdict unless it is exactly the verdict object."""
    if not content:
        raise MalformedVerdict("the judge's reply is empty")
    try:
        return msgspec.json.decode(content.strip(), type=Verdict, strict=True)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedVerdict(f"the judge's reply is not a verdict: {exc}") from None
