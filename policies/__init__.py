"""Routing policies shipped with slm-gateway (YAML; the format is described in policies/README.md)."""

from __future__ import annotations

from pathlib import Path

POLICY_DIR: Path = Path(__file__).resolve().parent
DEFAULT_POLICY: Path = POLICY_DIR / "default.yaml"


def shipped_policies() -> list[Path]:
    """Every policy file shipped in this package."""
    return sorted(POLICY_DIR.glob("*.yaml"))
