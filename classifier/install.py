"""Installing a router file where the gateway loads it, keeping the previous one for rollback, and reloading.

A model is a pair: ``<dir>/<name>.skops`` and ``<dir>/metrics.json`` (its training metadata, which
holds the score quantiles the gateway calibrates its threshold from).  Installing copies the
candidate's pair over the target's after moving the target's pair to ``<dir>/previous/``; rolling
back swaps the two pairs (so a second rollback re-installs).  Each file is written to a temporary
name in its folder and renamed into place, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from classifier.model import metrics_path_for

__all__ = ["ROLLBACK_DIR", "InstallError", "rollback_path", "install", "rollback", "reload_gateway", "signal_reload"]

ROLLBACK_DIR = "previous"


class InstallError(RuntimeError):
    """A model file cannot be installed or rolled back (the message names the file)."""


def rollback_path(target: str | Path) -> Path:
    """Where the rollback copy of the model at ``target`` lives."""
    target = Path(target)
    return target.parent / ROLLBACK_DIR / target.name


def _put(src: Path | None, dst: Path) -> None:
    """Make ``dst`` a byte copy of ``src`` (or remove it when ``src`` is None), atomically."""
    if src is None:
        dst.unlink(missing_ok=True)
        return
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _pair(model: Path) -> tuple[Path, Path | None]:
    metrics = metrics_path_for(model)
    return model, (metrics if metrics.is_file() else None)


def _put_json(data: Mapping[str, Any], dst: Path) -> None:
    """Write ``data`` as ``dst`` (indented JSON), atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def install(candidate: str | Path, target: str | Path, metadata: Mapping[str, Any] | None = None) -> Path | None:
    """Install ``candidate`` (and its metrics.json) at ``target``; returns the rollback copy (None if new).

    ``metadata`` (e.g. the promotion's ``version`` and ``apgr``) is merged into the installed metrics.json
    (the candidate's own file is left as it is)."""
    candidate, target = Path(candidate), Path(target)
    if not candidate.is_file():
        raise InstallError(f"candidate model not found: {candidate}")
    if candidate.resolve().parent == target.resolve().parent:
        # both would share the folder's metrics.json: the target's metadata would be the candidate's
        raise InstallError(f"candidate {candidate} is in the target's folder; train it into another folder")
    cand_model, cand_metrics = _pair(candidate)
    saved: Path | None = None
    if target.is_file():
        saved = rollback_path(target)
        saved.parent.mkdir(parents=True, exist_ok=True)
        old_model, old_metrics = _pair(target)
        _put(old_model, saved)
        _put(old_metrics, metrics_path_for(saved))
    target.parent.mkdir(parents=True, exist_ok=True)
    _put(cand_model, target)
    if metadata:
        try:
            merged = json.loads(cand_metrics.read_text(encoding="utf-8")) if cand_metrics is not None else {}
        except ValueError:
            raise InstallError(f"candidate metrics {cand_metrics} is not valid JSON") from None
        _put_json({**merged, **metadata}, metrics_path_for(target))
    else:
        _put(cand_metrics, metrics_path_for(target))
    return saved


def rollback(target: str | Path) -> Path:
    """Swap the model at ``target`` with its rollback copy; returns the rollback copy's path."""
    target = Path(target)
    saved = rollback_path(target)
    if not saved.is_file():
        raise InstallError(f"no rollback copy for {target} (expected {saved})")
    if not target.is_file():
        raise InstallError(f"installed model not found: {target}")
    swap = saved.parent / f".swap-{os.getpid()}"
    swap.mkdir(exist_ok=True)
    try:
        cur_model, cur_metrics = _pair(target)
        old_model, old_metrics = _pair(saved)
        held_model = swap / target.name
        held_metrics = metrics_path_for(held_model) if cur_metrics is not None else None
        _put(cur_model, held_model)
        if held_metrics is not None:
            _put(cur_metrics, held_metrics)
        _put(old_model, target)
        _put(old_metrics, metrics_path_for(target))
        _put(held_model, saved)
        _put(held_metrics, metrics_path_for(saved))
    finally:
        shutil.rmtree(swap, ignore_errors=True)
    return saved


def reload_gateway(url: str, admin_key: str | None = None, timeout: float = 30.0) -> tuple[bool, str]:
    """``POST {url}/admin/reload`` on a running gateway: (every component reloaded, one-line outcome)."""
    import httpx

    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    endpoint = url.rstrip("/") + "/admin/reload"
    try:
        resp = httpx.post(endpoint, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"POST {endpoint} failed: {type(exc).__name__}: {exc}"
    try:
        body = resp.json()
    except ValueError:
        body = {}
    status = body.get("status") if isinstance(body, dict) else None
    ok = resp.status_code == 200 and status == "reloaded"
    scope = body.get("scope", "") if isinstance(body, dict) else ""
    return ok, f"POST {endpoint}: HTTP {resp.status_code} {status or resp.text[:200]!s}" + (f" ({scope})" if scope else "")


def signal_reload(pid: int) -> tuple[bool, str]:
    """Send SIGHUP to the gateway process ``pid`` (the supervisor passes it to every worker)."""
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        return False, f"SIGHUP to pid {pid} failed: {exc}"
    return True, f"sent SIGHUP to pid {pid}"
