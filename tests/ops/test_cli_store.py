"""The CLI names its store, reads relative paths from its config file's folder, and creates a
new database only when asked to (issue 15, item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from relaygate.cli import main
from relaygate.settings import load_settings
from tests.support.gateway import GatewayProcess

SIMULATOR = {
    "relaygate-simulator": {
        "pricing": {"input": "0.1", "output": "0.4"},
        "upstreams": [{"provider": "simulator"}],
    }
}
BOLD = "\x1b[1m"


def relaygate(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "relaygate", *args],
        capture_output=True, text=True, check=check, timeout=60, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose store exists, with a relative SQLite path (its folder's)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "relaygate.yaml"
    path.write_text(yaml.safe_dump({"database_url": "sqlite:///gateway.db", "models": SIMULATOR}))
    relaygate("db", "upgrade", "--config", str(path), cwd=tmp_path)
    return path


COMMANDS = [
    ("keys", "list", "--json"),
    ("keys", "create", "--json"),
    ("accounts", "list", "--json"),
    ("codes", "list", "--json"),
    ("admin-token", "list", "--json"),
    ("users", "list", "--json"),
    ("usage", "--json"),
    ("db", "upgrade"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_names_its_store_on_stderr(
    config: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = relaygate(*command, "--config", str(config), cwd=tmp_path)
    store = config.parent / "gateway.db"
    assert f"relaygate: store sqlite {store}\n" in result.stderr
    if "--json" in command:
        json.loads(result.stdout)  # standard output is the command's alone


def test_a_relative_sqlite_path_in_a_config_file_is_the_files_folders(
    config: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    created = json.loads(
        relaygate("keys", "create", "--json", "--config", str(config), cwd=elsewhere).stdout
    )
    listed = relaygate("keys", "list", "--json", "--config", str(config), cwd=config.parent)
    assert [k["id"] for k in json.loads(listed.stdout)] == [created["id"]]
    assert list(elsewhere.iterdir()) == []  # no stray database where the command ran


def test_relative_paths_of_a_config_file_and_of_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "relaygate.yaml"
    path.write_text(
        yaml.safe_dump(
            {"database_url": "sqlite:///data/rg.db", "journal_path": "journal",
             "ledger_spill_path": "/var/spill.jsonl"}
        )
    )  # fmt: skip
    settings = load_settings(str(path), env={})
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'rg.db'}"
    assert settings.journal_path == str(tmp_path / "journal")
    assert settings.ledger_spill_path == "/var/spill.jsonl"  # absolute: as written
    # what the environment or the defaults give stays the current folder's
    env = {"RELAYGATE_DATABASE_URL": "sqlite:///here.db"}
    assert load_settings(str(path), env=env).database_url == "sqlite:///here.db"
    path.write_text(yaml.safe_dump({"log_level": "info"}))
    defaults = load_settings(str(path), env={})
    assert (defaults.database_url, defaults.journal_path) == (
        "sqlite:///relaygate.db",
        "relaygate-journal",
    )


def test_a_command_refuses_to_create_a_new_database_and_says_so_in_bold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("RELAYGATE_")]:
        monkeypatch.delenv(name)
    result = CliRunner().invoke(main, ["keys", "create", "--credits", "5"], color=True)
    assert result.exit_code == 2
    store = tmp_path / "relaygate.db"
    assert f"relaygate: store sqlite {store}\n" in result.stderr
    refusal = result.stderr.splitlines()[-1]
    assert refusal.startswith(f"relaygate: {BOLD}there is no relaygate database at sqlite {store}")
    assert "relaygate db upgrade" in refusal
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing was created

    created = CliRunner().invoke(main, ["db", "upgrade"], color=True)
    assert created.exit_code == 0, created.output
    assert f"{BOLD}relaygate: creating a new database: sqlite {store}" in created.stderr
    assert store.exists()
    again = CliRunner().invoke(main, ["db", "upgrade"], color=True)
    assert "creating" not in again.stderr
    assert CliRunner().invoke(main, ["keys", "create", "--credits", "5"]).exit_code == 0


def test_serve_says_when_it_creates_a_new_database(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"models": SIMULATOR}).start()
    gateway.stop()
    assert f"relaygate: creating a new database: sqlite {tmp_path / 'relaygate.db'}" in (
        gateway.logs()
    )
    gateway.start()
    gateway.stop()
    assert gateway.logs().count("creating a new database") == 1
