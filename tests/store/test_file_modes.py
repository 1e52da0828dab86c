"""Every file relaygate writes is its operator's alone (0600), whatever the umask: the SQLite
database and its ``-wal`` and ``-shm`` files, and anything ``relaygate`` commands write."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from relaygate.store.records import KeyRecord
from relaygate.store.sql import SqlStore
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess, run_cli


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in sorted(directory.glob("relaygate.db*"))}


async def test_a_fresh_sqlite_store_is_0600_under_any_umask(tmp_path: Path) -> None:
    with umask(0):  # files anyone could read and write, unless relaygate says otherwise
        store = SqlStore(f"sqlite:///{tmp_path / 'relaygate.db'}")
        try:
            await store.upgrade()
            await store.create_key(KeyRecord(id="k1", name="n", key_hash="h", prefix="sk-p",
                                             created_at=0))
            files = database_files(tmp_path)
        finally:
            await store.close()
    assert set(files) == {"relaygate.db", "relaygate.db-wal", "relaygate.db-shm"}
    assert files == dict.fromkeys(files, 0o600)


def test_a_served_database_is_0600_and_the_process_umask_077(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    with umask(0o002):  # a common umask, which would leave the files group-writable
        gateway = GatewayProcess(tmp_path, {}).start()
    try:
        assert gateway.process is not None
        files = database_files(tmp_path)
        assert files == dict.fromkeys(files, 0o600)
        assert "relaygate.db-wal" in files
        status = Path(f"/proc/{gateway.process.pid}/status").read_text()
        assert "Umask:\t0077" in status.splitlines()  # what the ledger spill and journal get
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    "commands",
    [
        pytest.param([("db", "upgrade")], id="db-upgrade"),
        # only serve and db upgrade create a database; a write after it keeps the files 0600
        pytest.param([("db", "upgrade"), ("keys", "create", "--json")], id="then-keys-create"),
    ],
)
def test_cli_commands_create_the_database_0600(
    tmp_path: Path, commands: list[tuple[str, ...]]
) -> None:
    config = tmp_path / "relaygate.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path / 'relaygate.db'}\n")
    with umask(0):
        for command in commands:
            run_cli(config, *command)
    files = database_files(tmp_path)
    assert "relaygate.db" in files
    assert files == dict.fromkeys(files, 0o600)


async def test_an_existing_readable_database_is_left_alone_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "relaygate.db"
    path.touch()
    path.chmod(0o644)
    store = SqlStore(f"sqlite:///{path}")
    try:
        await store.upgrade()
    finally:
        await store.close()
    assert mode(path) == 0o644  # the operator's choice; relaygate says so, once per start
    assert "can be read by other users (mode 644)" in caplog.text
