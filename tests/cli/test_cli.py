"""The ``relaygate`` command, run as users run it: ``python -m relaygate ... --config FILE``."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gateway import GatewayProcess, run_cli

SIMULATOR = "relaygate-simulator"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config with its own SQLite file and two models; no server."""
    path = tmp_path / "relaygate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'relaygate.db'}",
                "models": {
                    "gpt-5.2": {"pricing": {"input": "1.75", "output": "14"}, "upstreams": []},
                    SIMULATOR: {
                        "pricing": {"input": "0.1", "output": "0.4"},
                        "upstreams": [{"provider": "simulator"}],
                    },
                },
            }
        )
    )
    run_cli(path, "db", "upgrade")  # the CLI creates a store only when asked to
    return path


def create_key(config: Path, *args: str) -> dict[str, Any]:
    result = run_cli(config, "keys", "create", "--json", *args)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    created: dict[str, Any] = json.loads(lines[0])
    return created


def list_keys(config: Path) -> list[dict[str, Any]]:
    result = run_cli(config, "keys", "list", "--json")
    keys: list[dict[str, Any]] = json.loads(result.stdout)
    return keys


def remaining(gateway: GatewayProcess, key: str) -> Decimal:
    return Decimal(str(gateway.credits(key)["remaining_credits"]))


def chat(gateway: GatewayProcess, key: str, model: str = SIMULATOR, **body: Any) -> Any:
    status, _, answer = gateway.post(
        "/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "count to five"}], **body},
        key=key,
    )
    return status, answer


# --- keys create -----------------------------------------------------------------------------


def test_keys_create_json_prints_one_object_with_id_and_key(config: Path) -> None:
    created = create_key(config)
    assert created["id"]
    assert created["key"].startswith("sk-")
    assert created["prefix"] == created["key"][: len(created["prefix"])]
    # no --credits means zero credits, not unlimited, every model
    assert Decimal(created["credits"]) == 0
    assert created["unlimited"] is False
    assert created["models"] is None
    assert created["revoked_at"] is None


def test_keys_create_without_json_shows_the_key_once(config: Path) -> None:
    result = run_cli(config, "keys", "create", "--name", "laptop")
    (listed,) = list_keys(config)
    assert listed["id"] in result.stdout
    assert listed["name"] == "laptop"
    shown = [line for line in result.stdout.splitlines() if line.startswith("sk-")]
    assert len(shown) == 1
    assert shown[0].startswith(listed["prefix"])


def test_keys_create_stores_every_option(config: Path) -> None:
    created = create_key(
        config,
        "--name",
        "ci",
        "--credits",
        "12.5",
        "--models",
        "gpt-5.2, relaygate-simulator",
        "--rpm",
        "60",
        "--tpm",
        "1000",
        "--concurrency",
        "3",
        "--expires-at",
        "2030-01-02T03:04:05+00:00",
    )
    (listed,) = list_keys(config)
    for view in (created, listed):
        assert view["name"] == "ci"
        assert Decimal(view["credits"]) == Decimal("12.5")
        assert view["models"] == ["gpt-5.2", SIMULATOR]
        assert (view["rpm"], view["tpm"], view["max_concurrency"]) == (60, 1000, 3)
        assert view["expires_at"] == "2030-01-02T03:04:05+00:00"


def test_keys_create_unlimited(config: Path) -> None:
    assert create_key(config, "--unlimited")["unlimited"] is True


def test_keys_create_with_unknown_model_fails_clearly(config: Path) -> None:
    result = run_cli(config, "keys", "create", "--json", "--models", "gpt-5.2,gpt-9", check=False)
    assert result.returncode != 0
    assert "gpt-9" in result.stderr
    assert "unknown model" in result.stderr
    assert result.stdout == ""
    assert list_keys(config) == []


@pytest.mark.parametrize(
    "value", [pytest.param("tomorrow", id="words"), pytest.param("2030-13-01", id="month-13")]
)
def test_keys_create_with_invalid_expiry_fails(config: Path, value: str) -> None:
    result = run_cli(config, "keys", "create", "--json", "--expires-at", value, check=False)
    assert result.returncode != 0
    assert value in result.stderr
    assert "ISO 8601" in result.stderr
    assert result.stdout == ""
    assert list_keys(config) == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("-1", id="negative"),
        pytest.param("lots", id="not-a-number"),
        pytest.param("0.0000001", id="finer-than-a-micro-dollar"),
    ],
)
def test_keys_create_with_invalid_credits_fails(config: Path, value: str) -> None:
    result = run_cli(config, "keys", "create", "--json", "--credits", value, check=False)
    assert result.returncode != 0
    assert "--credits" in result.stderr
    assert list_keys(config) == []


