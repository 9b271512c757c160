"""Label rows and where they go.

A row has the training format of `shared/data/routing/dev.jsonl` (`prompt`, `weak_correct`, `strong_correct`) plus
provenance: `source` ("judge" | "feedback"), `ts`, `request_id`, a hashed `tenant`, `served_tier`, `local_model`,
`upstream_model`, `judge_model` and `router_score`. A feedback row is one-sided: the tier that did not serve is null.
The weak side is the small-model tier of the request (the local tier or a named SLM tier): `local_model` names it.

With Redis configured, rows are appended to one stream that every replica shares (`slm-gateway labels export`
writes it out as JSONL); otherwise, and while Redis is down, to the `labels_path` JSONL file. When neither can
take a row it waits in a bounded buffer and is retried with the next row; overflow is counted and dropped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("slm_gateway.learning")

ROW_FIELD = b"row"
PENDING_MAX = 1000
EXPORT_BATCH = 1000


def hash_tenant(tenant: str, salt: str = "") -> str:
    """A stable, non-reversible tenant id for label rows."""
    return "h-" + hashlib.sha256(f"{salt}\x00{tenant}".encode()).hexdigest()[:16]


def label_row(
    *,
    prompt: str,
    weak_correct: bool | None,
    strong_correct: bool | None,
    source: str,
    request_id: str,
    tenant_hash: str,
    served_tier: str,
    local_model: str | None,
    upstream_model: str | None,
    judge_model: str | None,
    router_score: float | None,
    ts: float | None = None,
) -> dict[str, Any]:
    """One label row (keys in a fixed order)."""
    return {
        "prompt": prompt,
        "weak_correct": weak_correct,
        "strong_correct": strong_correct,
        "source": source,
        "ts": round(time.time() if ts is None else ts, 3),
        "request_id": request_id,
        "tenant": tenant_hash,
        "served_tier": served_tier,
        "local_model": local_model,
        "upstream_model": upstream_model,
        "judge_model": judge_model,
        "router_score": router_score,
    }


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSONL file in one write (creates the file and its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(msgspec.json.encode(r) + b"\n" for r in rows)
    with path.open("ab") as fh:
        fh.write(data)


class LabelSink:
    """Appends label rows to the Redis stream (when configured) or the JSONL file."""

    def __init__(
        self,
        *,
        path: str | None,
        redis: Redis | None,
        stream: str,
        stream_max_len: int,
        on_error: Callable[[str], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(path) if path else None
        self.redis = redis
        self.stream = stream
        self.stream_max_len = stream_max_len
        self._on_error = on_error or (lambda _sink: None)
        self._on_drop = on_drop or (lambda _n: None)
        self._pending: deque[dict[str, Any]] = deque()

    @property
    def configured(self) -> bool:
        return self.path is not None or self.redis is not None

    async def append(self, row: dict[str, Any]) -> bool:
        """Write `row` (and any rows waiting from earlier failures); False if it had to wait."""
        self._pending.append(row)
        rows = list(self._pending)
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for r in rows:
                        pipe.xadd(self.stream, {ROW_FIELD: msgspec.json.encode(r)},
                                  maxlen=self.stream_max_len, approximate=True)
                    await pipe.execute()
                self._pending.clear()
                return True
            except (RedisError, OSError) as exc:
                log.warning("label stream write failed (%s): %s", type(exc).__name__, exc)
                self._on_error("redis")
        if self.path is not None:
            try:
                append_jsonl(self.path, rows)
                self._pending.clear()
                return True
            except OSError as exc:
                log.warning("label file write failed: %s", exc)
                self._on_error("file")
        overflow = len(self._pending) - PENDING_MAX
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self._on_drop(overflow)
        return False


async def export_stream(redis: Redis, stream: str, out: Any, *, start: str = "-") -> int:
    """Write every row of the label stream (from id `start`) to the text file `out` as JSONL; the row count."""
    count = 0
    cursor = start
    exclusive = False
    while True:
        lower = f"({cursor}" if exclusive else cursor
        entries = await redis.xrange(stream, min=lower, max="+", count=EXPORT_BATCH)
        if not entries:
            return count
        for entry_id, fields in entries:
            row = fields.get(ROW_FIELD)
            if row is not None:
                out.write(row.decode() + "\n")
                count += 1
            cursor = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        exclusive = True
