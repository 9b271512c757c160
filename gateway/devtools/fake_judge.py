"""The fake upstream's judge mode and answer holds, driven by a script file (JSON).

    {"verdicts": [{"contains": "capital", "local_ok": true, "upstream_ok": false},
                  {"contains": "garbled", "reply": "not a verdict"},
                  {"contains": "judge-down", "status": 503}],
     "default": {"local_ok": true, "upstream_ok": true},
     "holds": [{"contains": "HOLD-A", "name": "A"}]}

A chat request whose `response_format` is the gateway's judge schema (`gateway.learning.judge`) is answered with
the verdict of the first rule whose `contains` is a substring of the prompt the judge request quotes (else
`default`): the JSON object itself, a raw `reply` text, or an error `status`. A non-judge request whose last user
message contains a hold's `contains` is answered only after `POST /_fake/release?name=NAME` (a stream sends its
role and first content event first, then waits). Holds released before they are reached do not wait.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.learning.judge import is_judge_request, quoted_prompt


@dataclass(frozen=True, slots=True)
class VerdictRule:
    contains: str
    local_ok: bool | None = None
    upstream_ok: bool | None = None
    reply: str | None = None
    status: int | None = None


@dataclass(slots=True)
class JudgeScript:
    """Scripted verdicts and holds; `events` are the hold gates by name."""

    verdicts: list[VerdictRule] = field(default_factory=list)
    default: VerdictRule = field(default_factory=lambda: VerdictRule("", True, True))
    holds: list[tuple[str, str]] = field(default_factory=list)
    events: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, name: str) -> asyncio.Event:
        if name not in self.events:
            self.events[name] = asyncio.Event()
        return self.events[name]


def load_script(path: str | Path | None) -> JudgeScript:
    """The script in `path` (an empty script without one: every judge request gets the default verdict)."""
    if not path:
        return JudgeScript()
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rules = [VerdictRule(**r) for r in data.get("verdicts", [])]
    default = VerdictRule("", **data["default"]) if "default" in data else VerdictRule("", True, True)
    holds = [(h["contains"], h["name"]) for h in data.get("holds", [])]
    return JudgeScript(rules, default, holds)


def verdict_rule(script: JudgeScript, body: dict[str, Any]) -> VerdictRule:
    """The rule answering a judge request."""
    prompt = quoted_prompt(body) or ""
    for rule in script.verdicts:
        if rule.contains in prompt:
            return rule
    return script.default


def verdict_content(rule: VerdictRule) -> str:
    if rule.reply is not None:
        return rule.reply
    return json.dumps({"local_ok": rule.local_ok, "upstream_ok": rule.upstream_ok})


def judge_completion(content: str, body: dict[str, Any], model: str, completion_id: str) -> dict[str, Any]:
    """A `chat.completion` carrying `content`, with word-count usage as the fake upstream counts it."""
    prompt_tokens = 0
    for m in body.get("messages") or ():
        if isinstance(m, dict) and isinstance(m.get("content"), str):
            prompt_tokens += len(m["content"].split())
    completion_tokens = len(content.split())
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": max(1, prompt_tokens), "completion_tokens": completion_tokens,
                  "total_tokens": max(1, prompt_tokens) + completion_tokens},
    }


def hold_for(script: JudgeScript, body: dict[str, Any], last_user: str) -> asyncio.Event | None:
    """The gate a non-judge request waits on, if its last user message names a hold."""
    if is_judge_request(body):
        return None
    for contains, name in script.holds:
        if contains in last_user:
            return script.gate(name)
    return None
