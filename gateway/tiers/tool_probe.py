"""Deciding, from the first words of an answer, whether the model is calling one of the given functions.

Small models announce a call in several ways: their trained `<tool_call>` tag, a fenced ```json block, or a bare
`{"name": ...}` object. The probe reads the start of the output and answers True (a call to a known function),
False (anything else: free text, or a call to a function that does not exist) or None (cannot tell yet).
"""

from __future__ import annotations

import re

TOOL_CALL_OPEN = "<tool_call>"
_FENCE = re.compile(r"```(?:json)?")
_NAME_KEY = re.compile(r'"name"\s*:\s*"([^"\\]*)')


class ToolCallProbe:
    """Classifies the opening of an answer; feed it text until `decided` is not None."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.text = ""
        self.decided: bool | None = None

    def feed(self, piece: str) -> bool | None:
        if self.decided is None:
            self.text += piece
            self.decided = self.classify(self.text)
        return self.decided

    def classify(self, text: str) -> bool | None:
        head = text.lstrip()
        if not head:
            return None
        if head.startswith(TOOL_CALL_OPEN):
            return True
        if TOOL_CALL_OPEN.startswith(head):
            return None
        if head.startswith("`"):
            if "```".startswith(head) or "```json".startswith(head):
                return None
            fence = _FENCE.match(head)
            if fence is None:
                return False
            head = head[fence.end() :].lstrip()
            if not head:
                return None
        if not head.startswith("{"):
            return False
        return self._object(head[1:].lstrip())

    def _object(self, body: str) -> bool | None:
        """`body` follows the opening brace: a call when its first key is "name" naming a known function."""
        if not body:
            return None
        match = _NAME_KEY.match(body)
        if match is None:
            return None if _could_become_name_key(body) else False
        name = match.group(1)
        closed = len(body) > match.end() and body[match.end()] == '"'
        if closed:
            return name in self.names
        return None if any(n.startswith(name) for n in self.names) else False


def _could_become_name_key(body: str) -> bool:
    """Whether `body` is a prefix of `"name": "` (with any whitespace around the colon)."""
    compact = re.sub(r"\s+", "", body)
    return '"name":"'.startswith(compact) and len(compact) < len('"name":"')
