"""Ordered schema migrations; the same list builds the SQLite and the PostgreSQL schema.

Each migration is ``(version, name, function)``; applied versions are recorded in
``schema_migrations`` and never run twice. Add new ones at the end, never edit an applied one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Column, Connection, Table, func, select, text, update
from sqlalchemy.schema import CreateColumn

from relaygate.store import schema_v1
from relaygate.store.rollups import rebuild_rollups
from relaygate.store.schema import (
    accounts,
    admin_tokens,
    api_keys,
    audit_log,
    console_setup,
    credit_grants,
    key_revisions,
    ledger,
    ledger_model_created,
    ledger_status_created,
    redemption_codes,
    schema_migrations,
    usage_rollups,
)


def m001_initial(conn: Connection) -> None:
    # The tables as they were then: later migrations alter them.
    schema_v1.api_keys.create(conn)
    schema_v1.ledger.create(conn)


def m002_key_revision_counter(conn: Connection) -> None:
    key_revisions.create(conn)
    latest = conn.execute(select(func.coalesce(func.max(api_keys.c.revision), 0))).scalar_one()
    conn.execute(key_revisions.insert().values(id=1, value=latest))


def _add_column(conn: Connection, table: Table, column: Column[object]) -> None:
    ddl = CreateColumn(column).compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))


_KEY_COLUMNS = (
    "account_id",
    "spend_limit_micros",
    "spend_limit_period",
    "period_used_micros",
    "period_start",
)
_LEDGER_COLUMNS = (
    "account_id",
    "input_cost_micros",
    "cached_cost_micros",
    "output_cost_micros",
    "reasoning_cost_micros",
)


def account_id_for_key(key_id: str) -> str:
    """The id migration 3 gives the account it makes for an existing key."""
    return "acct_" + key_id.removeprefix("key_")


def m003_accounts(conn: Connection) -> None:
    """Accounts own the money: every existing key becomes an account of its own, holding
    exactly the key's balance (granted, used, unlimited) and its name."""
    accounts.create(conn)
    for name in _KEY_COLUMNS:
        _add_column(conn, api_keys, api_keys.c[name])
    for name in _LEDGER_COLUMNS:
        _add_column(conn, ledger, ledger.c[name])
    keys = conn.execute(
        select(
            api_keys.c.id,
            api_keys.c.name,
            api_keys.c.created_at,
            api_keys.c.granted_micros,
            api_keys.c.used_micros,
            api_keys.c.unlimited,
        )
    ).all()
    revision = conn.execute(select(key_revisions.c.value)).scalar_one()
    for key_id, name, created_at, granted, used, unlimited in keys:
        revision += 1
        account_id = account_id_for_key(key_id)
        conn.execute(
            accounts.insert().values(
                id=account_id,
                name=name,
                status="active",
                created_at=created_at,
                granted_micros=granted,
                used_micros=used,
                unlimited=unlimited,
                revision=revision,
            )
        )
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(account_id=account_id, revision=revision)
        )
        conn.execute(update(ledger).where(ledger.c.key_id == key_id).values(account_id=account_id))
    conn.execute(update(key_revisions).where(key_revisions.c.id == 1).values(value=revision))
    for index in (*api_keys.indexes, *ledger.indexes):
        if index.name in ("api_keys_account", "ledger_account_created", "ledger_key_created"):
            index.create(conn)


def m005_admin(conn: Connection) -> None:
    """The admin API's tables: admin tokens, credit grants, redemption codes, the audit log."""
    for table in (admin_tokens, credit_grants, redemption_codes, audit_log):
        table.create(conn)


def m008_alert_deliveries(conn: Connection) -> None:
    """Low-balance alerts: their delivery records, and two partial indexes for the detector,
    so that a check reads only the accounts that have a threshold, and a re-arm only those
    alerted. Neither holds ``used_micros``, so the ledger's updates of accounts maintain
    neither."""
    from relaygate.store.schema import alert_deliveries  # here: apart from other migrations

    alert_deliveries.create(conn)
    # as the detector's queries spell ``low_balance_alerted = true`` in each dialect
    alerted = (
        "low_balance_alerted" if conn.dialect.name == "postgresql" else "low_balance_alerted = 1"
    )
    conn.execute(
        text(
            "CREATE INDEX accounts_low_balance ON accounts (low_balance_micros)"
            " WHERE low_balance_micros IS NOT NULL"
        )
    )
    conn.execute(
        text(f"CREATE INDEX accounts_low_balance_alerted ON accounts (id) WHERE {alerted}")
    )


