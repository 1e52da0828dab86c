"""What the identity tests share: a store on each backend, fast hashing settings, an account.

(Not a conftest: the module names its fixtures, and test modules import them.)
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from relaygate.settings import Settings
from relaygate.store.records import AccountRecord
from relaygate.store.schema import accounts
from relaygate.store.sql import SqlStore
from tests.store.test_store import Backend, backend

__all__ = ["FAST", "Backend", "backend", "make_account", "store"]

FAST = Settings(
    password_hash_time_cost=1,
    password_hash_memory_kib=8192,
    password_hash_parallelism=1,
)
"""Cheap argon2id parameters, so that each test signs in in about a millisecond."""

PASSWORD = "correct horse battery staple"


@pytest_asyncio.fixture
async def store(backend: Backend) -> AsyncIterator[SqlStore]:
    """An upgraded store on SQLite or PostgreSQL, closed by ``backend``."""
    opened = backend.open()
    await opened.upgrade()
    yield opened


async def make_account(store: SqlStore, name: str = "Acme") -> str:
    """An account row (accounts/accounts.py, another module, creates them in the product)."""
    record = AccountRecord(id="acct_" + secrets.token_hex(6), name=name, created_at=1)
    async with store.engine.begin() as conn:
        await conn.execute(
            accounts.insert().values(
                id=record.id, name=record.name, created_at=record.created_at, revision=0
            )
        )
    return record.id


def sqlite_bytes(tmp_path: Path) -> bytes:
    """Every byte of the SQLite test database and its WAL (to look for a secret in them)."""
    return b"".join(p.read_bytes() for p in tmp_path.glob("store.db*"))
