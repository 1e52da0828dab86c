"""Relative paths written in a config file are taken from the file's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_PATH_SETTINGS = ("journal_path", "ledger_spill_path")
"""Settings naming a file or directory: relative in a config file, they are the file's."""


def sqlite_url_under(url: str, base: Path) -> str:
    """``url`` with a relative SQLite path made relative to ``base``; any other URL as it is."""
    from sqlalchemy.engine import make_url  # imported here: the CLI's --help need not load it
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url  # checks.validate names the bad URL
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(base / database)).render_as_string(hide_password=False)


def paths_under(settings: dict[str, Any], base: Path) -> None:
    """Resolve the relative paths of a config file against its folder (in place)."""
    url = settings.get("database_url")
    if isinstance(url, str):
        settings["database_url"] = sqlite_url_under(url, base)
    for name in _PATH_SETTINGS:
        value = settings.get(name)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            settings[name] = str(base / value)
