"""``${VAR}`` in the config file and the ``RELAYGATE_*`` variables that override settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from relaygate.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")
ENV_OVERRIDES = {
    "RELAYGATE_DATABASE_URL": "database_url",
    "RELAYGATE_REDIS_URL": "redis_url",
    "RELAYGATE_LOG_LEVEL": "log_level",
    "RELAYGATE_LOG_FORMAT": "log_format",
    "RELAYGATE_OPERATOR_TOKEN": "operator_token",
    "RELAYGATE_PUBLIC_URL": "public_url",
}
"""Variables that set a top-level setting, whatever the file says."""


def expand(value: Any, env: Mapping[str, str], path: str, source: str) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the tree."""
    if isinstance(value, dict):
        return {
            k: expand(v, env, f"{path}.{k}" if path else str(k), source) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand(v, env, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, has_default, default = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        if has_default is not None:
            return default or ""
        raise ConfigError(f"{source}: {path}: environment variable {name} is not set")

    return _ENV_PATTERN.sub(sub, value)
