"""slm-gateway: an OpenAI-compatible gateway that routes each request to a local SLM or an upstream LLM."""

from gateway.app import create_app
from gateway.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]
__version__ = "0.1.0"
