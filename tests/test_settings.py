"""The settings object: file formats, ``${VAR}`` expansion, validation, defaults, the README."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from relaygate.errors import ConfigError
from relaygate.settings import (
    ModelSettings,
    OtelSettings,
    Pricing,
    Settings,
    UpstreamSettings,
    load_settings,
    settings_from_mapping,
)
from tests.support.gateway import free_port

REPO = Path(__file__).resolve().parent.parent


def model(**fields: Any) -> dict[str, Any]:
    return {"pricing": {"input": "1.75", "output": "14"}, **fields}


def upstream(**fields: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": "https://api.example.com/v1", **fields}


def config_error(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    """The message of the ConfigError ``data`` raises (checked to be a single line)."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(data, "relaygate.yaml", env or {})
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith("relaygate.yaml: "), message
    return message


# --- file formats ----------------------------------------------------------------------------

CONFIG: dict[str, Any] = {
    "database_url": "sqlite:///data/relaygate.db",
    "log_level": "warning",
    "key_refresh_seconds": 0.25,
    "models": {
        "gpt-5.2": model(
            max_output_tokens=1000,
            vision=True,
            upstreams=[upstream(api_key="sk-up", model="gpt-5.2-upstream", name="primary")],
        ),
        "relaygate-simulator": {
            "pricing": {"input": "0.1", "output": "0.4", "cached_input": "0.01"},
            "upstreams": [{"provider": "simulator", "options": {"first_token_ms": 0}}],
        },
    },
}


def check_config(settings: Settings) -> None:
    # relative in a config file: the file's folder's (tests/ops/test_cli_store.py)
    assert settings.database_url.endswith("/data/relaygate.db")
    assert settings.log_level == "warning"
    assert settings.key_refresh_seconds == 0.25
    assert list(settings.models) == ["gpt-5.2", "relaygate-simulator"]
    gpt = settings.models["gpt-5.2"]
    assert gpt.pricing == Pricing(input=Decimal("1.75"), output=Decimal("14"))
    assert (gpt.max_output_tokens, gpt.vision) == (1000, True)
    assert gpt.upstreams == [
        UpstreamSettings(
            provider="openai",
            base_url="https://api.example.com/v1",
            api_key="sk-up",
            model="gpt-5.2-upstream",
            name="primary",
        )
    ]
    simulator = settings.models["relaygate-simulator"]
    assert simulator.pricing.cached_input == Decimal("0.01")
    assert simulator.upstreams[0].options == {"first_token_ms": 0}
    # untouched settings keep their defaults
    assert settings.redis_url is None
    assert settings.ledger_batch_size == Settings().ledger_batch_size


@pytest.mark.parametrize(
    ("filename", "dump"),
    [
        pytest.param("relaygate.yaml", yaml.safe_dump, id="yaml"),
        pytest.param("relaygate.json", json.dumps, id="json"),
    ],
)
def test_load_settings_reads_yaml_and_json(tmp_path: Path, filename: str, dump: Any) -> None:
    path = tmp_path / filename
    path.write_text(dump(CONFIG))
    check_config(load_settings(str(path), env={}))


def test_config_file_from_relaygate_config_variable(tmp_path: Path) -> None:
    path = tmp_path / "from-env.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    check_config(load_settings(None, env={"RELAYGATE_CONFIG": str(path)}))


def test_missing_config_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_settings(str(path), env={})


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models: [unclosed\n  - x: {\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), env={})
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


# --- ${VAR} ----------------------------------------------------------------------------------


def test_variables_are_read_from_the_env_passed_in(tmp_path: Path) -> None:
    path = tmp_path / "relaygate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "database_url": "postgresql://${DB_USER}@${DB_HOST}/relaygate",
                "models": {"gpt-5.2": model(upstreams=[upstream(api_key="${UPSTREAM_KEY}")])},
            }
        )
    )
    env = {"DB_USER": "alice", "DB_HOST": "db.internal", "UPSTREAM_KEY": "sk-from-env"}
    settings = load_settings(str(path), env=env)
    assert settings.database_url == "postgresql://alice@db.internal/relaygate"
    assert settings.models["gpt-5.2"].upstreams[0].api_key == "sk-from-env"


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        pytest.param("${KEY:-sk-default}", {}, "sk-default", id="default-used"),
        pytest.param("${KEY:-sk-default}", {"KEY": "sk-set"}, "sk-set", id="variable-wins"),
        pytest.param("${KEY:-}", {}, "", id="empty-default"),
        pytest.param("a-${KEY:-b}-c", {}, "a-b-c", id="inside-a-string"),
    ],
)
def test_variable_defaults(value: str, env: dict[str, str], expected: str) -> None:
    data = {"models": {"gpt-5.2": model(upstreams=[upstream(api_key=value)])}}
    settings = settings_from_mapping(data, "relaygate.yaml", env)
    assert settings.models["gpt-5.2"].upstreams[0].api_key == expected


