"""The incremental SSE decoder: any split of the bytes gives the same events."""

from __future__ import annotations

import pytest

from gateway.tiers.sse import SSEDecoder, SSEProtocolError

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a":1}\n\n'
    b"event: message\r\nid: 7\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"data:no-space\n\n"
    b"retry: 100\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', b"line one\nline two", b"no-space", b"[DONE]"]


def decode_in_pieces(data: bytes, size: int) -> list[bytes]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for start in range(0, len(data), size):
        out += decoder.feed(data[start : start + size])
    return out + decoder.close()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, len(STREAM)])
def test_every_split_gives_the_same_events(size: int) -> None:
    assert decode_in_pieces(STREAM, size) == EXPECTED


def test_one_read_with_several_events_returns_them_all_at_once() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x":1}\n\ndata: {"x":2}\n\ndata: {"x"') == [b'{"x":1}', b'{"x":2}']
    assert decoder.feed(b":3}\n\n") == [b'{"x":3}']


def test_an_unterminated_last_event_is_returned_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: tail") == []
    assert decoder.close() == [b"tail"]
    assert decoder.close() == []


def test_an_event_over_the_limit_is_a_protocol_error() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    decoder.feed(b"data: " + b"x" * 40)
    with pytest.raises(SSEProtocolError):
        decoder.feed(b"x" * 40)
