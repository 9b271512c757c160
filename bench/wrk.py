"""Closed-loop load with `wrk` (C, event-driven): a generated Lua script POSTs the chat body.

wrk keeps `connections` requests in flight for `duration` seconds and reports its own latency
histogram; the Lua `done()` hook prints one JSON line that is parsed here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

MARK = "WRKJSON "

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def available() -> bool:
    """True if the wrk binary is on PATH."""
    return shutil.which("wrk") is not None


def _long_string(text: str) -> str:
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def lua_script(body: bytes, headers: Mapping[str, str]) -> str:
    """A wrk script that POSTs `body` with `headers` and prints a JSON summary."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_long_string(body.decode())}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[ {_long_string(k)} ] = {_long_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n" + _DONE


def run_wrk(url: str, body: bytes, headers: Mapping[str, str], *, connections: int, duration: float,
            threads: int = 1, timeout_s: float = 10.0) -> dict[str, object]:
    """Run wrk against `url`; returns its JSON summary (latencies in microseconds)."""
    if not available():
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(body, headers))
        argv = ["wrk", f"-t{max(1, min(threads, connections))}", f"-c{connections}", f"-d{max(1, round(duration))}s",
                f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), url]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout_s + 30, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result: dict[str, object] = json.loads(line[len(MARK):])
            return result
    raise RuntimeError(f"wrk failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
