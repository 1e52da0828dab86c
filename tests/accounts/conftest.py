"""The business layer's fixtures: the store tests' upgraded store on SQLite and on PostgreSQL
(each PostgreSQL test in a schema of its own), principals, and a snapshot of every admin table to
show that refused input changed nothing."""

from __future__ import annotations

from typing import Any

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
from tests.store import test_store

backend = test_store.backend
store = test_store.store
"""The store tests' fixtures: every test here runs on SQLite and on PostgreSQL."""

ADMIN = Principal(via="admin_token", id="atk_test", role="admin", address="127.0.0.1")
CLI = Principal(via="cli", id="cli", role="admin")


def member(account_id: str) -> Principal:
    return Principal(via="session", id="usr_member", role="member", account_id=account_id,
                     address="127.0.0.2", session_id="ses_1")


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
