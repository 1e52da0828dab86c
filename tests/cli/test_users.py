"""``relaygate users``, run as operators run it: the password from a pipe or a terminal."""

from __future__ import annotations

import asyncio
import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from relaygate.store.sql import SqlStore

PASSWORD = "correct horse battery staple"


async def _upgrade(url: str) -> None:
    store = SqlStore(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config with its own SQLite file, cheap argon2 parameters and one account."""
    path = tmp_path / "relaygate.yaml"
    database = tmp_path / "relaygate.db"
    path.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{database}",
                "password_hash_time_cost": 1,
                "password_hash_memory_kib": 8192,
                "password_hash_parallelism": 1,
            }
        )
    )
    asyncio.run(_upgrade(f"sqlite:///{database}"))
    with sqlite3.connect(database) as db:
        db.execute(
            "INSERT INTO accounts (id, name, status, created_at, granted_micros, used_micros,"
            " unlimited, low_balance_alerted, revision)"
            " VALUES ('acct_acme', 'Acme', 'active', 1, 0, 0, 0, 0, 0)"
        )
    return path


def users(
    config: Path, *args: str, stdin: str = "", check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaygate", "users", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def stored_users(config: Path) -> list[tuple[Any, ...]]:
    database = config.parent / "relaygate.db"
    with sqlite3.connect(database) as db:
        return db.execute("SELECT email, role, account_id, password_hash FROM users").fetchall()


def test_create_an_admin_with_the_password_from_a_pipe(config: Path) -> None:
    result = users(
        config,
        "create",
        "--email",
        "Ops@Example.com",
        "--role",
        "admin",
        "--json",
        stdin=PASSWORD + "\n",
    )
    created = json.loads(result.stdout)
    assert created["id"].startswith("usr_")
    assert (created["email"], created["role"], created["account_id"]) == (
        "ops@example.com",
        "admin",
        None,
    )
    assert "password_hash" not in created
    assert PASSWORD not in result.stdout + result.stderr
    [(email, role, account, password_hash)] = stored_users(config)
    assert (email, role, account) == ("ops@example.com", "admin", None)
    assert password_hash.startswith("$argon2id$")
    listed = json.loads(users(config, "list", "--json").stdout)
    assert listed == [created]


def test_create_a_member_of_an_account(config: Path) -> None:
    result = users(
        config,
        "create",
        "--email",
        "owner@acme.test",
        "--role",
        "member",
        "--account",
        "acct_acme",
        stdin=PASSWORD + "\r\n",
    )
    assert "owner@acme.test, member of acct_acme" in result.stdout
    [(_, role, account, _)] = stored_users(config)
    assert (role, account) == ("member", "acct_acme")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        pytest.param(["--role", "member"], "give --account", id="member-without-account"),
        pytest.param(
            ["--role", "admin", "--account", "acct_acme"],
            "leave out --account",
            id="admin-with-account",
        ),
        pytest.param(
            ["--role", "member", "--account", "acct_nope"], "No such account", id="unknown-account"
        ),
        pytest.param(["--role", "owner"], "'owner' is not one of", id="unknown-role"),
    ],
)
def test_role_and_account_mistakes_are_clear_errors(
    config: Path, args: list[str], problem: str
) -> None:
    result = users(
        config, "create", "--email", "a@example.com", *args, stdin=PASSWORD + "\n", check=False
    )
    assert result.returncode == 2
    assert problem in result.stderr
    assert result.stdout == ""
    assert stored_users(config) == []


@pytest.mark.parametrize(
    ("stdin", "problem"),
    [
        pytest.param("", "no password on standard input", id="empty"),
        pytest.param("x" * 5000 + "\n", "at most 1024 bytes", id="long"),
    ],
)
def test_a_bad_password_is_refused_without_an_echo(config: Path, stdin: str, problem: str) -> None:
    result = users(
        config, "create", "--email", "a@example.com", "--role", "admin", stdin=stdin, check=False
    )
    assert result.returncode == 2
    assert problem in result.stderr
    assert stdin.strip() == "" or stdin.strip() not in result.stderr
    assert stored_users(config) == []


def test_disable_and_set_password(config: Path) -> None:
    created = json.loads(
        users(
            config,
            "create",
            "--email",
            "a@example.com",
            "--role",
            "admin",
            "--json",
            stdin=PASSWORD,
        ).stdout
    )
    before = stored_users(config)[0][3]
    users(config, "set-password", created["id"], stdin="another long passphrase\n")
    assert stored_users(config)[0][3] != before
    disabled = json.loads(users(config, "disable", created["id"], "--json").stdout)
    assert disabled["disabled_at"] is not None


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, f"the terminal closed before {marker!r}: {bytes(seen)!r}"
            seen.extend(chunk)


def test_on_a_terminal_the_password_is_prompted_twice_without_echo(config: Path) -> None:
    leader, follower = os.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relaygate",
            "users",
            "create",
            "--email",
            "tty@example.com",
            "--role",
            "admin",
            "--config",
            str(config),
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    seen = bytearray()
    try:
        # each prompt is written once echo is off (getpass turns it off first)
        _read_until(leader, b"Password: ", seen)
        os.write(leader, PASSWORD.encode() + b"\n")
        _read_until(leader, b"confirmation: ", seen)
        os.write(leader, PASSWORD.encode() + b"\n")
        _read_until(leader, b"Created usr_", seen)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    assert PASSWORD.encode() not in seen
    assert stored_users(config)[0][0] == "tty@example.com"
