"""`learning.auto_retrain`: retrain and promote the router from the collected labels, on a schedule.

Every `interval_seconds` a background task (never a request path) of each worker tries one run; a file lock in
`work_dir` (and, with Redis, a key set NX for the interval) lets one process of the host (one replica) run it:

1. snapshot the labels: the Redis stream (`labels export`) and the `labels_path` file (rows written while Redis
   was down, or all rows without Redis) into `work_dir/labels.jsonl`;
2. fewer than `min_new_labels` rows more than at the last run that trained: skipped;
3. `slm-gateway classifier train --data <data>... --data labels.jsonl --out work_dir/candidate/router.skops`
   (a subprocess at lower CPU priority; it holds out the most recent 20 % of the labels);
4. `slm-gateway classifier promote --labels labels.jsonl --candidate ... [--target classifier_model] --pid P`:
   installs the candidate only when it is not worse on those held-out labels, keeps the replaced model for
   `classifier rollback`, and reloads every worker (SIGHUP to `P`: the supervisor of a multi-worker gateway,
   else this process).

Each run is counted in `slm_gateway_learning_retrains_total{result}` (installed | refused | undecided |
skipped | failed) and logged with the output's last lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.learning.labels import export_stream
from gateway.learning.metrics import LearningMetrics
from gateway.settings import AutoRetrainSettings
from gateway.tasks import cancel_and_wait

log = logging.getLogger("slm_gateway.learning")

PROMOTE_RESULTS = {0: "installed", 3: "refused", 4: "undecided"}
"""`classifier promote` exit codes (classifier/cli.py) -> run result; any other code is "failed"."""
NICE = 10


def default_work_dir() -> Path:
    return Path(tempfile.gettempdir()) / "slm-gateway-retrain"


@contextlib.contextmanager
def host_lock(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on `path` (True when this process got it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class AutoRetrain:
    """The schedule and one run (`run_once`)."""

    def __init__(
        self,
        settings: AutoRetrainSettings,
        *,
        labels_path: str | None,
        redis: Redis | None,
        stream: str,
        target: str | None,
        reload_pid: int,
        metrics: LearningMetrics,
        python: str = sys.executable,
    ) -> None:
        self.settings = settings
        self.labels_path = Path(labels_path) if labels_path else None
        self.redis = redis
        self.stream = stream
        self.target = target
        self.reload_pid = reload_pid
        self.metrics = metrics
        self.python = python
        self.work_dir = Path(settings.work_dir) if settings.work_dir else default_work_dir()
        self._task: asyncio.Task[None] | None = None

    @property
    def on(self) -> bool:
        return self.settings.interval_seconds > 0

    async def start(self) -> None:
        if self.on:
            self._task = asyncio.create_task(self._loop(), name="learning-auto-retrain")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_seconds)
            try:
                result = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must cost one run, not the schedule
                log.exception("auto-retrain run failed")
                result = "failed"
            if result is not None:
                self.metrics.retrains.labels(result).inc()

    # -- one run -------------------------------------------------------------------------------------------
    async def run_once(self) -> str | None:
        """One run; its result, or None when another process runs it (not counted here)."""
        with host_lock(self.work_dir / "lock") as mine:
            if not mine or not await self._claim():
                return None
            return await self._run()

    async def _claim(self) -> bool:
        """With Redis: one run per interval across replicas (SET NX with the interval as expiry)."""
        if self.redis is None:
            return True
        try:
            ttl = max(1, int(self.settings.interval_seconds))
            return bool(await self.redis.set(f"{self.stream}:retrain", str(os.getpid()), nx=True, ex=ttl))
        except (RedisError, OSError):
            return True  # Redis down: the host lock still bounds the work

    def _state(self) -> dict[str, int]:
        try:
            return dict(json.loads((self.work_dir / "state.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return {}

    async def snapshot(self, out: Path) -> int:
        """Write every label row there is (Redis stream, then the file) to `out`; the row count."""
        rows = 0
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            if self.redis is not None:
                try:
                    rows += await export_stream(self.redis, self.stream, fh)
                except (RedisError, OSError) as exc:
                    log.warning("auto-retrain: cannot read the label stream (%s); using the file only", exc)
            if self.labels_path is not None and self.labels_path.is_file():
                with self.labels_path.open(encoding="utf-8") as src:
                    for line in src:
                        if line.strip():
                            fh.write(line if line.endswith("\n") else line + "\n")
                            rows += 1
        os.replace(tmp, out)
        return rows

    async def _run(self) -> str:
        labels = self.work_dir / "labels.jsonl"
        rows = await self.snapshot(labels)
        state = self._state()
        if rows - int(state.get("rows", 0)) < self.settings.min_new_labels:
            return "skipped"
        candidate = self.work_dir / "candidate" / "router.skops"
        candidate.parent.mkdir(parents=True, exist_ok=True)
        train = ["classifier", "train", *(a for d in self.settings.data for a in ("--data", d)),
                 "--data", str(labels), "--out", str(candidate)]
        code, output = await self._cli(train)
        if code != 0:
            log.warning("auto-retrain: train failed (exit %s): %s", code, output)
            return "failed"
        (self.work_dir / "state.json").write_text(json.dumps({"rows": rows, "at": int(time.time())}),
                                                  encoding="utf-8")
        promote = ["classifier", "promote", "--labels", str(labels), "--candidate", str(candidate),
                   *(["--target", self.target] if self.target else []), "--pid", str(self.reload_pid)]
        code, output = await self._cli(promote)
        result = PROMOTE_RESULTS.get(code, "failed")
        log.info("auto-retrain on %d label rows: %s (promote exit %s): %s", rows, result, code, output)
        return result

    async def _cli(self, args: list[str]) -> tuple[int, str]:
        """`python -m gateway ARGS` at lower priority; (exit code, last lines of its output)."""
        nice = shutil.which("nice")  # not preexec_fn: this process runs threads (llama.cpp, the executor)
        argv = [*([nice, "-n", str(NICE)] if nice else []), self.python, "-m", "gateway", *args]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=self.settings.timeout_seconds)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, f"killed after {self.settings.timeout_seconds:.0f}s"
        except asyncio.CancelledError:  # the gateway stops: the step goes with it
            proc.kill()
            await proc.wait()
            raise
        tail = " | ".join(out.decode(errors="replace").strip().splitlines()[-6:])
        return proc.returncode if proc.returncode is not None else -1, tail
