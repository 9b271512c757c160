"""Incremental server-sent-events decoding: bytes as they arrive in, the `data` of each complete event out.

One decoder per stream. `feed` takes whatever the socket delivered (any split, `\\n` or `\\r\\n` line ends) and
returns the data of every event completed by it, in order, so a stream relay can forward everything that has
already arrived in one write instead of one write per event.
"""

from __future__ import annotations

DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


class SSEProtocolError(Exception):
    """The stream is not valid SSE (an event larger than the limit)."""


class SSEDecoder:
    """Splits an SSE byte stream into event data payloads (`data:` lines joined by `\\n`; other fields ignored)."""

    __slots__ = ("_pending", "_max_event_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._pending = b""
        self._max_event_bytes = max_event_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """The data of each event that `data` completes (events without data, such as comments, are skipped)."""
        buffer = self._pending + data if self._pending else data
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # a "\r\n" may be split across reads: decide when the next read comes
                self._pending = buffer
                return []
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buffer.split(b"\n\n")
        self._pending = blocks.pop()
        if len(self._pending) > self._max_event_bytes:
            raise SSEProtocolError(f"a server-sent event exceeded {self._max_event_bytes} bytes")
        payloads = []
        for block in blocks:
            payload = event_data(block)
            if payload:
                payloads.append(payload)
        return payloads

    def close(self) -> list[bytes]:
        """The data of an event left unterminated when the stream ended (servers may omit the final blank line)."""
        block, self._pending = self._pending.rstrip(b"\r\n"), b""
        payload = event_data(block) if block else b""
        return [payload] if payload else []


def event_data(block: bytes) -> bytes:
    """The data of one event block: its `data:` lines' values joined by `\\n` (comments and other fields skipped)."""
    if block.startswith(b"data:") and b"\n" not in block:
        return _field_value(block[5:])
    return b"\n".join(_field_value(line[5:]) for line in block.split(b"\n") if line.startswith(b"data:"))


def _field_value(value: bytes) -> bytes:
    return value[1:] if value.startswith(b" ") else value