def test_keys_restricted_to_models_can_use_only_those(gateway: GatewayProcess) -> None:
    limited = gateway.create_key("--credits", "5", "--models", f"{SIMULATOR},text-only")
    status, answer = chat(gateway, limited["key"], model="gpt-5.2")
    assert status == 403, answer
    assert answer["error"]["type"] == "permission_error"
    status, answer = chat(gateway, limited["key"], max_tokens=3)
    assert status == 200, answer


# --- keys list and storage -------------------------------------------------------------------


def test_keys_list_shows_prefixes_never_keys(config: Path) -> None:
    first, second = create_key(config, "--name", "a"), create_key(config, "--name", "b")
    result = run_cli(config, "keys", "list", "--json")
    for created in (first, second):
        assert created["key"] not in result.stdout
        assert created["prefix"] in result.stdout
    listed = json.loads(result.stdout)
    assert [k["id"] for k in listed] == [first["id"], second["id"]]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    # the table form hides the key too
    table = run_cli(config, "keys", "list").stdout
    assert first["id"] in table
    assert first["prefix"] in table
    assert first["key"] not in table


def test_the_raw_key_is_not_stored_in_the_database(config: Path, tmp_path: Path) -> None:
    created = create_key(config)
    files = sorted(tmp_path.glob("relaygate.db*"))  # the database, its WAL and shared memory
    assert files, "no SQLite files found"
    stored = b"".join(path.read_bytes() for path in files)
    key_hash = hashlib.sha256(created["key"].encode()).hexdigest()
    assert key_hash.encode() in stored, "the key's hash should be stored (looked at the wrong db?)"
    assert created["key"].encode() not in stored
    assert created["key"][3:].encode() not in stored


# --- keys revoke -----------------------------------------------------------------------------


def test_keys_revoke(config: Path) -> None:
    kept, revoked = create_key(config), create_key(config)
    result = run_cli(config, "keys", "revoke", revoked["id"])
    assert revoked["id"] in result.stdout
    views = {k["id"]: k for k in list_keys(config)}
    assert views[revoked["id"]]["revoked_at"] is not None
    assert views[kept["id"]]["revoked_at"] is None


def test_keys_revoke_unknown_id_fails(config: Path) -> None:
    result = run_cli(config, "keys", "revoke", "key_doesnotexist", check=False)
    assert result.returncode != 0
    assert "key_doesnotexist" in result.stderr
    assert "Revoked" not in result.stdout


def test_revoked_key_stops_working_on_a_running_gateway(gateway: GatewayProcess) -> None:
    created = gateway.create_key("--credits", "1")
    gateway.cli("keys", "revoke", created["id"])
    gateway.wait_until(
        lambda: gateway.get("/v1/credits", created["key"])[0] == 401,
        timeout=5,
        message="the revocation reaching the gateway",
    )
    status, answer = chat(gateway, created["key"])
    assert status == 401, answer


# --- credits add -----------------------------------------------------------------------------


def test_credits_add_applies_to_a_running_gateway(gateway: GatewayProcess) -> None:
    created = gateway.create_key("--credits", "1")
    assert remaining(gateway, created["key"]) == Decimal("1")
    result = gateway.cli("credits", "add", created["id"], "2.5")
    assert created["id"] in result.stdout
    gateway.wait_until(
        lambda: remaining(gateway, created["key"]) == Decimal("3.5"),
        timeout=5,
        message="the new credits reaching the gateway",
    )
    (listed,) = [
        k
        for k in json.loads(gateway.cli("keys", "list", "--json").stdout)
        if k["id"] == created["id"]
    ]
    assert Decimal(listed["credits"]) == Decimal("3.5")


def test_credits_add_lets_a_zero_balance_key_spend(gateway: GatewayProcess) -> None:
    broke = gateway.create_key()
    status, answer = chat(gateway, broke["key"], max_tokens=3)
    assert status == 402, answer
    gateway.cli("credits", "add", broke["id"], "1")
    gateway.wait_until(
        lambda: chat(gateway, broke["key"], max_tokens=3)[0] == 200,
        timeout=5,
        message="the key being able to spend its new credits",
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(("key_doesnotexist", "1"), "key_doesnotexist", id="unknown-key"),
        pytest.param(("KEY", "-2"), "zero or more", id="negative"),
        pytest.param(("KEY", "two"), "two", id="not-a-number"),
    ],
)
def test_credits_add_rejects_bad_input(config: Path, args: tuple[str, str], needle: str) -> None:
    created = create_key(config, "--credits", "1")
    key_id = created["id"] if args[0] == "KEY" else args[0]
    result = run_cli(config, "credits", "add", key_id, args[1], check=False)
    assert result.returncode != 0
    assert needle in result.stderr
    (listed,) = list_keys(config)
    assert Decimal(listed["credits"]) == 1


