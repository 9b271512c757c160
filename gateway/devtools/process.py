"""Start servers as subprocesses on free loopback ports, wait until they answer, stop them.

    with run_fake_upstream(latency_ms=5) as base_url:      # "http://127.0.0.1:PORT/v1"
        ...

    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--port", str(port), ...]
    with spawn_server(argv, f"http://127.0.0.1:{port}/health") as server:
        ...                                                  # server.proc, server.output()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the process that spawned it dies (a killed test run leaves no servers)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServerStartError(RuntimeError):
    """The server exited or did not answer its health URL in time (the message ends with its output)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server started by `spawn_server`."""

    proc: subprocess.Popen[bytes]
    health_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        """The server's process id (also its process group id)."""
        return self.proc.pid

    def output(self, tail: int = 4000) -> str:
        """The last `tail` characters the server wrote to stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


def _default_ready(status: int) -> bool:
    return 200 <= status < 300


def wait_ready(server: ServerProcess, *, timeout: float, ready: Callable[[int], bool] = _default_ready) -> None:
    """Poll the health URL until `ready(status)`; raise ServerStartError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            code = server.proc.poll()
            if code is not None:
                raise ServerStartError(f"server exited with code {code} before it was ready:\n{server.output()}")
            try:
                status = client.get(server.health_url).status_code
                if ready(status):
                    return
                last = f"status {status}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{server.health_url} not ready after {timeout:.0f}s ({last}):\n{server.output()}"
                )
            time.sleep(0.05)


def stop_server(server: ServerProcess, *, grace: float = 5.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it outlives `grace` seconds."""
    proc = server.proc
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=grace)
    try:  # workers it forked may outlive it; they share its process group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def spawn_server(
    argv: Sequence[str],
    health_url: str,
    *,
    timeout: float = 30.0,
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    ready: Callable[[int], bool] = _default_ready,
) -> Iterator[ServerProcess]:
    """Run `argv` in its own process group, wait until `health_url` answers, stop it on exit.

    `env` is added to this process's environment (a None value removes that variable). Output goes to a temporary log file whose
    tail is included in `ServerStartError` when the server fails to start.
    """
    full_env = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    log_fd, log_name = tempfile.mkstemp(prefix="spawned-server-", suffix=".log")
    server: ServerProcess | None = None
    try:
        with os.fdopen(log_fd, "wb") as log:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent,
            )
        server = ServerProcess(proc, health_url, Path(log_name))
        wait_ready(server, timeout=timeout, ready=ready)
        yield server
    finally:
        if server is not None:
            stop_server(server)
        Path(log_name).unlink(missing_ok=True)


def fake_upstream_argv(port: int, **opts: object) -> list[str]:
    """The command line that runs the fake upstream on 127.0.0.1; `opts` are its flags (latency_ms=5 -> --latency-ms 5)."""
    argv = [sys.executable, "-m", "gateway.devtools.fake_upstream", "--host", LOOPBACK, "--port", str(port)]
    for name, value in opts.items():
        if value is None or value is False:
            continue
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


@contextmanager
def run_fake_upstream(*, timeout: float = 15.0, attempts: int = 3, **opts: object) -> Iterator[str]:
    """Run the fake upstream on a free port; yields its base URL ("http://127.0.0.1:PORT/v1").

    `opts` map to its flags: latency_ms, chunk_delay_ms, chunks, error_rate, error_status, api_key,
    models ("a,b"), record_max, echo_chars, seed. Retries on another port if the picked one was taken.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    for attempt in range(attempts):
        port = free_port()
        stack = ExitStack()
        try:
            argv = fake_upstream_argv(port, **opts)
            stack.enter_context(spawn_server(argv, f"http://{LOOPBACK}:{port}/health", timeout=timeout, env=env))
        except ServerStartError:
            if attempt + 1 == attempts:
                raise
            continue
        with stack:
            yield f"http://{LOOPBACK}:{port}/v1"
        return
