"""Building settings: from a config file (YAML or JSON), a parsed mapping, and the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from relaygate.errors import ConfigError
from relaygate.settings.catalog import default_catalog
from relaygate.settings.checks import validate
from relaygate.settings.environment import ENV_OVERRIDES, expand
from relaygate.settings.models import ModelSettings
from relaygate.settings.paths import paths_under
from relaygate.settings.root import Settings

_T = TypeVar("_T")


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the config file (``path``, else ``RELAYGATE_CONFIG``, else the built-in catalog)."""
    env = dict(os.environ) if env is None else env
    path = path or env.get("RELAYGATE_CONFIG") or None
    if path is None:
        return settings_from_mapping({"models": default_catalog(env)}, "(built-in defaults)", env)
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    return settings_from_mapping(data, source, env, base=Path(path).resolve().parent)


def settings_from_mapping(
    data: Mapping[str, Any], source: str, env: Mapping[str, str], base: Path | None = None
) -> Settings:
    """Build and check settings from an already-parsed mapping (the file's contents).

    With ``base`` (the config file's folder), relative paths written in the file (a SQLite
    ``database_url``, ``journal_path``, ``ledger_spill_path``) are taken from there; the same
    settings from ``RELAYGATE_*`` variables, or left to their defaults, stay relative to the
    current folder."""
    expanded = expand(dict(data), env, "", source)
    if base is not None:
        paths_under(expanded, base)
    for var, key in ENV_OVERRIDES.items():
        if var in env:
            expanded[key] = env[var]
    models = expanded.pop("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{source}: models: must be a mapping of model name to settings")
    settings = _convert(expanded, Settings, "", source)
    settings = msgspec.structs.replace(
        settings,
        models={
            str(name): _convert(model, ModelSettings, f"models.{name}", source)
            for name, model in models.items()
        },
    )
    validate(settings, source)
    return settings


def _convert(data: Any, type_: type[_T], prefix: str, source: str) -> _T:
    """``msgspec.convert`` with errors as one line naming the file and the key's full path."""
    try:
        return msgspec.convert(data, type_, dec_hook=_decimal_hook)
    except msgspec.ValidationError as exc:
        path = _msgspec_path(exc)
        where = ".".join(p for p in (prefix, path) if p).replace(".[", "[") or "(top level)"
        problem = str(exc).split(" - at ")[0]
        raise ConfigError(f"{source}: {where}: {problem}") from None


def _msgspec_path(error: msgspec.ValidationError) -> str:
    match = re.search(r"at `\$(.*)`", str(error))
    return match.group(1).lstrip(".") if match else ""


def _decimal_hook(type_: type, obj: Any) -> Any:
    if type_ is Decimal and isinstance(obj, (int, float, str)):
        try:
            return Decimal(str(obj))
        except InvalidOperation as exc:
            raise ValueError(f"not a number: {obj!r}") from exc
    raise NotImplementedError
