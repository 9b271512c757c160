"""The access log: one JSON line per finished chat request, written through the stdlib logger "slm_gateway.access".

`gateway.accounting.Accounting.record` feeds it each finished `Exchange` (the one record point). A line holds
the time, request id, tenant (a short hash of the key's tenant id, never the key), the decided route, reason,
answering tier, model, status, error code, fallback, tokens, latency and cache outcome; the request body (the
prompt) only with `access_log_prompts: true`. Lines go to stderr by default (`install_stderr_handler`); any
other `logging` handler on the logger gets the same records (format them with `JsonFormatter`).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, TextIO

import msgspec

from gateway.exchange import NO_TIER, Exchange

LOGGER_NAME = "slm_gateway.access"
_encoder = msgspec.json.Encoder()
REJECTED = "rejected"  # the route of a request the router refused
TENANT_CHARS = 14  # "t-" and 12 hex digits of the tenant id (itself a hash of the key)


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


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def install_stderr_handler(logger: logging.Logger) -> None:
    """Send the access log to stderr as JSON lines, unless the logger already has a handler (idempotent)."""
    if logger.handlers:
        return
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False  # the application log's format is not the access log's


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
        # makeRecord + handle is logger.info without its caller lookup (a stack walk: half the cost of a line)
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
