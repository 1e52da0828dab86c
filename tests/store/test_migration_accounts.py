"""Migration 3 on a populated database (SQLite and PostgreSQL): every key becomes an account of
its own holding exactly its balance, ledger rows get their account, and a gateway then serves
each key with the same balance."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, update

from relaygate.keys.tokens import display_prefix, hash_key, new_key
from relaygate.store import schema_v1
from relaygate.store.migrations import MIGRATIONS, account_id_for_key
from relaygate.store.schema import key_revisions, schema_migrations
from relaygate.store.sql import SqlStore
from tests.support.gateway import GatewayProcess
from tests.support.services import create_database, drop_database

# (granted, used, unlimited, ledger rows' costs): each key's balance before the migration
KEYS = [
    (5_000_000, 1_234_567, False, [1_000_000, 234_567]),
    (2_000_000, 0, False, []),
    (0, 777, True, [700, 77]),
    (9_000_000_000, 8_999_999_999, False, [8_999_999_999]),
]


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgresql")])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'v2.db'}"
        return
    url, name = create_database()
    yield url
    drop_database(name)


def _version_2(conn: Connection, keys: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """The database as version 2 left it, with keys and their ledger rows."""
    schema_migrations.create(conn)
    for version, name, migrate in MIGRATIONS[:2]:
        migrate(conn)
        conn.execute(schema_migrations.insert().values(version=version, name=name, applied_at=0))
    conn.execute(schema_v1.api_keys.insert(), keys)
    conn.execute(schema_v1.ledger.insert(), rows)
    conn.execute(update(key_revisions).values(value=len(keys)))


def _populate() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    keys, rows, raws = [], [], []
    for n, (granted, used, unlimited, costs) in enumerate(KEYS):
        raw = new_key()
        key_id = f"key_{secrets.token_hex(8)}"
        raws.append(raw)
        keys.append(
            {
                "id": key_id,
                "name": f"customer {n}",
                "key_hash": hash_key(raw),
                "prefix": display_prefix(raw),
                "created_at": 1_700_000_000 + n,
                "granted_micros": granted,
                "used_micros": used,
                "unlimited": unlimited,
                "revision": n + 1,
            }
        )
        for m, cost in enumerate(costs):
            rows.append(
                {
                    "request_id": f"chatcmpl-{key_id}-{m}",
                    "key_id": key_id,
                    "model": "gpt-5.2",
                    "upstream": "u",
                    "upstream_model": "m",
                    "created_at": 1_700_000_000_000 + m,
                    "status": "ok",
                    "stream": False,
                    "latency_ms": 1,
                    "prompt_tokens": 1,
                    "cached_tokens": 0,
                    "completion_tokens": 1,
                    "reasoning_tokens": 0,
                    "image_tokens": 0,
                    "prompt_audio_tokens": 0,
                    "completion_audio_tokens": 0,
                    "cost_micros": cost,
                }
            )
    return keys, rows, raws


async def test_every_key_becomes_an_account_with_exactly_its_balance(
    database_url: str, make_gateway: Callable[..., GatewayProcess]
) -> None:
    keys, rows, raws = _populate()
    store = SqlStore(database_url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(_version_2, keys, rows)
        assert await store.upgrade() == [name for _, name, _ in MIGRATIONS[2:]]
        for key, (granted, used, unlimited, _) in zip(keys, KEYS, strict=True):
            account = await store.get_account(account_id_for_key(key["id"]))
            assert account is not None
            assert (account.name, account.status) == (key["name"], "active")
            assert (account.granted_micros, account.used_micros, account.unlimited) == (
                granted,
                used,
                unlimited,
            )
            record = await store.get_key(key["id"])
            assert record is not None
            assert record.account_id == account.id
            assert record.revision == account.revision > len(keys)  # the cache sees both
            ledger = await store.ledger_rows(key["id"])
            assert [row.account_id for row in ledger] == [account.id] * len(ledger)
        revision, changed_keys, changed_accounts = await store.changes_since(len(keys))
        assert len(changed_keys) == len(changed_accounts) == len(keys)
        assert revision == max(k.revision for k in changed_keys)
    finally:
        await store.close()

    gateway = make_gateway(database_url=database_url)
    for raw, (granted, used, unlimited, _) in zip(raws, KEYS, strict=True):
        answer = gateway.credits(raw)
        assert answer["unlimited_credits"] is unlimited
        assert Decimal(str(answer["used_credits"])) == Decimal(used).scaleb(-6)
        if not unlimited:
            assert Decimal(str(answer["remaining_credits"])) == Decimal(granted - used).scaleb(-6)
    # and spends it: a migrated key is served and charged to its account
    status, _, answer = gateway.post(
        "/v1/chat/completions",
        {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        raws[0],
    )
    assert status == 200, answer
