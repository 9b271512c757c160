"""`LimitLayer`: the layer around the dispatcher that holds each gateway-key request to its key's and team's caps.

A request without a stored gateway key (a key from the config, or an open gateway) passes straight through. A
cache hit never reaches this layer: it costs nothing and is not limited (the pipeline gives it the
`x-ratelimit-*` headers, `Limiter.hit_headers`). An error after admission carries the headers too, as OpenAI's do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.dispatch import Answer, Handler, StreamAnswer
from gateway.errors import GatewayError
from gateway.exchange import Exchange
from gateway.limits.limiter import Hold, Limiter


class LimitLayer:
    """Reserve before `inner`, settle after it (for a stream: when the stream ends or the client leaves)."""

    def __init__(self, inner: Handler, limiter: Limiter) -> None:
        self.inner = inner
        self.limiter = limiter

    async def __call__(self, ex: Exchange) -> Answer | StreamAnswer:
        limiter = self.limiter
        record = limiter.directory.of_headers(ex.headers)
        if record is None:
            return await self.inner(ex)
        limiter.check_allowed(record, ex)
        scopes = limiter.scopes(record)
        if scopes:
            hold = await limiter.reserve(ex, record, scopes)
        else:  # no caps: only the team's spend is counted
            hold = Hold(record, scopes, "", 0, 0, 0, False)
        try:
            answer = await self.inner(ex)
        except asyncio.CancelledError:
            limiter.settle_later(hold, ex, "abandoned")
            raise
        except GatewayError as exc:  # answered with an error: the caller's headers still describe its caps
            exc.headers = {**exc.headers, **limiter.headers(hold)}
            limiter.settle_later(hold, ex, "failed")
            raise
        except BaseException:
            limiter.settle_later(hold, ex, "failed")
            raise
        answer.headers.update(limiter.headers(hold))
        if isinstance(answer, StreamAnswer):
            answer.chunks = self._settled_after(answer.chunks, hold, ex)
        else:
            limiter.settle_later(hold, ex, "done")
        return answer

    async def _settled_after(self, chunks: AsyncIterator[bytes], hold: Hold, ex: Exchange) -> AsyncIterator[bytes]:
        """Relay the stream; once it ends (or the client leaves) settle what the exchange says was used."""
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            try:
                if aclose is not None:  # the relay writes usage (or the 499 and what was sent) into the exchange
                    await aclose()
            finally:
                self.limiter.settle_later(hold, ex, "done")
