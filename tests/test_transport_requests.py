"""What the aiohttp transport puts on the wire: the caller's headers, `accept: */*`, and nothing it remembers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.tiers.transport import AiohttpTransport, Timeouts, TransportError
from tests.conftest import aiohttp_site

TIMEOUTS = Timeouts(5.0, 5.0)


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A server that records each request's headers and sets a cookie on every answer."""
    seen: list[dict[str, str]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        response = web.Response(body=b"{}", content_type="application/json")
        response.set_cookie("session", "upstream-secret")
        return response

    async with aiohttp_site([("*", "/v1/echo", answer)]) as base:
        yield f"{base}/v1/echo", seen


async def test_only_the_callers_headers_and_accept_are_sent(echo_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = echo_server
    transport = AiohttpTransport()
    try:
        response = await transport.send("POST", url, {"content-type": "application/json"}, b"{}", TIMEOUTS)
        assert await response.read() == b"{}"
        await response.close()
        response = await transport.send("GET", url, {"accept": "application/json", "user-agent": "me/1"}, None,
                                        TIMEOUTS)
        await response.close()
    finally:
        await transport.aclose()
    host = url.split("/")[2]
    assert seen == [
        {"host": host, "content-type": "application/json", "accept": "*/*", "content-length": "2"},
        {"host": host, "accept": "application/json", "user-agent": "me/1"},
    ]


async def test_an_upstream_cookie_is_never_sent_back(echo_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = echo_server
    transport = AiohttpTransport()
    try:
        for _ in range(2):
            response = await transport.send("GET", url, {}, None, TIMEOUTS)
            assert response.header("set-cookie") == "session=upstream-secret; Path=/"
            await response.close()
    finally:
        await transport.aclose()
    assert [h.get("cookie") for h in seen] == [None, None]


async def test_an_unparsable_url_is_a_protocol_failure() -> None:
    transport = AiohttpTransport()
    try:
        with pytest.raises(TransportError) as failure:
            await transport.send("GET", "http://[::1/v1", {}, None, TIMEOUTS)
    finally:
        await transport.aclose()
    assert (failure.value.kind, str(failure.value)) == ("protocol", "protocol: InvalidUrlClientError")


@pytest.fixture
async def cut_server() -> AsyncIterator[str]:
    """A server that declares 100 bytes, sends 5 in two writes, and drops the connection."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-length": "100"})
        await response.prepare(request)
        await response.write(b"ab")
        await asyncio.sleep(0.05)
        await response.write(b"cde")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return response

    async with aiohttp_site([("GET", "/v1/cut", answer)]) as base:
        yield f"{base}/v1/cut"


async def test_a_body_cut_off_midway_is_a_protocol_failure_after_what_arrived(cut_server: str) -> None:
    transport = AiohttpTransport()
    received: list[bytes] = []
    try:
        response = await transport.send("GET", cut_server, {}, None, TIMEOUTS)
        with pytest.raises(TransportError) as failure:
            async for data in response.receive():
                received.append(data)
        await response.close()
    finally:
        await transport.aclose()
    assert (b"".join(received), failure.value.kind, str(failure.value)) == (
        b"abcde", "protocol", "protocol: ClientPayloadError"
    )


async def test_a_body_left_unread_midway_can_be_closed(cut_server: str) -> None:
    transport = AiohttpTransport()
    try:
        response = await transport.send("GET", cut_server, {}, None, TIMEOUTS)
        chunks = response.receive()
        first = await anext(aiter(chunks))
        await response.close()
    finally:
        await transport.aclose()
    assert first == b"ab"
