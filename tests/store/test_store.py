"""One contract for every store backend: SQLite (a temporary file) and PostgreSQL.

Each PostgreSQL test gets a schema of its own (the store's connections put it first on their
``search_path``), so tests never see each other's tables and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import event, exc, select

from relaygate.store import KeyRecord, LedgerRow, SqlStore, UsageSummary
from relaygate.store.migrations import MIGRATIONS, account_id_for_key
from relaygate.store.periods import period_start
from relaygate.store.schema import schema_migrations
from tests.conftest import REQUIRE_SERVICES

PG_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


async def _postgres_admin() -> tuple[str, asyncpg.Connection]:
    """A connection to the test server (user ``postgres``, else ``root``), or skip/fail."""
    problems: list[str] = []
    for url in PG_URLS:
        try:
            return url, await asyncpg.connect(url, timeout=5)
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            problems.append(f"{url}: {type(error).__name__}: {error}")
    reason = "PostgreSQL is not reachable (" + "; ".join(problems) + ")"
    if REQUIRE_SERVICES:
        pytest.fail(f"RELAYGATE_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def _use_schema(store: SqlStore, schema: str) -> None:
    """Make every connection of ``store`` create and read tables in ``schema`` only."""

    @event.listens_for(store.engine.sync_engine, "connect", insert=True)
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # on the raw asyncpg connection, outside any transaction, so that it sticks
        dbapi_connection.run_async(
            lambda connection: connection.execute(f'SET search_path TO "{schema}"')
        )


class Backend:
    """Opens stores on one database; the PostgreSQL one lives in a schema of its own."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self.opened: list[SqlStore] = []

    def open(self) -> SqlStore:
        store = SqlStore(self.url)
        if self.schema is not None:
            _use_schema(store, self.schema)
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.close()


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
    """An upgraded store, closed by ``backend``."""
    opened = backend.open()
    await opened.upgrade()
    return opened


def make_key(**overrides: Any) -> KeyRecord:
    token = secrets.token_hex(8)
    values: dict[str, Any] = {
        "id": f"key_{token}",
        "name": f"name {token}",
        "key_hash": secrets.token_hex(32),
        "prefix": f"sk-{token[:7]}",
        "created_at": 1_700_000_000,
    }
    values.update(overrides)
    return KeyRecord(**values)


def make_row(key_id: str, **overrides: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "request_id": f"chatcmpl-{secrets.token_hex(8)}",
        "key_id": key_id,
        "model": "gpt-5.2",
        "upstream": "openai",
        "upstream_model": "gpt-5.2-2026",
        "created_at": 1_700_000_000_000,
        "status": "ok",
        "cost_micros": 100,
        "latency_ms": 12,
        "stream": False,
        "account_id": account_id_for_key(key_id),  # the account create_key makes
    }
    values.update(overrides)
    return LedgerRow(**values)


# --- migrations ------------------------------------------------------------------------------


async def test_upgrade_applies_every_migration_once_in_order(backend: Backend) -> None:
    names = [name for _, name, _ in MIGRATIONS]
    first = backend.open()
    assert await first.upgrade() == names
    assert await first.upgrade() == []
    # a second process opening the same database finds the schema up to date
    second = backend.open()
    assert await second.upgrade() == []
    async with second.engine.begin() as conn:
        applied = [
            tuple(row)
            for row in await conn.execute(
                select(schema_migrations.c.version, schema_migrations.c.name)
            )
        ]
    assert applied == [(version, name) for version, name, _ in MIGRATIONS]
    # the tables the migrations create are usable
    created = await second.create_key(make_key())
    assert await first.get_key(created.id) == created


# --- keys ------------------------------------------------------------------------------------


