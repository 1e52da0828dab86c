"""The one settings object, built once from the config file and ``RELAYGATE_*`` variables.

Nothing else in relaygate reads ``os.environ``: the CLI calls :func:`load_settings` and passes the
result to ``create_app()`` and to the commands.

The package, by concept: :mod:`~relaygate.settings.root` (the top level of the file,
:class:`Settings`), :mod:`~relaygate.settings.models` (a public model and its pricing),
:mod:`~relaygate.settings.upstreams`, :mod:`~relaygate.settings.images`,
:mod:`~relaygate.settings.otel` (traces), :mod:`~relaygate.settings.catalog` (the built-in
catalog), and how a file becomes settings: :mod:`~relaygate.settings.loading`,
:mod:`~relaygate.settings.environment`, :mod:`~relaygate.settings.paths` and
:mod:`~relaygate.settings.checks`. Every public name is imported from here.
"""

from __future__ import annotations

from relaygate.settings.catalog import SIMULATOR_MODEL, default_catalog, unserved_models
from relaygate.settings.checks import TRUSTABLE_PROXY_HEADERS
from relaygate.settings.images import ImageSettings
from relaygate.settings.loading import load_settings, settings_from_mapping
from relaygate.settings.models import (
    MESSAGES_TOKEN_FIELDS,
    PRICE_CHANGING_FIELDS,
    ModelSettings,
    Pricing,
)
from relaygate.settings.otel import OtelSettings
from relaygate.settings.paths import sqlite_url_under
from relaygate.settings.root import DEFAULT_DATABASE_URL, DEFAULT_MESSAGES_BETAS, Settings
from relaygate.settings.types import PositiveFloat, PositiveInt
from relaygate.settings.upstreams import UpstreamSettings

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_MESSAGES_BETAS",
    "MESSAGES_TOKEN_FIELDS",
    "PRICE_CHANGING_FIELDS",
    "SIMULATOR_MODEL",
    "TRUSTABLE_PROXY_HEADERS",
    "ImageSettings",
    "ModelSettings",
    "OtelSettings",
    "PositiveFloat",
    "PositiveInt",
    "Pricing",
    "Settings",
    "UpstreamSettings",
    "default_catalog",
    "load_settings",
    "settings_from_mapping",
    "sqlite_url_under",
    "unserved_models",
]