def test_missing_variable_names_file_key_path_and_variable(tmp_path: Path) -> None:
    path = tmp_path / "relaygate.yaml"
    path.write_text(
        yaml.safe_dump(
            {"models": {"gpt-5.2": model(upstreams=[upstream(api_key="${OPENAI_API_KEY}")])}}
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), env={"OTHER": "x"})
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert "models.gpt-5.2.upstreams[0].api_key" in message
    assert "OPENAI_API_KEY" in message


# --- validation ------------------------------------------------------------------------------


def test_unknown_top_level_key_is_named() -> None:
    message = config_error({"models": {}, "databse_url": "sqlite:///x.db"})
    assert "databse_url" in message


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param(
            {"models": {"gpt-5.2": model(max_tokens=5)}}, "models.gpt-5.2", id="in-a-model"
        ),
        pytest.param(
            {"models": {"gpt-5.2": model(upstreams=[upstream(apikey="sk-x")])}},
            "models.gpt-5.2.upstreams[0]",
            id="in-an-upstream",
        ),
        pytest.param(
            {"models": {"gpt-5.2": {"pricing": {"input": 1, "output": 1, "cache": 1}}}},
            "models.gpt-5.2.pricing",
            id="in-pricing",
        ),
    ],
)
def test_unknown_nested_key_is_named_with_its_path(data: dict[str, Any], where: str) -> None:
    message = config_error(data)
    unknown = next(k for k in ("max_tokens", "apikey", "cache") if k in json.dumps(data))
    assert unknown in message
    # which model it is matters as much as which key: a catalog has many models
    assert where in message


@pytest.mark.parametrize(
    ("data", "key", "value"),
    [
        pytest.param(
            {"models": {"gpt-5.2": model(upstreams=[upstream(base_url="ftp://x")])}},
            "models.gpt-5.2.upstreams[0].base_url",
            "ftp://x",
            id="base_url-ftp",
        ),
        pytest.param(
            {"models": {"gpt-5.2": model(upstreams=[upstream(base_url="nonsense")])}},
            "models.gpt-5.2.upstreams[0].base_url",
            "nonsense",
            id="base_url-no-scheme",
        ),
        pytest.param(
            {"database_url": "mysql://"}, "database_url", "mysql://", id="database_url-mysql"
        ),
        pytest.param(
            {"redis_url": "http://cache:6379"},
            "redis_url",
            "http://cache:6379",
            id="redis_url-http",
        ),
    ],
)
def test_bad_urls_are_named(data: dict[str, Any], key: str, value: str) -> None:
    message = config_error(data)
    assert key in message
    assert value in message


@pytest.mark.parametrize(
    ("pricing", "field"),
    [
        pytest.param({"input": "-1", "output": "1"}, "input", id="negative-input"),
        pytest.param({"input": "1", "output": -0.5}, "output", id="negative-output"),
        pytest.param(
            {"input": "1", "output": "1", "cached_input": "-0.1"},
            "cached_input",
            id="negative-cached",
        ),
        pytest.param({"input": "0.1234567", "output": "1"}, "input", id="seven-decimals"),
        pytest.param({"input": 0.0000001, "output": "1"}, "input", id="seven-decimals-float"),
        pytest.param({"input": "1", "output": "NaN"}, "output", id="not-a-number"),
        pytest.param({"input": "1", "output": "cheap"}, "output", id="not-numeric"),
    ],
)
def test_bad_prices_are_rejected(pricing: dict[str, Any], field: str) -> None:
    message = config_error({"models": {"gpt-5.2": {"pricing": pricing}}})
    assert f"pricing.{field}" in message


def test_six_decimals_and_zero_are_fine_prices() -> None:
    data = {"models": {"m": {"pricing": {"input": "0.000001", "output": 0}}}}
    pricing = settings_from_mapping(data, "relaygate.yaml", {}).models["m"].pricing
    assert pricing.input == Decimal("0.000001")
    assert pricing.output == 0


@pytest.mark.parametrize(
    ("tiers", "problem"),
    [
        pytest.param({"flex": 0}, "greater than 0", id="zero"),
        pytest.param({"flex": "-0.5"}, "non-negative", id="negative"),
        pytest.param({"flex": "0.1234567"}, "6 decimal places", id="seven-decimals"),
        pytest.param({"flex": "cheap"}, "Invalid decimal", id="not-numeric"),
    ],
)
def test_bad_service_tier_multipliers_are_named(tiers: dict[str, Any], problem: str) -> None:
    pricing = {"input": "1", "output": "1", "service_tiers": tiers}
    message = config_error({"models": {"m": {"pricing": pricing}}})
    assert "models.m.pricing.service_tiers" in message
    assert problem in message


