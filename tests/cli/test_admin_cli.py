"""``relaygate accounts|codes|admin-token``, ``keys create --account`` and ``credits add
ACCOUNT_ID USD``, run as users run them; every change is audited as ``cli``."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gateway import run_cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "relaygate.yaml"
    path.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'relaygate.db'}",
        "models": {"relaygate-simulator": {"pricing": {"input": "0.1", "output": "0.4"},
                                           "upstreams": [{"provider": "simulator"}]}},
    }))
    run_cli(path, "db", "upgrade")  # the CLI creates a store only when asked to
    return path


def cli_json(config: Path, *args: str) -> Any:
    result = run_cli(config, *args, "--json")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def audit(config: Path) -> list[tuple[str, str, str]]:
    with closing(sqlite3.connect(config.parent / "relaygate.db")) as db:
        return list(db.execute("SELECT actor, action, target_id FROM audit_log ORDER BY id"))


def test_accounts_keys_credits_codes_and_tokens(config: Path) -> None:
    account = cli_json(config, "accounts", "create", "--name", "Acme", "--credits", "10")
    assert (account["name"], account["balance_usd"]) == ("Acme", "10.000000")
    assert cli_json(config, "accounts", "show", account["id"]) == account
    assert [a["id"] for a in cli_json(config, "accounts", "list")] == [account["id"]]
    key = cli_json(config, "keys", "create", "--account", account["id"], "--name", "ci",
                   "--models", "relaygate-simulator")
    assert key["key"].startswith("sk-")
    assert key["models"] == ["relaygate-simulator"]
    grant = cli_json(config, "credits", "add", account["id"], "2.5", "--idempotency-key", "a")
    assert (grant["amount_usd"], grant["balance_usd"]) == ("2.500000", "12.500000")
    again = run_cli(config, "credits", "add", account["id"], "2.5", "--idempotency-key", "a")
    assert "nothing more added" in again.stdout
    assert cli_json(config, "accounts", "show", account["id"])["granted_usd"] == "12.500000"
    codes = cli_json(config, "codes", "create", "--count", "3", "--amount", "1")
    assert len({c["code"] for c in codes}) == 3
    token = cli_json(config, "admin-token", "create", "--name", "ci")
    assert token["token"].startswith("rga-")
    assert [t["id"] for t in cli_json(config, "admin-token", "list")] == [token["id"]]
    assert [action for actor, action, _ in audit(config)] == [
        "account.create", "key.create", "credits.add", "codes.create", "admin_token.create"]
    assert {actor for actor, _, _ in audit(config)} == {"cli"}


def test_credits_add_with_a_key_id_says_so(config: Path) -> None:
    key = cli_json(config, "keys", "create", "--credits", "1")
    result = run_cli(config, "credits", "add", key["id"], "2")
    assert "is a key id, not an account id" in result.stderr
    assert key["id"] in result.stdout


BAD_INPUT = [
    (("accounts", "create", "--name", "n" * 201), "longer than 200"),
    (("accounts", "show", "acct_missing"), "No account"),
    (("keys", "create", "--account", "acct_missing"), "No account"),
    (("keys", "create", "--account", "ACCOUNT", "--credits", "1"), "credits belong to the"),
    (("credits", "add", "acct_missing", "1"), "no account or key"),
    (("credits", "add", "ACCOUNT", "ten"), "ten"),
    (("codes", "create", "--amount", "0"), "must not be zero"),
    (("admin-token", "create", "--name", " "), "must not be empty"),
]


def test_bad_input_changes_nothing(config: Path) -> None:
    # one account for every case: each command is a process start, kept few
    account = cli_json(config, "accounts", "create", "--name", "Acme", "--credits", "1")
    entries = audit(config)
    for args, needle in BAD_INPUT:
        args = tuple(account["id"] if a == "ACCOUNT" else a for a in args)
        result = run_cli(config, *args, check=False)
        assert result.returncode != 0, args
        assert needle in result.stderr, (args, result.stderr)
    assert audit(config) == entries
    assert cli_json(config, "accounts", "show", account["id"]) == account


def test_keys_create_stops_at_max_keys_per_account(config: Path) -> None:
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "max_keys_per_account": 2}))
    account = cli_json(config, "accounts", "create", "--name", "Acme")["id"]
    first = cli_json(config, "keys", "create", "--account", account)
    cli_json(config, "keys", "create", "--account", account)
    entries = audit(config)
    refused = run_cli(config, "keys", "create", "--account", account, check=False)
    assert refused.returncode != 0
    assert "max_keys_per_account = 2" in refused.stderr, refused.stderr
    assert audit(config) == entries
    run_cli(config, "keys", "revoke", first["id"])
    assert cli_json(config, "keys", "create", "--account", account)["account_id"] == account
