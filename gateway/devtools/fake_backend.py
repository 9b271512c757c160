"""`FakeBackend`: a scripted tier in-process (as httpx's `MockTransport` stands in for the network).

It answers with a fixed reply and exact usage, or fails the way it is told to (before answering, or after some
chunks of a stream), and remembers every call. Tests of the request middle use it instead of the real model or
a subprocess upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec

from gateway.errors import GatewayError
from gateway.openai.request import ParsedRequest
from gateway.openai.wire import Usage, chunk_json, completion_body, completion_id, usage_chunk_json
from gateway.tiers.base import Completion


class FakeCall(msgspec.Struct, frozen=True):
    """One call a `FakeBackend` received."""

    model: str
    request_id: str | None
    stream: bool


class FakeBackend:
    """A tier that answers every request with `reply`, one chunk per word when streamed.

    `model`: the model it says answered (default: the one it was asked for). Usage: `prompt_tokens`, and one
    completion token per word. `error` is raised instead of answering; `fail_after` chunks into a stream it
    raises `stream_error`. `delay` seconds pass before it answers.
    """

    def __init__(
        self,
        name: str = "upstream",
        *,
        reply: str = "Paris is the capital of France.",
        model: str | None = None,
        prompt_tokens: int = 12,
        error: GatewayError | None = None,
        fail_after: int | None = None,
        stream_error: GatewayError | None = None,
        delay: float = 0.0,
        finish_reason: str = "stop",
    ) -> None:
        self.name = name
        self.reply = reply
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.error = error
        self.fail_after = fail_after
        self.stream_error = stream_error
        self.delay = delay
        self.finish_reason = finish_reason
        self.calls: list[FakeCall] = []
        self.started = self.closed = False

    @property
    def pieces(self) -> list[str]:
        """The reply as it is streamed: each word with the space before it."""
        words = self.reply.split(" ")
        return [words[0], *(" " + w for w in words[1:])]

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, len(self.pieces))

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def ready(self) -> bool:
        return True

    async def _begin(self, model: str, request_id: str | None, stream: bool) -> str:
        self.calls.append(FakeCall(model, request_id, stream))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.model or model

    async def complete(self, request: ParsedRequest, model: str, request_id: str | None = None) -> Completion:
        answered = await self._begin(model, request_id, False)
        usage = self.usage
        body = completion_body(
            id=completion_id(), created=int(time.time()), model=answered,
            message={"role": "assistant", "content": self.reply}, finish_reason=self.finish_reason, usage=usage,
        )
        return Completion(body=body, model=answered, usage=usage)

    async def stream(
        self, request: ParsedRequest, model: str, request_id: str | None = None
    ) -> AsyncIterator[list[bytes]]:
        answered = await self._begin(model, request_id, True)
        cid, created = completion_id(), int(time.time())
        chunks = [chunk_json(cid, created, answered, {"role": "assistant", "content": ""})]
        chunks += [chunk_json(cid, created, answered, {"content": piece}) for piece in self.pieces]
        chunks.append(chunk_json(cid, created, answered, {}, self.finish_reason))
        chunks.append(usage_chunk_json(cid, created, answered, self.usage))
        for sent, chunk in enumerate(chunks):
            if self.fail_after is not None and sent >= self.fail_after:
                assert self.stream_error is not None, "fail_after needs a stream_error"
                raise self.stream_error
            yield [chunk]
