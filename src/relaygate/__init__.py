"""relaygate: a self-hosted, OpenAI-compatible LLM API gateway."""

from relaygate.app import App, Gateway, create_app
from relaygate.settings import Settings, load_settings

__all__ = ["App", "Gateway", "Settings", "create_app", "load_settings"]