async def test_concurrent_upgrades_apply_each_migration_once(backend: Backend) -> None:
    # --workers N and replicas start together: their upgrades must not trip over each other
    stores = [backend.open() for _ in range(4)]
    results = await asyncio.gather(*(store.upgrade() for store in stores))
    names = [name for _, name, _ in MIGRATIONS]
    assert sorted(results, key=len) == [[], [], [], names]
    created = await stores[0].create_key(make_key())
    assert await stores[3].get_key(created.id) == created


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {
                "granted_micros": 12_345_678,
                "used_micros": 1_234,
                "unlimited": True,
                "models": ("gpt-5.2", "relaygate-simulator"),
                "rpm": 60,
                "tpm": 100_000,
                "max_concurrency": 4,
                "expires_at": 1_900_000_000,
                "revoked_at": 1_800_000_000,
            },
            id="every-field",
        ),
        pytest.param({"models": ()}, id="no-models"),
        pytest.param({"models": ("gpt-5.5",)}, id="one-model"),
        pytest.param({"granted_micros": 9_000_000_000_000_000}, id="large-balance"),
    ],
)
async def test_create_get_and_list_round_trip_every_field(
    store: SqlStore, fields: dict[str, Any]
) -> None:
    record = make_key(**fields)
    created = await store.create_key(record)
    assert created.revision > 0
    # a key created without an account gets one of its own, holding its credits
    expected = replace(record, revision=created.revision, account_id=account_id_for_key(record.id))
    assert created == expected
    assert await store.get_key(record.id) == expected
    assert await store.list_keys() == [expected]
    # the types survive too: a tuple (or None) of models, a real bool
    fetched = await store.get_key(record.id)
    assert fetched is not None
    assert type(fetched.unlimited) is bool
    assert fetched.models is None or type(fetched.models) is tuple


async def test_get_unknown_key_is_none(store: SqlStore) -> None:
    await store.create_key(make_key())
    assert await store.get_key("key_missing") is None


async def test_list_keys_returns_every_key_oldest_first(store: SqlStore) -> None:
    newest = await store.create_key(make_key(created_at=1_700_000_300))
    oldest = await store.create_key(make_key(created_at=1_700_000_100))
    middle = await store.create_key(make_key(created_at=1_700_000_200))
    assert [k.id for k in await store.list_keys()] == [oldest.id, middle.id, newest.id]


async def test_key_hashes_are_unique(store: SqlStore) -> None:
    first = await store.create_key(make_key())
    with pytest.raises(exc.IntegrityError):
        await store.create_key(make_key(key_hash=first.key_hash))
    assert [k.id for k in await store.list_keys()] == [first.id]


async def test_every_change_gets_a_new_revision(store: SqlStore) -> None:
    a = await store.create_key(make_key())
    b = await store.create_key(make_key())
    assert b.revision > a.revision


async def test_revoke_sets_revoked_at_and_bumps_revision(store: SqlStore) -> None:
    created = await store.create_key(make_key(granted_micros=5))
    other = await store.create_key(make_key())
    revoked = await store.revoke_key(created.id, 1_750_000_000)
    assert revoked is not None
    assert revoked.revoked_at == 1_750_000_000
    assert revoked.revision > other.revision
    assert replace(revoked, revoked_at=None, revision=created.revision) == created
    assert await store.get_key(created.id) == revoked
    # revoking again keeps the first moment of revocation
    again = await store.revoke_key(created.id, 1_760_000_000)
    assert again is not None
    assert again.revoked_at == 1_750_000_000
    # the other key is untouched
    assert await store.get_key(other.id) == other


async def test_revoke_unknown_key_is_none(store: SqlStore) -> None:
    assert await store.revoke_key("key_missing", 1_750_000_000) is None


async def test_add_credits_adds_exactly_and_bumps_revision(store: SqlStore) -> None:
    created = await store.create_key(make_key(granted_micros=1_000_001, used_micros=7))
    once = await store.add_credits(created.id, 2_500_000)
    assert once is not None
    assert once.granted_micros == 3_500_001
    assert once.revision > created.revision
    twice = await store.add_credits(created.id, 1)
    assert twice is not None
    assert twice.granted_micros == 3_500_002
    assert twice.revision > once.revision
    assert replace(twice, granted_micros=created.granted_micros, revision=created.revision) == (
        created
    )
    assert await store.get_key(created.id) == twice


