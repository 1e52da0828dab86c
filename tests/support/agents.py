"""Coding agents and SDKs installed from npm (``.ci/run`` installs them into ``.tools/``):
where their commands are, and a skip (or, with ``RELAYGATE_REQUIRE_SERVICES=1``, a failure)
when one is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

TOOLS = Path(os.environ.get("RELAYGATE_AGENT_TOOLS") or Path(__file__).parents[2] / ".tools")
"""The npm prefix the agents are installed under (``npm install --prefix .tools ...``)."""
INSTALL = "npm install --prefix .tools @openai/codex@0.171.0 ai@6.0.326 @ai-sdk/openai@3.0.141"


def missing(what: str) -> None:
    reason = f"{what} is not installed (run: {INSTALL})"
    if REQUIRE_SERVICES:
        pytest.fail(f"RELAYGATE_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def command(name: str) -> Path:
    """The path of an npm package's command under :data:`TOOLS`."""
    path = TOOLS / "node_modules" / ".bin" / name
    if not path.exists():
        missing(name)
    return path


def node_package(name: str) -> Path:
    """An npm package's folder under :data:`TOOLS`, and ``node`` on the PATH."""
    path = TOOLS / "node_modules" / name
    if not path.is_dir():
        missing(f"npm package {name}")
    if shutil.which("node") is None:
        missing("node")
    return path
