"""The business layer's fixtures: an upgraded store on SQLite and on PostgreSQL (each
PostgreSQL test in a schema of its own), principals, and a snapshot of every admin table to
show that refused input changed nothing."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from relaygate.accounts.principal import Principal
from relaygate.store.schema import (
    accounts,
    admin_tokens,
    api_keys,
    audit_log,
    credit_grants,
    redemption_codes,
)
from relaygate.store.sql import SqlStore
from tests.store.test_store import Backend, _postgres_admin

ADMIN = Principal(via="admin_token", id="atk_test", role="admin", address="127.0.0.1")
CLI = Principal(via="cli", id="cli", role="admin")


def member(account_id: str) -> Principal:
    return Principal(via="session", id="usr_member", role="member", account_id=account_id,
                     address="127.0.0.2", session_id="ses_1")


@pytest_asyncio.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        sqlite = Backend(f"sqlite:///{tmp_path / 'store.db'}")
        yield sqlite
        await sqlite.close()
        return
    url, admin = await _postgres_admin()
    schema = f"relaygate_test_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    postgres = Backend(url, schema)
    try:
        yield postgres
    finally:
        await postgres.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


@pytest_asyncio.fixture
async def store(backend: Backend) -> SqlStore:
    opened = backend.open()
    await opened.upgrade()
    return opened


_TABLES = (accounts, api_keys, credit_grants, redemption_codes, admin_tokens, audit_log)


async def snapshot(store: SqlStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table an admin action writes (the revision counter aside)."""
    taken: dict[str, list[tuple[Any, ...]]] = {}
    async with store.engine.connect() as conn:
        for table in _TABLES:
            primary = next(iter(table.primary_key.columns))
            rows = await conn.execute(select(table).order_by(primary))
            taken[table.name] = [tuple(row) for row in rows]
    return taken