async def test_add_credits_to_unknown_key_is_none(store: SqlStore) -> None:
    assert await store.add_credits("key_missing", 1_000_000) is None


async def test_keys_since_returns_only_later_changes_in_order(store: SqlStore) -> None:
    a = await store.create_key(make_key())
    b = await store.create_key(make_key())
    c = await store.create_key(make_key())
    assert [k.id for k in await store.keys_since(0)] == [a.id, b.id, c.id]
    assert [k.id for k in await store.keys_since(a.revision)] == [b.id, c.id]
    assert await store.keys_since(c.revision) == []

    revoked = await store.revoke_key(a.id, 1_750_000_000)
    credited = await store.add_credits(b.id, 10)
    assert revoked is not None
    assert credited is not None
    changes = await store.keys_since(c.revision)
    assert changes == [revoked, credited]
    assert [k.revision for k in changes] == sorted(k.revision for k in changes)
    assert await store.keys_since(credited.revision) == []


async def test_concurrent_changes_never_share_a_revision(store: SqlStore) -> None:
    """The key cache asks for ``revision > last seen``: two changes with the same revision
    means one of them can be missed for good."""
    created = [await store.create_key(make_key()) for _ in range(8)]
    for _ in range(3):
        changed = await asyncio.gather(*(store.add_credits(k.id, 1) for k in created))
        revisions = [k.revision for k in changed if k is not None]
        assert len(revisions) == len(created)
        assert len(set(revisions)) == len(revisions), f"duplicate revisions: {sorted(revisions)}"


# --- ledger ----------------------------------------------------------------------------------


async def test_write_ledger_inserts_rows_and_charges_their_keys(store: SqlStore) -> None:
    a = await store.create_key(make_key(granted_micros=1_000_000, used_micros=5))
    b = await store.create_key(make_key(granted_micros=1_000_000))
    rows = [
        make_row(
            a.id,
            cost_micros=120,
            created_at=1_700_000_000_001,
            prompt_tokens=10,
            cached_tokens=2,
            completion_tokens=30,
            reasoning_tokens=7,
            image_tokens=3,
            prompt_audio_tokens=1,
            completion_audio_tokens=4,
            stream=True,
            status="client_disconnected",
            api="messages",
            cache_write_tokens=5,
        ),
        make_row(a.id, cost_micros=80, created_at=1_700_000_000_002),
        make_row(b.id, cost_micros=1, created_at=1_700_000_000_003),
    ]
    assert await store.write_ledger(rows) == rows
    assert await store.ledger_rows() == rows
    assert await store.ledger_rows(a.id) == rows[:2]
    key_a, key_b = await store.get_key(a.id), await store.get_key(b.id)
    assert key_a is not None
    assert key_a.used_micros == 5 + 120 + 80
    assert key_b is not None
    assert key_b.used_micros == 1
    assert key_a.granted_micros == 1_000_000
    # the API each came in by (migration 10): "chat" unless said
    assert [(r.api, r.cache_write_tokens) for r in await store.ledger_rows(a.id)] == [
        ("messages", 5),
        ("chat", 0),
    ]


async def test_write_ledger_of_nothing_writes_nothing(store: SqlStore) -> None:
    assert await store.write_ledger([]) == []
    assert await store.ledger_rows() == []


async def test_same_request_id_is_written_once_and_charged_once(store: SqlStore) -> None:
    key = await store.create_key(make_key())
    first = make_row(key.id, cost_micros=300, created_at=1)
    second = make_row(key.id, cost_micros=40, created_at=2)
    assert await store.write_ledger([first]) == [first]
    assert await store.write_ledger([first, second]) == [second]
    assert await store.write_ledger([first, second]) == []
    assert await store.ledger_rows() == [first, second]
    charged = await store.get_key(key.id)
    assert charged is not None
    assert charged.used_micros == 340


