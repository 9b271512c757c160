"""The access log: one JSON line per finished chat request, written through the stdlib logger "slm_gateway.access".

`gateway.accounting.Accounting.record` feeds it each finished `Exchange` (the one record point). A line holds
the time, request id, tenant (a short hash of the key's tenant id, never the key), the decided route, reason,
answering tier, model, status, error code, fallback, tokens, latency and cache outcome; the request body (the
prompt) only with `access_log_prompts: true`.

Lines go to stderr by default (`install_stderr_handler`): while the gateway's `LineWriter` is the logger's only
handler, a line is encoded once (msgspec) and queued to it, and a background thread writes the queue every
`FLUSH_SECONDS` (no `LogRecord`, no write on the event loop: ~3 us a request, `bench/access_log.py`). Any
other `logging` handler on the logger gets the same records (format them with `JsonFormatter`), through
`logging` as usual.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, TextIO

import msgspec

from gateway.exchange import NO_TIER, Exchange

LOGGER_NAME = "slm_gateway.access"
_encoder = msgspec.json.Encoder()
REJECTED = "rejected"  # the route of a request the router refused
TENANT_CHARS = 14  # "t-" and 12 hex digits of the tenant id (itself a hash of the key)
FLUSH_SECONDS = 0.05  # how long a line may wait in `LineWriter` before it is written
MAX_PENDING = 100_000  # lines `LineWriter` holds for a stream that does not keep up (~40 MB); later ones are dropped


class AccessRecord(msgspec.Struct):
    """One line of the access log (field order is the line's)."""

    time: str
    request_id: str
    tenant: str | None
    route: str
    """The decided tier, "rejected" (refused by the router) or "none" (refused before routing)."""
    reason: str
    tier: str
    """Who answered: local, upstream (after a fallback: the fallback), cache, or none."""
    model: str | None
    status: int
    error: str | None
    fallback: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cache: str | None
    stream: bool
    request: Any = msgspec.UNSET
    """The request body as received: only with `access_log_prompts: true`."""

    def __str__(self) -> str:
        """The JSON line (what a plain `%(message)s` format of a host's own handler shows)."""
        return _encoder.encode(self).decode()


class JsonFormatter(logging.Formatter):
    """An access record as its JSON line; any other record as {"time", "level", "logger", "message"}."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, AccessRecord):
            return str(record.msg)
        return _encoder.encode({
            "time": _iso(record.created), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        }).decode()


class LineWriter(logging.Handler):
    """Writes JSON lines to a stream in batches, off the caller's thread: `write` queues a line (well under a
    microsecond), a daemon thread writes what gathered every `flush_seconds` in one call, so a slow reader of the
    stream never blocks the event loop. Without a `stream`, a line goes to `sys.stderr` as it was when the line
    was queued (test runners swap it: what is queued before a swap is written before it).

    While `max_pending` lines wait (the stream does not keep up), further lines are dropped and counted; the
    count is written as a warning line once the stream takes writes again. A forked child starts afresh.

    As a `logging.Handler` it also takes records from other handlers' paths (formatted by `JsonFormatter`);
    `flush()` (called by `logging.shutdown` at exit) writes what is queued now.
    """

    def __init__(
        self, stream: TextIO | None = None, flush_seconds: float = FLUSH_SECONDS, max_pending: int = MAX_PENDING
    ) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.stream = stream
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.dropped = 0  # counted by `write` (the only writer of it); `_reported` by the drain
        self._reported = 0
        self._target = stream if stream is not None else sys.stderr
        self._forked()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """(Re)set the queue and its thread: at start, and in a forked child (the parent writes its own lines)."""
        self._pending: deque[bytes] = deque()
        self._signal = threading.Event()
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def write(self, line: bytes) -> None:
        """Queue one line (newline included) to be written within `flush_seconds`."""
        if self.stream is None and sys.stderr is not self._target:
            with self._drain_lock:  # stderr was swapped: what is queued goes where it was meant to
                self._drain()
                self._target = sys.stderr
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(line)
        if not self._signal.is_set():
            if self._thread is None:
                self._start()
            self._signal.set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record).encode() + b"\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Write every queued line now (in order with the background writes)."""
        with self._drain_lock:
            self._drain()

    def _drain(self) -> None:
        pending, lines = self._pending, []
        while pending:
            lines.append(pending.popleft())
        dropped = self.dropped - self._reported
        if dropped:
            self._reported += dropped
            lines.append(_encoder.encode({
                "time": _iso(time.time()), "level": "WARNING", "logger": LOGGER_NAME,
                "message": f"{dropped} access log lines dropped: the log stream did not keep up",
            }) + b"\n")
        if lines:
            try:
                self._target.write(b"".join(lines).decode())
                self._target.flush()
            except (OSError, ValueError):  # a closed or broken stream: the lines are dropped, never raised
                pass

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slm-gateway-access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._signal.wait()
            time.sleep(self.flush_seconds)  # let a batch gather: one write per interval under load
            self._signal.clear()  # before draining: a line queued after this sets it again
            self.flush()