# --- usage -----------------------------------------------------------------------------------


def ledger_rows(gateway: GatewayProcess) -> list[dict[str, Any]]:
    path = gateway.directory / "relaygate.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM ledger")]


def test_usage_reports_requests_tokens_and_cost_from_the_ledger(gateway: GatewayProcess) -> None:
    spender = gateway.create_key("--credits", "5")
    other = gateway.create_key("--credits", "5")
    answers = []
    for body in ({"max_tokens": 4}, {"max_tokens": 7, "stream": False}):
        status, answer = chat(gateway, spender["key"], **body)
        assert status == 200, answer
        answers.append(answer)
    status, answer = chat(gateway, other["key"], max_tokens=2)
    assert status == 200, answer
    gateway.wait_until(
        lambda: len(ledger_rows(gateway)) == 3, timeout=10, message="three ledger rows"
    )
    rows = [r for r in ledger_rows(gateway) if r["key_id"] == spender["id"]]

    result = json.loads(gateway.cli("usage", "--json").stdout)
    assert result["requests"] == 3
    by_key = {u["key_id"]: u for u in result["usage"]}
    assert set(by_key) == {spender["id"], other["id"]}
    mine = by_key[spender["id"]]
    assert mine["model"] == SIMULATOR
    assert mine["requests"] == 2
    assert mine["statuses"] == {"ok": 2}
    prompt = sum(a["usage"]["prompt_tokens"] for a in answers)
    completion = sum(a["usage"]["completion_tokens"] for a in answers)
    assert mine["prompt_tokens"] == prompt == sum(r["prompt_tokens"] for r in rows)
    assert mine["completion_tokens"] == completion == sum(r["completion_tokens"] for r in rows)
    assert mine["cached_tokens"] == sum(r["cached_tokens"] for r in rows)
    assert mine["reasoning_tokens"] == sum(r["reasoning_tokens"] for r in rows)
    assert mine["image_tokens"] == sum(r["image_tokens"] for r in rows)
    ledger_cost = Decimal(sum(r["cost_micros"] for r in rows)).scaleb(-6)
    assert Decimal(mine["cost_usd"]) == ledger_cost
    # the simulator's prices: 0.1 USD per 1M input tokens, 0.4 per 1M output, rounded up per
    # request to the micro-dollar
    expected = sum(
        (
            Decimal(a["usage"]["prompt_tokens"]) * Decimal("0.1")
            + Decimal(a["usage"]["completion_tokens"]) * Decimal("0.4")
        ).to_integral_value(ROUND_CEILING)
        for a in answers
    )
    assert ledger_cost == Decimal(expected).scaleb(-6)
    total = Decimal(mine["cost_usd"]) + Decimal(by_key[other["id"]]["cost_usd"])
    assert Decimal(result["cost_usd"]) == total

    only = json.loads(gateway.cli("usage", "--json", "--key", spender["id"]).stdout)
    assert [u["key_id"] for u in only["usage"]] == [spender["id"]]
    assert only["requests"] == 2
    assert Decimal(only["cost_usd"]) == ledger_cost

    table = gateway.cli("usage", "--key", spender["id"]).stdout
    assert spender["id"] in table
    assert other["id"] not in table
    assert "total: 2 requests" in table


def test_usage_of_an_empty_ledger(config: Path) -> None:
    result = json.loads(run_cli(config, "usage", "--json").stdout)
    assert result["usage"] == []
    assert result["requests"] == 0
    assert Decimal(result["cost_usd"]) == 0


# --- help ------------------------------------------------------------------------------------


def relaygate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaygate", *args], capture_output=True, text=True, timeout=60
    )


def test_top_level_help_lists_every_command() -> None:
    result = relaygate("--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "keys", "credits", "usage", "db"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("serve",), id="serve"),
        pytest.param(("keys",), id="keys"),
        pytest.param(("keys", "create"), id="keys-create"),
        pytest.param(("keys", "list"), id="keys-list"),
        pytest.param(("keys", "revoke"), id="keys-revoke"),
        pytest.param(("credits",), id="credits"),
        pytest.param(("credits", "add"), id="credits-add"),
        pytest.param(("usage",), id="usage"),
        pytest.param(("db",), id="db"),
        pytest.param(("db", "upgrade"), id="db-upgrade"),
    ],
)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = relaygate(*command, "--help")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("Usage: "), first
    assert f"relaygate {' '.join(command)} " in first, first


def test_serve_help_lists_its_options() -> None:
    result = relaygate("serve", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--host", "--port", "--workers"):
        assert option in result.stdout