async def test_a_batch_mixing_held_and_new_rows_writes_and_charges_only_the_new(
    store: SqlStore,
) -> None:
    """Held rows among new ones, on every page of a multi-page insert (7 rows: pages of 4, 2
    and 1): exactly the new rows are returned, in order, and charged."""
    key = await store.create_key(make_key())
    rows = [make_row(key.id, cost_micros=10 + i, created_at=i) for i in range(7)]
    held = [rows[0], rows[2], rows[3], rows[5]]
    assert await store.write_ledger(held) == held
    new = [rows[1], rows[4], rows[6]]
    assert await store.write_ledger(rows) == new
    assert await store.write_ledger(rows) == []
    assert await store.ledger_rows() == rows
    charged = await store.get_key(key.id)
    assert charged is not None
    assert charged.used_micros == sum(row.cost_micros for row in rows)


async def test_a_real_row_replaces_an_interrupted_one_and_charges_the_difference(
    store: SqlStore,
) -> None:
    """A replay may write a request's ``interrupted`` row (its prompt estimate) before its real
    row, found in another journal file: the real row wins, its key pays the difference."""
    key = await store.create_key(make_key())
    interrupted = make_row(key.id, cost_micros=40, status="interrupted", upstream="")
    real = replace(interrupted, status="ok", cost_micros=500, upstream="openai")
    assert await store.write_ledger([interrupted]) == [interrupted]
    assert await store.write_ledger([real]) == [replace(real, cost_micros=460)]
    assert await store.write_ledger([real, interrupted]) == []  # written once
    assert await store.ledger_rows() == [real]
    charged = await store.get_key(key.id)
    assert charged is not None
    assert charged.used_micros == 500


async def test_duplicate_request_ids_in_one_batch_are_written_once(store: SqlStore) -> None:
    key = await store.create_key(make_key())
    row = make_row(key.id, cost_micros=250)
    assert await store.write_ledger([row, row]) == [row]
    assert await store.ledger_rows() == [row]
    charged = await store.get_key(key.id)
    assert charged is not None
    assert charged.used_micros == 250


async def test_a_failed_batch_writes_no_row_and_charges_nothing(store: SqlStore) -> None:
    """Rows and charges commit together: a batch that fails leaves neither behind."""
    key = await store.create_key(make_key(used_micros=10))
    good = make_row(key.id, cost_micros=500, created_at=1)
    broken = make_row(key.id, cost_micros=600, created_at=2, model=cast(str, None))
    with pytest.raises(exc.IntegrityError):
        await store.write_ledger([good, broken])
    assert await store.ledger_rows() == []
    unchanged = await store.get_key(key.id)
    assert unchanged is not None
    assert unchanged.used_micros == 10
    # the store still works afterwards, and the good row can be written again
    assert await store.write_ledger([good]) == [good]
    charged = await store.get_key(key.id)
    assert charged is not None
    assert charged.used_micros == 510