def m006_identity(conn: Connection) -> None:
    """People and sign-in: console users, their server-side sessions, the sign-in throttle."""
    from relaygate.store.schema import sessions, sign_in_throttle, users  # this block's tables

    for table in (users, sessions, sign_in_throttle):
        table.create(conn)


def m007_usage_rollups(conn: Connection) -> None:
    """Usage rollups (built from the ledger as it is), and the request log's indexes by model
    and by status."""
    usage_rollups.create(conn)
    ledger_model_created.create(conn)
    ledger_status_created.create(conn)
    rebuild_rollups(conn)


LEDGER_KEY_STATUS_INDEX = "ledger_key_status_created"


def m009_ledger_key_status(conn: Connection) -> None:
    """PostgreSQL: the request log filtered by key and status. Without it, PostgreSQL ANDs two
    bitmaps (the key's rows and the status's) and then sorts: ~36 ms on 2,000,000 rows for the
    busiest key. Partial like ``ledger_status_created`` (only the rare statuses other than
    ``ok``, so it is small; the query spells ``status != 'ok'`` to match it). SQLite's planner
    without statistics would not use it as it should, and its key+status page is read through
    ``ledger_key_created``."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(
        text(
            f"CREATE INDEX {LEDGER_KEY_STATUS_INDEX} ON ledger (key_id, status, created_at)"
            " WHERE status <> 'ok'"
        )
    )


def m010_ledger_api(conn: Connection) -> None:
    """The ledger names the API each request came in by (``chat`` for every row before), and
    counts the prompt tokens written to an upstream's prompt cache."""
    _add_column(conn, ledger, ledger.c.api)
    _add_column(conn, ledger, ledger.c.cache_write_tokens)


def m011_stored_responses(conn: Connection) -> None:
    """Stored answers of ``POST /v1/responses`` (``previous_response_id``)."""
    from relaygate.store.schema import stored_responses  # here: apart from other migrations

    stored_responses.create(conn)


def m012_console_setup(conn: Connection) -> None:
    """The console's first-run setup link."""
    console_setup.create(conn)


def m013_drop_ledger_key_index(conn: Connection) -> None:
    """Drop the ledger's index on ``key_id`` alone: ``ledger_key_created`` (key_id,
    created_at) serves every query it served, and each ledger row cost one more index insert."""
    conn.execute(text("DROP INDEX IF EXISTS ix_ledger_key_id"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "m001_initial", m001_initial),
    (2, "m002_key_revision_counter", m002_key_revision_counter),
    (3, "m003_accounts", m003_accounts),
    (5, "m005_admin", m005_admin),
    (6, "m006_identity", m006_identity),
    (7, "m007_usage_rollups", m007_usage_rollups),
    (8, "m008_alert_deliveries", m008_alert_deliveries),
    (9, "m009_ledger_key_status", m009_ledger_key_status),
    (10, "m010_ledger_api", m010_ledger_api),
    (11, "m011_stored_responses", m011_stored_responses),
    (12, "m012_console_setup", m012_console_setup),
    (13, "m013_drop_ledger_key_index", m013_drop_ledger_key_index),
]


_MIGRATION_LOCK = 0x72656C6179  # "relay": one advisory lock id for every relaygate process


def upgrade(conn: Connection) -> list[str]:
    """Apply every migration not applied yet; returns the names applied.

    Several processes may start at once (``--workers N``, replicas): the upgrade runs in one
    transaction that holds the database's migration lock (PostgreSQL: an advisory lock; SQLite:
    ``BEGIN IMMEDIATE``), so the others wait and then find nothing left to do.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
    schema_migrations.create(conn, checkfirst=True)
    done = {row[0] for row in conn.execute(select(schema_migrations.c.version))}
    applied: list[str] = []
    for version, name, migrate in MIGRATIONS:
        if version in done:
            continue
        migrate(conn)
        conn.execute(
            schema_migrations.insert().values(
                version=version, name=name, applied_at=int(time.time())
            )
        )
        applied.append(name)
    return applied
