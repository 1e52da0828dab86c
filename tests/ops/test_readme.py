"""The README's first hour and production notes stay true (issue 15, item 10)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from relaygate.settings import default_catalog

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_set_up_uses_a_virtual_environment_and_says_which_python() -> None:
    set_up = section("## Set-up: two commands")
    assert "python3 -m venv .venv" in set_up
    assert "Python 3.11 or newer" in set_up
    assert set_up.index("venv") < set_up.index("pip install . && relaygate serve")


def test_openai_is_installed_before_the_sdk_example() -> None:
    assert README.index("pip install openai") < README.index("from openai import OpenAI")


def test_no_reference_to_a_folder_the_repository_does_not_have() -> None:
    assert "`contract/`" not in README
    assert not (Path(__file__).resolve().parents[2] / "contract").exists()


def test_the_built_in_catalog_is_documented_as_it_is() -> None:
    catalog = section("### The built-in catalog")
    assert "OPENAI_BASE_URL" in catalog
    assert "https://api.openai.com/v1" in catalog
    models = default_catalog({"OPENAI_API_KEY": "sk-x"})
    for name, model in models.items():
        row = next(line for line in catalog.splitlines() if line.startswith(f"| `{name}` |"))
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        prices = [Decimal(p) for p in re.findall(r"[\d.]+", cells[1])]
        pricing = model["pricing"]
        expected = [pricing["input"], pricing["cached_input"], pricing["output"]]
        assert prices == [Decimal(p) for p in expected], row
        assert cells[2] == str(model["max_output_tokens"])
        assert cells[3] == ("yes" if model["vision"] else "no")


def test_running_in_production_covers_tls_host_systemd_health_and_metrics() -> None:
    production = section("## Running in production")
    for needed in (
        "TLS",
        "--host 0.0.0.0",
        "[Service]",
        "ExecStart=",
        "TimeoutStopSec=",
        "GET /health",
        "GET /metrics",
        "operator_token",
        "Authorization: Bearer",
    ):
        assert needed in production, needed
