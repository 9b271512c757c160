"""LiteLLM's proxy as a comparison target: its own venv, a config pointing at an upstream, a subprocess.

The venv (bench/.litellm-venv, gitignored) is created on first use with `pip install 'litellm[proxy]'`.
The proxy runs without a database or master key, with callbacks off, logs at ERROR and the
bundled model cost map (no network fetch at start).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gateway.devtools.process import ServerProcess, free_port, spawn_server

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_VENV = BENCH_DIR / ".litellm-venv"
SPEC = "litellm[proxy]"
MASTER_KEY = "sk-bench-7f3c9a41d2e86b05c4a1f9e2d7b3c680"  # LiteLLM refuses to start without one

AUTH_HEADERS = {"authorization": f"Bearer {MASTER_KEY}"}

ENV: dict[str, str | None] = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "DISABLE_ADMIN_UI": "True",
    "DATABASE_URL": None,
    "LITELLM_MASTER_KEY": MASTER_KEY,
    "STORE_MODEL_IN_DB": "False",
}


def executable(venv: Path = DEFAULT_VENV) -> Path:
    """Path of the `litellm` command inside `venv`."""
    return venv / "bin" / "litellm"


def ensure_venv(venv: Path = DEFAULT_VENV, *, spec: str = SPEC, quiet: bool = True) -> Path:
    """Create `venv` and install LiteLLM's proxy into it unless it is already there; returns the command."""
    exe = executable(venv)
    if exe.exists():
        return exe
    print(f"creating {venv} and installing {spec!r} (several minutes, once)...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run(pip + (["-q"] if quiet else []) + [spec], check=True, timeout=1800)
    if not exe.exists():
        raise RuntimeError(f"{spec} installed but {exe} is missing")
    return exe


def version(venv: Path = DEFAULT_VENV) -> str:
    """The installed LiteLLM version, or '?'."""
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def config_yaml(upstream_base: str, models: Sequence[str], api_key: str = "sk-fake") -> str:
    """A proxy config routing each model name to `openai/<model>` at `upstream_base`."""
    entries = "".join(
        f"  - model_name: {m}\n    litellm_params:\n      model: openai/{m}\n"
        f"      api_base: {upstream_base}\n      api_key: {api_key}\n"
        for m in models
    )
    return (
        "model_list:\n" + entries
        + "litellm_settings:\n  telemetry: false\n  drop_params: true\n  set_verbose: false\n"
        "  turn_off_message_logging: true\n  callbacks: []\n  success_callback: []\n  failure_callback: []\n"
        "general_settings:\n  disable_spend_logs: true\n  disable_error_logs: true\n"
    )


@contextmanager
def run_litellm(upstream_base: str, *, models: Sequence[str] = ("gpt-4o-mini",), workers: int = 1,
                venv: Path = DEFAULT_VENV, timeout: float = 180.0) -> Iterator[tuple[str, ServerProcess]]:
    """Run LiteLLM's proxy in front of `upstream_base`; yields (its base URL ending in /v1, the process).

    Clients must send `AUTH_HEADERS` (its master key); with no database that check is in memory.
    """
    exe = ensure_venv(venv)
    with tempfile.TemporaryDirectory(prefix="litellm-bench-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(config_yaml(upstream_base, models))
        port = free_port()
        argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                "--num_workers", str(workers)]
        env = {**ENV, "HOME": os.environ.get("HOME", tmp)}
        with spawn_server(argv, f"http://127.0.0.1:{port}/health/liveliness", timeout=timeout, env=env,
                          cwd=tmp) as server:
            yield f"http://127.0.0.1:{port}/v1", server
