"""Chat prompts for the local model: the GGUF's chat template rendered (with tools when given) and tokenised so
that only the template's own markers become control tokens.

User-supplied text (message content, tool definitions, earlier tool calls) may contain the text of a control
token such as `<|im_end|>`. Tokenised with special tokens parsed, that text would become the real token and let a
user forge a system turn. Before rendering, every control-token text inside user strings is replaced by a marker;
after rendering, the template text is tokenised with special tokens parsed and each marker as plain text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from gateway.openai.request import Message, message_text
from gateway.errors import InvalidRequest

DEFAULT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use code points: never produced by a template
_MARKER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

Tokenize = Callable[[str, bool], list[int]]  # (text, parse_special) -> token ids
TEMPLATE_ROLES = {"developer": "system", "function": "tool"}
"""OpenAI roles chat templates do not know, as the role they mean: `developer` is the newer name of `system`, the
legacy `function` result is a tool result (a template skips a role it does not know, silently dropping it)."""


def control_token_texts(llm: llama_cpp.Llama) -> tuple[str, ...]:
    """The texts of the vocabulary's control tokens (those only special-token parsing produces), longest first."""
    vocab = llm._model.vocab
    texts = set()
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_get_attr(vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
            text = (llama_cpp.llama_vocab_get_text(vocab, token) or b"").decode("utf-8", "replace")
            if text:
                texts.add(text)
    return tuple(sorted(texts, key=len, reverse=True))


class ChatPrompt:
    """Renders and tokenises chat requests for one model."""

    def __init__(self, template: str | None, control_texts: tuple[str, ...], tokenize: Tokenize) -> None:
        self.formatter = Jinja2ChatFormatter(template=template or DEFAULT_TEMPLATE, eos_token="", bos_token="")
        self.control_texts = control_texts
        self._pattern = re.compile("|".join(re.escape(t) for t in control_texts)) if control_texts else None
        self._index = {t: i for i, t in enumerate(control_texts)}
        self._tokenize = tokenize

    def tokens(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The prompt's token ids (ending with the assistant turn's opening)."""
        try:
            rendered = self.formatter(
                messages=[self._message(m) for m in messages], tools=self._escape(tools) if tools else None
            ).prompt
        except Exception as exc:  # the template's raise_exception, or a message shape it does not handle
            raise InvalidRequest(
                f"The local model's chat template cannot render these messages: {exc}",
                param="messages",
                code="invalid_value",
            ) from None
        ids: list[int] = []
        position = 0
        for match in _MARKER.finditer(rendered):
            if match.start() > position:
                ids += self._tokenize(rendered[position : match.start()], True)
            ids += self._tokenize(self.control_texts[int(match.group(1))], False)
            position = match.end()
        if position < len(rendered):
            ids += self._tokenize(rendered[position:], True)
        return ids

    def _message(self, message: Message) -> dict[str, Any]:
        role = TEMPLATE_ROLES.get(message.role, message.role)
        out: dict[str, Any] = {"role": role, "content": self._escape(message_text(message))}
        if message.tool_calls:
            out["tool_calls"] = [self._tool_call(c) for c in message.tool_calls]
            if message.content is None:
                out["content"] = ""
        if message.tool_call_id is not None:
            out["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            out["name"] = self._escape(message.name)
        return out

    def _tool_call(self, call: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI tool call as chat templates expect it: `arguments` as an object, not a JSON string."""
        given = call.get("function")
        function = dict(given) if isinstance(given, dict) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                function["arguments"] = json.loads(arguments)
            except ValueError:
                pass
        return self._escape({**call, "function": function})

    def _escape(self, value: Any) -> Any:
        """`value` with every control-token text in its strings replaced by a marker (recursively)."""
        if isinstance(value, str):
            if self._pattern is None:
                return value
            return self._pattern.sub(lambda m: f"{_OPEN}{self._index[m.group(0)]}{_CLOSE}", value)
        if isinstance(value, list):
            return [self._escape(v) for v in value]
        if isinstance(value, dict):
            return {self._escape(k): self._escape(v) for k, v in value.items()}
        return value
