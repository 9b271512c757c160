"""Both upstream transports hand on a body exactly as the server sent it (still content-encoded)."""

from __future__ import annotations

import gzip

import pytest
from aiohttp import web

from gateway.tiers.transport import AiohttpTransport, HttpxTransport, Timeouts
from tests.conftest import aiohttp_site

BODY = b'{"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}'
GZIPPED = gzip.compress(BODY, mtime=0)


@pytest.fixture
async def gzip_server() -> str:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=GZIPPED, headers={"content-type": "application/json", "content-encoding": "gzip"})

    async with aiohttp_site([("GET", "/v1/files", answer)]) as base:
        yield f"{base}/v1/files"


@pytest.mark.parametrize("transport_type", [AiohttpTransport, HttpxTransport])
@pytest.mark.parametrize("how", ["receive", "read"])
async def test_a_gzip_body_is_relayed_as_sent(gzip_server: str, transport_type: type, how: str) -> None:
    transport = transport_type()
    try:
        response = await transport.send("GET", gzip_server, {"accept-encoding": "gzip"}, None, Timeouts(5.0, 5.0))
        if how == "receive":
            body = b"".join([chunk async for chunk in response.receive()])
        else:
            body = await response.read()
        await response.close()
        assert response.header("content-encoding") == "gzip"
        assert body == GZIPPED
        assert gzip.decompress(body) == BODY
    finally:
        await transport.aclose()
