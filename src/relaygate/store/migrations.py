"""Ordered schema migrations; the same list builds the SQLite and the PostgreSQL schema.

Each migration is ``(version, name, function)``; applied versions are recorded in
``schema_migrations`` and never run twice. Add new ones at the end, never edit an applied one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, func, select, text

from relaygate.store.schema import api_keys, key_revisions, ledger, schema_migrations


def m001_initial(conn: Connection) -> None:
    api_keys.create(conn)
    ledger.create(conn)


def m002_key_revision_counter(conn: Connection) -> None:
    key_revisions.create(conn)
    latest = conn.execute(select(func.coalesce(func.max(api_keys.c.revision), 0))).scalar_one()
    conn.execute(key_revisions.insert().values(id=1, value=latest))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "m001_initial", m001_initial),
    (2, "m002_key_revision_counter", m002_key_revision_counter),
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
