"""slm-gateway: an OpenAI-compatible gateway that routes each request to a local SLM or an upstream LLM.

Public API: `create_app(settings)`, `Settings`, `load_settings`, `SettingsError` (imported lazily, so that
`gateway.devtools` and the CLI's light commands start fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.settings import Settings, SettingsError, load_settings


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    if name in ("Settings", "SettingsError", "load_settings"):
        from gateway import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
