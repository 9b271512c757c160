"""Limits on how a client sends a request (gateway/http_guard.py), with raw sockets against a running gateway:
an oversized head is a 431, a head or body that does not arrive in time is a 408, idle connections are closed,
and a request llhttp cannot parse is an OpenAI-shaped 400. Every reply is OpenAI-shaped JSON."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import msgspec
import pytest

from tests.conftest import RunningGateway

LIMITS = {"max_header_bytes": 16_384, "header_timeout_seconds": 1.0, "body_timeout_seconds": 1.0}
WAIT = 30.0  # generous bound on any read: a test never depends on how fast the server closes


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    from tests.conftest import run_gateway

    with run_gateway(config={"server": LIMITS}, tmp_dir=tmp_path_factory.mktemp("limits")) as gateway:
        yield gateway


def exchange(gw: RunningGateway, data: bytes) -> bytes:
    """Send `data` on a new connection, then read until the server closes it (bounded by WAIT)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT) as sock:
        if data:
            sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def parse(reply: bytes) -> tuple[str, dict[str, str], object]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, msgspec.json.decode(body)


def error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def test_a_head_over_the_limit_is_a_431(gw: RunningGateway) -> None:
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000  # never finished: refused on size alone
    status, headers, body = parse(exchange(gw, head))
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert body == error("The request head is larger than this gateway accepts (16384 bytes).",
                         "request_header_too_large")


def test_a_head_under_the_limit_is_served(gw: RunningGateway) -> None:
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: " + b"a" * 12_000 + b"\r\n\r\n"
    status, _, body = parse(exchange(gw, head))
    assert status == "HTTP/1.1 200 OK" and body == {"status": "ok"}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="idle-connection"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nhost: x\r\n", id="head-never-finished"),
        pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n{\"model\":", id="body-never-finished"),
    ],
)
def test_a_request_that_does_not_arrive_in_time_is_a_408(gw: RunningGateway, data: bytes) -> None:
    status, headers, body = parse(exchange(gw, data))
    assert status == "HTTP/1.1 408 Request Timeout"
    assert headers["connection"] == "close"
    assert body == error("The request did not arrive in time.", "request_timeout")


def test_many_slow_connections_are_all_closed(gw: RunningGateway) -> None:
    socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT) for _ in range(40)]
    try:
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        replies = []
        for sock in socks:
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            replies.append(b"".join(chunks))
    finally:
        for sock in socks:
            sock.close()
    assert {parse(r)[0] for r in replies} == {"HTTP/1.1 408 Request Timeout"}


def test_a_request_that_cannot_be_parsed_is_an_openai_shaped_400(gw: RunningGateway) -> None:
    status, headers, body = parse(exchange(gw, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert body == error("Invalid HTTP request received.", "invalid_http_request")


def test_a_kept_alive_connection_serves_several_requests(gw: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT) as sock:
        for close in (False, False, True):
            extra = b"connection: close\r\n" if close else b""
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + extra + b"\r\n")
            reply = b""
            while b'{"status":"ok"}' not in reply:
                chunk = sock.recv(65536)
                assert chunk, f"closed early: {reply!r}"
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200 OK")