async def test_usage_sums_by_key_model_and_status(store: SqlStore) -> None:
    a = await store.create_key(make_key(id="key_a"))
    b = await store.create_key(make_key(id="key_b"))
    rows = [
        make_row(
            a.id,
            model="m1",
            prompt_tokens=10,
            cached_tokens=1,
            completion_tokens=5,
            reasoning_tokens=2,
            image_tokens=0,
            cost_micros=100,
        ),
        make_row(
            a.id,
            model="m1",
            prompt_tokens=20,
            cached_tokens=3,
            completion_tokens=7,
            reasoning_tokens=0,
            image_tokens=9,
            cost_micros=200,
        ),
        make_row(
            a.id,
            model="m1",
            status="client_disconnected",
            prompt_tokens=1,
            completion_tokens=1,
            cost_micros=3,
        ),
        make_row(a.id, model="m2", prompt_tokens=4, completion_tokens=4, cost_micros=40),
        make_row(b.id, model="m1", status="upstream_error", cost_micros=0),
    ]
    assert await store.write_ledger(rows) == rows
    expected_a = [
        UsageSummary(
            key_id="key_a",
            model="m1",
            requests=3,
            prompt_tokens=31,
            cached_tokens=4,
            completion_tokens=13,
            reasoning_tokens=2,
            image_tokens=9,
            cost_micros=303,
            statuses={"ok": 2, "client_disconnected": 1},
        ),
        UsageSummary(
            key_id="key_a",
            model="m2",
            requests=1,
            prompt_tokens=4,
            completion_tokens=4,
            cost_micros=40,
            statuses={"ok": 1},
        ),
    ]
    expected_b = [
        UsageSummary(key_id="key_b", model="m1", requests=1, statuses={"upstream_error": 1}),
    ]
    assert await store.usage() == expected_a + expected_b
    assert await store.usage("key_a") == expected_a
    assert await store.usage("key_b") == expected_b
    assert await store.usage("key_none") == []


async def test_a_sqlite_database_is_put_in_wal_mode(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        await store.upgrade()
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "wal.db") as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --- accounts and spend caps -------------------------------------------------------------------


async def test_write_ledger_charges_the_account_the_key_and_its_period(store: SqlStore) -> None:
    now = time.time()
    today = period_start("day", now)
    a = await store.create_key(
        make_key(spend_limit_micros=10_000, spend_limit_period="day", period_used_micros=900,
                 period_start=today - 86_400)  # spent yesterday: today starts afresh
    )
    b = await store.create_key(make_key(account_id=a.account_id, used_micros=3))
    now_ms = int(now * 1000)
    rows = [
        make_row(a.id, cost_micros=100, created_at=now_ms, account_id=a.account_id),
        make_row(a.id, cost_micros=40, created_at=(today - 10) * 1000),  # yesterday's; no account
        make_row(b.id, cost_micros=7, created_at=now_ms, account_id=a.account_id),
    ]
    assert await store.write_ledger(rows) == rows
    account = await store.get_account(a.account_id)
    assert account is not None
    assert account.used_micros == 147  # the row naming no account is charged to its key's
    key_a, key_b = await store.get_key(a.id), await store.get_key(b.id)
    assert key_a is not None
    assert key_b is not None
    assert (key_a.used_micros, key_a.period_used_micros, key_a.period_start) == (140, 100, today)
    assert (key_b.used_micros, key_b.period_used_micros) == (10, 7)  # no cap: its lifetime
    # the same period again adds to it
    await store.write_ledger([make_row(a.id, cost_micros=5, created_at=now_ms)])
    key_a = await store.get_key(a.id)
    assert key_a is not None
    assert (key_a.period_used_micros, key_a.period_start) == (105, today)


async def test_changes_since_sees_keys_and_accounts_up_to_the_counter(store: SqlStore) -> None:
    key = await store.create_key(make_key())
    revision, keys, accounts = await store.changes_since(0)
    assert revision == key.revision
    assert [k.id for k in keys] == [key.id]
    assert [a.id for a in accounts] == [key.account_id]
    suspended = await store.update_account(key.account_id, status="suspended")
    assert suspended is not None
    later, keys, accounts = await store.changes_since(revision)
    assert (later, keys, accounts) == (suspended.revision, [], [suspended])
    assert await store.changes_since(later) == (later, [], [])
    assert await store.update_account("acct_missing", status="suspended") is None
    assert await store.update_key("key_missing", spend_limit_micros=1) is None


async def test_add_credits_to_a_key_credits_its_account(store: SqlStore) -> None:
    key = await store.create_key(make_key(granted_micros=10))
    await store.add_credits(key.id, 90)
    account = await store.get_account(key.account_id)
    assert account is not None
    assert account.granted_micros == 100