def test_service_tiers_and_allow_fields_are_read() -> None:
    pricing = {"input": "1", "output": "1", "service_tiers": {"flex": 0.5, "priority": "2.0"}}
    data = {"models": {"m": {"pricing": pricing, "allow_fields": ["store", "audio"]}}}
    model = settings_from_mapping(data, "relaygate.yaml", {}).models["m"]
    assert model.pricing.service_tiers == {"flex": Decimal("0.5"), "priority": Decimal("2.0")}
    assert model.allow_fields == ["store", "audio"]
    assert ModelSettings(pricing=Pricing(input=Decimal(1), output=Decimal(1))).allow_fields == []


def test_an_unknown_allowed_field_is_named() -> None:
    message = config_error({"models": {"m": model(allow_fields=["store", "temperature"])}})
    assert "models.m.allow_fields[1]" in message
    assert "'temperature' is not a price-changing field" in message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"log_level": "loud"}, "log_level", id="log-level"),
        pytest.param({"key_refresh_seconds": 0}, "key_refresh_seconds", id="zero-seconds"),
        pytest.param({"max_request_bytes": "big"}, "max_request_bytes", id="wrong-type"),
        pytest.param(
            {"models": {"m": model(max_output_tokens=0)}}, "max_output_tokens", id="zero-tokens"
        ),
        pytest.param(
            {"models": {"m": model(upstreams=[{"base_url": "https://x"}])}},
            "provider",
            id="missing-provider",
        ),
    ],
)
def test_other_bad_values_name_their_key(data: dict[str, Any], key: str) -> None:
    assert key in config_error(data)


# --- environment overrides and defaults ------------------------------------------------------


def test_relaygate_database_url_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "relaygate.yaml"
    path.write_text(yaml.safe_dump({"database_url": "sqlite:///file.db", "models": {}}))
    env = {"RELAYGATE_DATABASE_URL": "postgresql://db.internal/relaygate"}
    assert load_settings(str(path), env=env).database_url == "postgresql://db.internal/relaygate"
    assert load_settings(str(path), env={}).database_url == f"sqlite:///{tmp_path / 'file.db'}"


def test_environment_overrides_are_validated_too() -> None:
    message = config_error({}, env={"RELAYGATE_DATABASE_URL": "mysql://db/x"})
    assert "database_url" in message


def test_defaults_without_openai_key_route_only_the_simulator() -> None:
    settings = load_settings(None, env={})
    assert settings.database_url == "sqlite:///relaygate.db"
    assert settings.models["gpt-5.2"].upstreams == []
    simulator = settings.models["relaygate-simulator"].upstreams
    assert len(simulator) == 1
    assert simulator[0].provider == "simulator"


def test_defaults_with_openai_key_route_gpt_5_2_to_openai() -> None:
    settings = load_settings(None, env={"OPENAI_API_KEY": "sk-real-key"})
    (openai,) = settings.models["gpt-5.2"].upstreams
    assert openai.provider == "openai"
    assert openai.api_key == "sk-real-key"
    assert openai.base_url == "https://api.openai.com/v1"
    assert openai.model == "gpt-5.2"
    assert len(settings.models["relaygate-simulator"].upstreams) == 1


# --- relaygate serve with a bad file ---------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "key", "problem"),
    [
        pytest.param(
            {"models": {"gpt-5.2": model(upstreams=[upstream(provider="nosuch")])}},
            "models.gpt-5.2.upstreams[0].provider",
            "nosuch",
            id="unknown-provider",
        ),
        pytest.param({"modles": {}}, "modles", "unknown", id="unknown-key"),
        pytest.param(
            {"models": {"gpt-5.2": model(upstreams=[upstream(api_key="${NOPE_KEY}")])}},
            "models.gpt-5.2.upstreams[0].api_key",
            "NOPE_KEY",
            id="missing-variable",
        ),
    ],
)
def test_serve_with_a_bad_config_prints_one_line_and_exits(
    tmp_path: Path, broken: dict[str, Any], key: str, problem: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'relaygate.db'}", **broken})
    )
    env_without_var = {k: v for k, v in os.environ.items() if k != "NOPE_KEY"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "relaygate",
            "serve",
            "--config",
            str(path),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_without_var,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert key in lines[0]
    assert problem in lines[0]


# --- the README's reference ------------------------------------------------------------------

FIELDS = [
    pytest.param(struct, name, id=f"{struct.__name__}.{name}")
    for struct in (Settings, ModelSettings, UpstreamSettings, Pricing, OtelSettings)
    for name in (field.name for field in msgspec.structs.fields(struct))
]


@pytest.mark.parametrize(("struct", "name"), FIELDS)
def test_every_setting_is_in_the_readme(struct: type, name: str) -> None:
    readme = REPO / "README.md"
    assert readme.exists(), "README.md is missing from the repository root"
    assert re.search(rf"\b{re.escape(name)}\b", readme.read_text(encoding="utf-8")), (
        f"{struct.__name__}.{name} is not in README.md's config reference"
    )
