"""CLI polish (issue 15, item 8): ``--config`` before the command, ``keys list``'s header and
remaining credits, ``usage --key`` of an unknown key, revoking twice, help that is not cut."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from relaygate.cli import main

SIMULATOR = {
    "relaygate-simulator": {
        "pricing": {"input": "0.1", "output": "0.4"},
        "upstreams": [{"provider": "simulator"}],
    }
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "relaygate.yaml"
    database = tmp_path / "relaygate.db"
    path.write_text(yaml.safe_dump({"database_url": f"sqlite:///{database}", "models": SIMULATOR}))
    relaygate("db", "upgrade", "--config", str(path))
    return path


def relaygate(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaygate", *args],
        capture_output=True, text=True, check=check, timeout=60,
    )  # fmt: skip


def test_config_is_accepted_before_the_command(config: Path) -> None:
    created = json.loads(relaygate("--config", str(config), "keys", "create", "--json").stdout)
    listed = json.loads(relaygate("--config", str(config), "keys", "list", "--json").stdout)
    assert [k["id"] for k in listed] == [created["id"]]


def test_keys_list_has_a_header_and_what_each_key_can_still_spend(config: Path) -> None:
    account = json.loads(
        relaygate(
            "accounts", "create", "--name", "team", "--credits", "10", "--json",
            "--config", str(config),
        ).stdout
    )  # fmt: skip
    shared = json.loads(
        relaygate(
            "keys", "create", "--account", account["id"], "--name", "shared", "--json",
            "--config", str(config),
        ).stdout
    )  # fmt: skip
    own = json.loads(
        relaygate("keys", "create", "--credits", "2.5", "--name", "own", "--json",
                  "--config", str(config)).stdout
    )  # fmt: skip
    free = json.loads(
        relaygate("keys", "create", "--unlimited", "--name", "free", "--json",
                  "--config", str(config)).stdout
    )  # fmt: skip
    lines = relaygate("keys", "list", "--config", str(config)).stdout.splitlines()
    assert lines[0].split() == ["id", "prefix", "state", "remaining", "USD", "used", "USD", "name"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    # the shared key was granted nothing itself: it can spend its account's 10 USD
    assert rows[shared["id"]][3] == "10.000000"
    assert rows[own["id"]][3] == "2.500000"
    assert rows[free["id"]][3] == "unlimited"
    listed = json.loads(relaygate("keys", "list", "--json", "--config", str(config)).stdout)
    by_id = {k["id"]: k for k in listed}
    assert by_id[shared["id"]]["credits"] == "0.000000"  # granted through the key
    assert by_id[shared["id"]]["remaining"] == "10.000000"
    assert by_id[free["id"]]["remaining"] is None


def test_usage_of_an_unknown_key_is_an_error(config: Path) -> None:
    result = relaygate("usage", "--key", "nope", "--config", str(config), check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no key with id nope" in result.stderr


def test_revoking_a_key_twice_says_it_was_already_revoked(config: Path) -> None:
    key_id = json.loads(relaygate("keys", "create", "--json", "--config", str(config)).stdout)["id"]
    first = relaygate("keys", "revoke", key_id, "--config", str(config))
    assert first.stdout.strip() == f"Revoked {key_id}"
    second = relaygate("keys", "revoke", key_id, "--config", str(config))
    assert second.stdout.startswith(f"{key_id} was already revoked (at ")
    assert "nothing changed" in second.stdout
    listed = json.loads(relaygate("keys", "list", "--json", "--config", str(config)).stdout)
    assert listed[0]["revoked_at"] is not None


def groups(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            if isinstance(sub, click.Group):
                found.extend(groups(sub, (*path, name)))
    return found


@pytest.mark.parametrize("path", groups(main), ids=lambda p: " ".join(p) or "relaygate")
def test_no_command_summary_is_cut_off(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    listing = result.output.split("Commands:")[1]
    assert "..." not in listing, listing
