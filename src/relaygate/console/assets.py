"""The console's static files: read once from the package, each served under a URL that
carries its content hash (``/console/static/<file>?v=<hash>``) with a year-long, immutable
cache; a changed file gets a new URL, so no browser keeps an old one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

STATIC_PREFIX = "/console/static/"
_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}
LONG_CACHE = b"public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: bytes
    version: str


def _walk(folder: Traversable, prefix: str) -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            found.update(_walk(entry, name + "/"))
            continue
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        kind = _TYPES.get(suffix)
        if kind is None and entry.name != "LICENSE":
            continue
        body = entry.read_bytes()
        found[name] = Asset(
            body, kind or b"text/plain; charset=utf-8", hashlib.sha256(body).hexdigest()[:12]
        )
    return found


@cache
def assets() -> dict[str, Asset]:
    """Every static file by its path under ``static/``."""
    return _walk(resources.files("relaygate.console").joinpath("static"), "")


def url(name: str) -> str:
    """The URL of a static file, with its content hash."""
    return f"{STATIC_PREFIX}{name}?v={assets()[name].version}"


def find(path: str) -> Asset | None:
    """The asset a request path names (``None``: not one of ours)."""
    if not path.startswith(STATIC_PREFIX):
        return None
    return assets().get(path[len(STATIC_PREFIX) :])


@cache
def vendored() -> list[dict[str, object]]:
    """The manifest of vendored libraries (name, version, source, license, files' sha256)."""
    raw = assets()["vendor/manifest.json"].body
    manifest: list[dict[str, object]] = json.loads(raw)
    return manifest
