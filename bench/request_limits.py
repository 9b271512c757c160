"""What abusive clients cost a gateway: one huge request head, and many connections that trickle a head.

    python bench/request_limits.py                       # this checkout
    python bench/request_limits.py --repo /path/to/other/checkout --head-mb 200 --slow 60

Starts `python -m gateway serve` (cwd = --repo) on a free loopback port, then:

1. sends one request head of --head-mb MiB (a single `x-big` header, in 1 MiB writes for at most 60 s, never
   finished) and prints how much was accepted before the server closed the connection, its reply's status line,
   and the server's RSS growth (VmRSS from /proc, while the connection is open) over its idle RSS;
2. opens --slow connections that each send half a request line and nothing else, and prints how many the
   server had closed after --hold seconds (bounded: every socket is closed by then).

Figures only; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.devtools.process import LOOPBACK, free_port, spawn_server  # noqa: E402


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def huge_head(port: int, megabytes: int, pid: int) -> tuple[int, str, int]:
    """Bytes sent before the server stopped taking them, the first line of its reply (if any), and the server's
    RSS (KiB) measured while the connection is still open."""
    sent = 0
    chunk = b"a" * (1 << 20)
    with socket.create_connection((LOOPBACK, port), timeout=30) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
            deadline = time.monotonic() + 60  # bounded: stop sending after a minute
            for _ in range(megabytes):
                if time.monotonic() > deadline:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        time.sleep(1.0)  # let the server take in what it was sent
        rss = rss_kib(pid, "VmRSS")
        try:
            sock.settimeout(5)
            reply = sock.recv(4096)
        except OSError:
            reply = b""
    return sent, reply.split(b"\r\n", 1)[0].decode("latin-1") or "(no reply)", rss


def slow_connections(port: int, count: int, hold: float) -> int:
    """How many of `count` trickling connections the server closed within `hold` seconds."""
    socks = [socket.create_connection((LOOPBACK, port), timeout=hold) for _ in range(count)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTT")
    deadline = time.monotonic() + hold
    closed = 0
    for sock in socks:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            while sock.recv(4096):
                pass
            closed += 1
        except (TimeoutError, socket.timeout):
            pass
        except OSError:
            closed += 1
        sock.close()
    return closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=str(ROOT), help="checkout whose gateway to run")
    parser.add_argument("--head-mb", type=int, default=200)
    parser.add_argument("--slow", type=int, default=60)
    parser.add_argument("--hold", type=float, default=30.0)
    args = parser.parse_args()
    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--host", LOOPBACK, "--port", str(port)]
    with tempfile.TemporaryDirectory():
        with spawn_server(argv, f"http://{LOOPBACK}:{port}/healthz", timeout=180, cwd=args.repo,
                          env={"PYTHONPATH": args.repo}) as server:
            idle = rss_kib(server.pid, "VmRSS")
            sent, reply, rss = huge_head(port, args.head_mb, server.pid)
            print(f"repo {args.repo}")
            print(f"huge head: sent {sent / 2**20:.1f} of {args.head_mb} MiB, reply {reply!r}, "
                  f"server RSS growth while it was open {(rss - idle) / 1024:.0f} MiB (idle {idle / 1024:.0f} MiB)")
            started = time.monotonic()
            closed = slow_connections(port, args.slow, args.hold)
            print(f"slow clients: {closed} of {args.slow} closed by the server within {args.hold:.0f} s "
                  f"(measured over {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