def install_stderr_handler(logger: logging.Logger) -> None:
    """Send the access log to stderr as JSON lines, unless the logger already has a handler (idempotent)."""
    if logger.handlers:
        return
    logger.addHandler(LineWriter())
    logger.propagate = False  # the application log's format is not the access log's


def _sole_writer(logger: logging.Logger) -> LineWriter | None:
    """The logger's `LineWriter` when it is the only place its records go (then no `LogRecord` is needed)."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.propagate or logger.filters or logger.disabled:
        return None
    handler = handlers[0]
    if type(handler) is not LineWriter or handler.filters or handler.level > logging.INFO:
        return None
    return handler


class AccessLog:
    """Logs one `AccessRecord` per finished exchange (nothing is built when the logger would drop it)."""

    __slots__ = ("logger", "prompts", "_second", "_prefix")

    def __init__(self, logger: logging.Logger, *, prompts: bool = False) -> None:
        self.logger = logger
        self.prompts = prompts
        self._second = -1  # the second `_prefix` formats (formatting a time costs more than the rest of a line)
        self._prefix = ""

    def _now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"

    def __call__(self, ex: Exchange, latency: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        decision = ex.decision
        if decision is not None:
            route = decision.tier
        else:
            route = REJECTED if ex.parsed is not None and ex.reason != "invalid" else NO_TIER
        error = ex.error
        usage = ex.usage
        record = AccessRecord(
            time=self._now(),
            request_id=ex.request_id,
            tenant=ex.tenant[:TENANT_CHARS] or None,
            route=route,
            reason=ex.reason,
            tier=ex.tier,
            model=ex.answered_model or None,
            status=ex.status,
            error=(error.code or error.error_type) if error is not None else None,
            fallback=ex.fallback,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency_ms=round(latency * 1000.0, 3),
            cache=ex.cache,
            stream=ex.stream,
        )
        if self.prompts and ex.parsed is not None:
            record.request = ex.parsed.raw
        writer = _sole_writer(logger)
        if writer is not None:  # the default set-up: the encoded line straight to the writer
            writer.write(_encoder.encode(record) + b"\n")
            return
        # a host's own handlers: a LogRecord for them (makeRecord + handle: logger.info without its stack walk)
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, record, None, None))


def build_access_log(enabled: bool, prompts: bool = False) -> AccessLog | None:
    """The access log for the settings `access_log` / `access_log_prompts` (None when disabled: no work at all)."""
    if not enabled:
        return None
    logger = logging.getLogger(LOGGER_NAME)
    install_stderr_handler(logger)
    if logger.level == logging.NOTSET:  # INFO unless the host's logging config set a level
        logger.setLevel(logging.INFO)
    return AccessLog(logger, prompts=prompts)


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
