"""The token usage an upstream answer reports, found while its bytes are relayed as-is (passthrough).

`UsageScan` is fed each piece of the body on its way to the client and never changes it. It understands:

- a JSON body (chat, legacy completions, Responses, embeddings, audio): its top-level `usage`. A body of up
  to `max_whole_bytes` is decoded whole; past that only its last `tail_bytes` are kept and the last `"usage":`
  object in them is read (OpenAI's large answers, embeddings, end with it);
- a server-sent-event stream: a chunk's `usage` (chat, legacy completions with `include_usage`), or the
  `response.usage` of a Responses `response.completed` / `response.incomplete` / `response.failed` event.

A gzip or deflate body (`content-encoding`) is inflated for reading, in bounded pieces; other encodings are
not read (the proxy asks the upstream only for these, see `gateway.passthrough.scannable_encodings`).

Prompt tokens are `prompt_tokens` or `input_tokens`, completion tokens `completion_tokens` or `output_tokens`;
counts that are not non-negative integers are ignored (the answer is counted without tokens).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import msgspec

from gateway.openai.wire import Usage
from gateway.tiers.sse import SSEDecoder, SSEProtocolError

MAX_WHOLE_BYTES = 1024 * 1024
TAIL_BYTES = 64 * 1024
INFLATE_STEP = 256 * 1024
READABLE_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
_decoder = msgspec.json.Decoder()
_raw = json.JSONDecoder()


def usage_of(value: Any) -> Usage | None:
    """A reported usage object as `Usage`; None when it is not one (missing, not an object, bad counts)."""
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens", value.get("input_tokens", 0))
    completion = value.get("completion_tokens", value.get("output_tokens", 0))
    counts = (prompt, completion)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return None
    if "prompt_tokens" not in value and "input_tokens" not in value and "total_tokens" not in value:
        return None
    return Usage(prompt, completion)


class UsageScan:
    """Watches one upstream answer's body for its usage and answering model (`usage`, `model` once it ended)."""

    def __init__(self, content_type: str, content_encoding: str = "", *, max_whole_bytes: int = MAX_WHOLE_BYTES,
                 tail_bytes: int = TAIL_BYTES) -> None:
        kind = content_type.split(";", 1)[0].strip().lower()
        encoding = content_encoding.strip().lower()
        readable = encoding in ("", "identity") or encoding in READABLE_ENCODINGS
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in READABLE_ENCODINGS else None
        self._sse = SSEDecoder() if readable and kind == "text/event-stream" else None
        self._json = readable and (kind == "application/json" or kind.endswith("+json"))
        self._max_whole = max_whole_bytes
        self._tail_bytes = tail_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self.usage: Usage | None = None
        self.model: str | None = None

    def feed(self, data: bytes) -> None:
        """One piece of the body, as relayed."""
        if self._sse is None and not self._json:
            return
        if self._inflate is None:
            self._read(data)
            return
        try:  # inflated in bounded steps: a small compressed body may expand to a lot
            piece = self._inflate.decompress(data, INFLATE_STEP)
            while piece:
                self._read(piece)
                piece = self._inflate.decompress(self._inflate.unconsumed_tail, INFLATE_STEP)
        except zlib.error:
            self._sse, self._json = None, False

    def _read(self, data: bytes) -> None:
        if self._sse is not None:
            try:
                payloads = self._sse.feed(data)
            except SSEProtocolError:
                self._sse = None  # an event too large to be one of OpenAI's: stop looking
                return
            for payload in payloads:
                self._event(payload)
        elif self._json:
            self._parts.append(data)
            self._size += len(data)
            if self._size > self._max_whole + self._tail_bytes:  # keep only what a tail read needs
                tail = b"".join(self._parts)[-self._tail_bytes :]
                self._parts, self._size = [tail], len(tail)
                self._max_whole = -1  # too large to decode whole

    def finish(self) -> None:
        """The body ended: read what was kept."""
        if self._sse is not None:
            for payload in self._sse.close():
                self._event(payload)
            return
        if not self._json or not self._parts:
            return
        body = b"".join(self._parts)
        self._parts = []
        if self._max_whole >= 0:
            try:
                answer = _decoder.decode(body)
            except msgspec.DecodeError:
                return
            if isinstance(answer, dict):
                self._take(answer)
            return
        self.usage = _last_usage_in(body.decode("utf-8", "replace"))

    def _event(self, payload: bytes) -> None:
        if payload == b"[DONE]" or not payload.startswith(b"{"):
            return
        try:
            event = _decoder.decode(payload)
        except msgspec.DecodeError:
            return
        if not isinstance(event, dict):
            return
        response = event.get("response")
        if isinstance(response, dict) and str(event.get("type", "")).startswith("response."):
            self._take(response)  # every Responses event that carries the response; the last one has usage
        else:
            self._take(event)

    def _take(self, answer: dict[str, Any]) -> None:
        model = answer.get("model")
        if isinstance(model, str) and model:
            self.model = model
        usage = usage_of(answer.get("usage"))
        if usage is not None:
            self.usage = usage


def _last_usage_in(text: str) -> Usage | None:
    """The last `"usage": {...}` object in `text` (the tail of a large JSON body)."""
    at = len(text)
    while (at := text.rfind('"usage"', 0, at)) >= 0:
        colon = _skip_space(text, at + len('"usage"'))
        if colon < len(text) and text[colon] == ":":
            try:
                value, _ = _raw.raw_decode(text, _skip_space(text, colon + 1))
            except json.JSONDecodeError:
                continue
            usage = usage_of(value)
            if usage is not None:
                return usage
    return None


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at
