"""The store on SQLAlchemy Core: SQLite (the embedded default) and PostgreSQL.

SQLite discipline: WAL, and every transaction begins with ``BEGIN IMMEDIATE`` so that writers
queue on the database lock instead of failing half-way; nothing blocks the event loop (aiosqlite
runs each connection on its own thread).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, replace
from itertools import chain
from operator import attrgetter
from typing import Any, cast

from sqlalchemy import Row, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from relaygate.store import migrations
from relaygate.store.charges import Spend
from relaygate.store.records import AccountRecord, KeyRecord, LedgerRow, UsageSummary
from relaygate.store.rollups import add_to_rollups, new_rows
from relaygate.store.schema import accounts, api_keys, key_revisions, ledger

log = logging.getLogger("relaygate.store")

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(database_url: str) -> str:
    """``sqlite:///x.db`` → ``sqlite+aiosqlite:///x.db``; ``postgresql://`` → asyncpg."""
    url = make_url(database_url)
    driver = _DRIVERS.get(url.drivername, url.drivername)
    return url.set(drivername=driver).render_as_string(hide_password=False)


def create_private(database: str | None) -> None:
    """Create a SQLite database file with mode 0600, whatever the umask, before SQLite opens it.

    SQLite gives the ``-wal``, ``-shm`` and ``-journal`` files the database file's mode, so
    they are 0600 too. An existing file is left as it is, with a warning if others may read it.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = os.stat(database).st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "the database file %s can be read by other users (mode %o); relaygate creates"
                " it 0600: chmod 600 %s (and its -wal and -shm files)",
                database,
                mode,
                database,
            )
        return
    except OSError:
        return  # no such directory, say: SQLite reports it in its own words
    try:
        os.fchmod(fd, 0o600)  # os.open's mode is narrowed by the umask, never widened
    finally:
        os.close(fd)


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _key_from_row(row: Row[Any]) -> KeyRecord:
    m = row._mapping
    models = m["models"]
    return KeyRecord(
        id=m["id"],
        name=m["name"],
        key_hash=m["key_hash"],
        prefix=m["prefix"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        models=tuple(json.loads(models)) if models is not None else None,
        rpm=m["rpm"],
        tpm=m["tpm"],
        max_concurrency=m["max_concurrency"],
        granted_micros=m["granted_micros"],
        used_micros=m["used_micros"],
        unlimited=bool(m["unlimited"]),
        revision=m["revision"],
        account_id=m["account_id"] or "",
        spend_limit_micros=m["spend_limit_micros"],
        spend_limit_period=m["spend_limit_period"],
        period_used_micros=m["period_used_micros"],
        period_start=m["period_start"],
    )


def account_from_row(row: Row[Any]) -> AccountRecord:
    m = row._mapping
    return AccountRecord(
        id=m["id"],
        name=m["name"],
        created_at=m["created_at"],
        status=m["status"],
        granted_micros=m["granted_micros"],
        used_micros=m["used_micros"],
        unlimited=bool(m["unlimited"]),
        rpm=m["rpm"],
        tpm=m["tpm"],
        max_concurrency=m["max_concurrency"],
        low_balance_micros=m["low_balance_micros"],
        low_balance_alerted=bool(m["low_balance_alerted"]),
        revision=m["revision"],
    )


_LEDGER_FIELDS = tuple(column.name for column in ledger.columns)


_row_values = attrgetter(*_LEDGER_FIELDS)


@functools.cache
def _insert_new_sql(dialect: str, rows: int) -> str:
    """A multi-row ``INSERT ... ON CONFLICT DO NOTHING`` of ``rows`` ledger rows, in the
    driver's own parameter style; on PostgreSQL with ``RETURNING request_id`` (which rows were
    new).

    The ledger is the one bulk write on the request path's event loop; driver-level SQL costs
    a few microseconds a row where a compiled Core insert with RETURNING cost tens. SQLite
    returns nothing: its RETURNING cost ~10k instructions a row, and the rows it wrote are
    told by the row count and the last rowid instead (see :func:`_inserted_ids`)."""
    width = len(_LEDGER_FIELDS)
    if dialect == "sqlite":
        one = "(" + ", ".join("?" * width) + ")"
        values = ", ".join([one] * rows)
    else:
        values = ", ".join(
            "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
            for r in range(rows)
        )
    columns = ", ".join(_LEDGER_FIELDS)  # the schema's names and placeholders, no input
    returning = "" if dialect == "sqlite" else " RETURNING request_id"
    return (
        f"INSERT INTO {ledger.name} ({columns}) VALUES {values}"  # noqa: S608
        f" ON CONFLICT (request_id) DO NOTHING{returning}"
    )


async def _inserted_ids(
    conn: AsyncConnection, dialect: str, rows: list[LedgerRow], sql: str, params: tuple[Any, ...]
) -> Iterable[str]:
    """Insert one page of ``rows``; the request ids it wrote.

    On SQLite, a page whose every row was written (the common case) is told by the row count
    alone. Otherwise the rows written are those of the last ``rowcount`` rowids: a rowid table
    gives each new row the largest rowid plus one, and conflicting rows take none."""
    result = await conn.exec_driver_sql(sql, params)
    if dialect != "sqlite":
        return [request_id for (request_id,) in cast("Iterable[tuple[str]]", result)]
    written = result.rowcount
    if written == len(rows):
        return [row.request_id for row in rows]
    if written <= 0:
        return []
    last = result.lastrowid
    found = await conn.exec_driver_sql(
        f"SELECT request_id FROM {ledger.name} WHERE rowid BETWEEN ? AND ?",  # noqa: S608
        (last - written + 1, last),
    )
    return [request_id for (request_id,) in found]


async def _replace_interrupted(
    conn: AsyncConnection, rows: list[LedgerRow], new_ids: set[str], spend: Spend
) -> dict[str, int]:
    """Replace the ``interrupted`` rows the store holds by the real rows among ``rows`` that
    conflicted with them; add the cost differences to ``spend``. Returns them by request id.

    Conflicts are rare (a retried batch, a replay), so the common batch costs no query here."""
    conflicting = {
        row.request_id: row
        for row in rows
        if row.request_id not in new_ids and row.status != "interrupted"
    }
    if not conflicting:
        return {}
    c = ledger.c
    held = await conn.execute(
        select(c.request_id, c.key_id, c.cost_micros)
        .where(c.request_id.in_(list(conflicting)), c.status == "interrupted")
        .with_for_update()
    )
    replaced: dict[str, int] = {}
    for request_id, key_id, old_cost in held.all():
        row = conflicting[request_id]
        await conn.execute(
            update(ledger)
            .where(c.request_id == request_id, c.status == "interrupted")
            .values(asdict(row))
        )
        difference = row.cost_micros - old_cost
        spend.add(key_id, row.account_id, difference, row.created_at)
        replaced[request_id] = difference
    return replaced


async def _with_accounts(conn: AsyncConnection, rows: list[LedgerRow]) -> list[LedgerRow]:
    """``rows``, those that name no account given their key's.

    Only a replayed admission (an ``interrupted`` row: the journal's admission record has no
    account) names none. Resolved here, its row, its rollups and its charge go to its account
    at once, rather than under account ``''`` until its real row replaces it. The common batch
    costs a scan of its rows and no query."""
    missing = {row.key_id for row in rows if not row.account_id}
    if not missing:
        return rows
    c = api_keys.c
    found = await conn.execute(select(c.id, c.account_id).where(c.id.in_(sorted(missing))))
    owners: dict[str, str] = {key_id: account_id for key_id, account_id in found if account_id}
    return [
        row
        if row.account_id or row.key_id not in owners
        else replace(row, account_id=owners[row.key_id])
        for row in rows
    ]


def _pages(count: int) -> list[tuple[int, int]]:
    """Split ``count`` rows into pages whose sizes are powers of two.

    A multi-row INSERT's text depends on its row count, and the drivers cache prepared
    statements by text (sqlite3: 128 per connection; asyncpg likewise): arbitrary batch sizes
    filled those caches with hundreds of large statements, growing memory by ~0.4 KB a request.
    Powers of two bound the variety to a dozen texts.
    """
    pages = []
    start = 0
    while start < count:
        size = 1 << ((count - start).bit_length() - 1)
        pages.append((start, start + size))
        start += size
    return pages


async def _next_revision(conn: AsyncConnection) -> int:
    """The next key revision, taken inside the caller's transaction (see ``key_revisions``)."""
    result = await conn.execute(
        update(key_revisions)
        .where(key_revisions.c.id == 1)
        .values(value=key_revisions.c.value + 1)
        .returning(key_revisions.c.value)
    )
    return int(result.scalar_one())


class SqlStore:
    """Keys and the ledger in a relational database."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.dialect = make_url(database_url).get_backend_name()
        # A ping guards against a server that dropped the connection; SQLite has none, and
        # each ping costs four round trips to its thread (a third of a ledger write's).
        ping = self.dialect != "sqlite"
        self.engine = create_async_engine(
            async_url(database_url), hide_parameters=True, pool_pre_ping=ping
        )
        if self.dialect == "sqlite":
            _sqlite_pragmas(self.engine)

    def describe(self) -> str:
        url = make_url(self.database_url)
        return f"{self.dialect} ({url.database})"

    async def close(self) -> None:
        await self.engine.dispose()

    async def upgrade(self) -> list[str]:
        """Bring the schema up to date (every process does this before it uses the store)."""
        if self.dialect == "sqlite":
            create_private(make_url(self.database_url).database)
            await self._use_wal()
        async with self.engine.begin() as conn:
            return await conn.run_sync(migrations.upgrade)

    async def _use_wal(self, attempts: int = 200) -> None:
        """Put a SQLite database in WAL mode, which its file keeps from then on.

        The switch needs the database to itself. When processes open a new database together
        (``--workers N``), SQLite can answer "database is locked" at once, without waiting out
        the busy timeout, so the switch is retried."""
        for attempt in range(attempts):
            try:
                async with self.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection  # aiosqlite's connection
                    cursor = await driver.execute("PRAGMA journal_mode=WAL")
                    await cursor.close()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.01 + 0.04 * random.random())

    # --- keys --------------------------------------------------------------------------------

    async def create_key(
        self, record: KeyRecord, account: AccountRecord | None = None
    ) -> KeyRecord:
        """Store a key. A key that names no account gets one of its own, created with it:
        ``account`` if given, else one named like the key holding the key's credits
        (``granted_micros``, ``used_micros``, ``unlimited``), with the id migration 3 gives."""
        values = asdict(record)
        values["models"] = json.dumps(list(record.models)) if record.models is not None else None
        if not record.account_id and account is None:
            account = AccountRecord(
                id=migrations.account_id_for_key(record.id),
                name=record.name,
                created_at=record.created_at,
                granted_micros=record.granted_micros,
                used_micros=record.used_micros,
                unlimited=record.unlimited,
            )
        async with self.engine.begin() as conn:
            values["revision"] = revision = await _next_revision(conn)
            if account is not None:
                await conn.execute(
                    accounts.insert().values(**{**asdict(account), "revision": revision})
                )
                values["account_id"] = account.id
            await conn.execute(api_keys.insert().values(**values))
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == record.id))).one()
        return _key_from_row(row)

    async def get_account(self, account_id: str) -> AccountRecord | None:
        async with self.engine.begin() as conn:
            query = select(accounts).where(accounts.c.id == account_id)
            row = (await conn.execute(query)).first()
        return account_from_row(row) if row else None

    async def accounts_since(self, revision: int) -> list[AccountRecord]:
        """Accounts created or changed after ``revision`` (for the in-memory cache)."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                select(accounts).where(accounts.c.revision > revision).order_by(accounts.c.revision)
            )
            return [account_from_row(row) for row in rows]

    async def changes_since(
        self, revision: int
    ) -> tuple[int, list[KeyRecord], list[AccountRecord]]:
        """The revision counter now, and the keys and accounts changed after ``revision`` up to
        it. Bounded by the counter read first, so a change committed between the two reads is
        not skipped for good: it is read next time (revisions follow commit order)."""
        async with self.engine.begin() as conn:
            now = int((await conn.execute(select(key_revisions.c.value))).scalar_one())
            if now <= revision:
                return revision, [], []
            k, a = api_keys.c, accounts.c
            keys = await conn.execute(
                select(api_keys)
                .where(k.revision > revision, k.revision <= now)
                .order_by(k.revision)
            )
            changed_keys = [_key_from_row(row) for row in keys]
            found = await conn.execute(
                select(accounts)
                .where(a.revision > revision, a.revision <= now)
                .order_by(a.revision)
            )
            return now, changed_keys, [account_from_row(row) for row in found]

    async def update_account(self, account_id: str, **values: Any) -> AccountRecord | None:
        """Change an account's columns (``status``, limits, ...) with a new revision, so that
        every gateway's cache picks it up."""
        async with self.engine.begin() as conn:
            revision = await _next_revision(conn)
            changed = await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(revision=revision, **values)
                .returning(*accounts.c)
            )
            row = changed.first()
        return account_from_row(row) if row else None

    async def get_key(self, key_id: str) -> KeyRecord | None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return _key_from_row(row) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        async with self.engine.begin() as conn:
            rows = await conn.execute(select(api_keys).order_by(api_keys.c.created_at))
            return [_key_from_row(row) for row in rows]

    async def keys_since(self, revision: int) -> list[KeyRecord]:
        """Keys created or changed after ``revision`` (for the in-memory cache)."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                select(api_keys).where(api_keys.c.revision > revision).order_by(api_keys.c.revision)
            )
            return [_key_from_row(row) for row in rows]

    async def update_key(self, key_id: str, **values: Any) -> KeyRecord | None:
        """Change a key's columns (its spend cap, limits, ...) with a new revision."""
        async with self.engine.begin() as conn:
            revision = await _next_revision(conn)
            changed = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(revision=revision, **values)
                .returning(*api_keys.c)
            )
            row = changed.first()
        return _key_from_row(row) if row else None

    _update_key = update_key

    async def revoke_key(self, key_id: str, now: int) -> KeyRecord | None:
        return await self._update_key(key_id, revoked_at=func.coalesce(api_keys.c.revoked_at, now))

    async def add_credits(self, key_id: str, micros: int) -> KeyRecord | None:
        """Add credits to the account of ``key_id`` (the key's ``granted_micros`` keeps the
        sum granted through it); both get a new revision."""
        async with self.engine.begin() as conn:
            revision = await _next_revision(conn)
            changed = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(revision=revision, granted_micros=api_keys.c.granted_micros + micros)
                .returning(*api_keys.c)
            )
            row = changed.first()
            if row is None:
                return None
            key = _key_from_row(row)
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == key.account_id)
                .values(revision=revision, granted_micros=accounts.c.granted_micros + micros)
            )
        return key

    # --- ledger ------------------------------------------------------------------------------

    async def write_ledger(self, rows: list[LedgerRow]) -> list[LedgerRow]:
        """Append rows and add their cost to their keys and accounts, in one transaction.

        Each new row's cost goes to its account's ``used_micros`` (the balance), its key's
        ``used_micros`` (what the key spent in its lifetime) and its key's
        ``period_used_micros`` (what it spent in its spend cap's current UTC period: a key whose
        ``period_start`` is an earlier period starts afresh, and a row dated before the current
        period is not counted in it).

        A row whose request id is already in the ledger is skipped (written once, never twice):
        ``ON CONFLICT DO NOTHING ... RETURNING`` tells which rows were new, and only their cost
        is added. One exception: a real row replaces an ``interrupted`` one (the prompt
        estimate a replay charged for a request whose row was in another journal file), and the
        key is charged the difference. Returns the rows that were new (those whose cost was just
        added to their key's ``used_micros``), in the order given; a replacing row is returned
        with ``cost_micros`` set to the difference it added, so a consumer that adds each
        returned row's cost (the Redis gate's ``ledger_written``) stays consistent.
        """
        if not rows:
            return []
        spend = Spend(time.time())
        async with self.engine.begin() as conn:
            rows = await _with_accounts(conn, rows)
            values = [_row_values(row) for row in rows]
            new_ids: set[str] = set()
            for start, end in _pages(len(values)):
                page = tuple(chain.from_iterable(values[start:end]))
                sql = _insert_new_sql(self.dialect, end - start)
                new_ids.update(await _inserted_ids(conn, self.dialect, rows[start:end], sql, page))
            inserted = rows if len(new_ids) == len(rows) else new_rows(rows, new_ids)
            for row in inserted:
                spend.add(row.key_id, row.account_id, row.cost_micros, row.created_at)
            await add_to_rollups(conn, self.dialect, rows, new_ids, inserted)
            replaced = await _replace_interrupted(conn, rows, new_ids, spend)
            await spend.apply(conn, self.dialect)
        fresh = []
        for row in rows:
            if row.request_id in new_ids:
                new_ids.discard(row.request_id)  # a request id repeated in ``rows`` is new once
                fresh.append(row)
            elif row.request_id in replaced:
                fresh.append(replace(row, cost_micros=replaced.pop(row.request_id)))
        return fresh

    async def ledger_rows(self, key_id: str | None = None) -> list[LedgerRow]:
        query = select(ledger).order_by(ledger.c.created_at)
        if key_id is not None:
            query = query.where(ledger.c.key_id == key_id)
        async with self.engine.begin() as conn:
            rows = await conn.execute(query)
            return [LedgerRow(**dict(row._mapping)) for row in rows]

    async def usage(self, key_id: str | None = None) -> list[UsageSummary]:
        """Totals by key and model (and the count of each status)."""
        c = ledger.c
        query = select(
            c.key_id,
            c.model,
            c.status,
            func.count(),
            func.sum(c.prompt_tokens),
            func.sum(c.cached_tokens),
            func.sum(c.completion_tokens),
            func.sum(c.reasoning_tokens),
            func.sum(c.image_tokens),
            func.sum(c.cost_micros),
        ).group_by(c.key_id, c.model, c.status)
        if key_id is not None:
            query = query.where(c.key_id == key_id)
        async with self.engine.begin() as conn:
            rows = list(await conn.execute(query))
        return _summaries(rows)

    async def spent(
        self, account_ids: list[str]
    ) -> tuple[dict[str, int], dict[str, list[tuple[str, int, int]]]]:
        """Each account's ``used_micros`` now (accounts that do not exist are left out), and
        for each, its keys with a spend cap as ``(key_id, period_used_micros, period_start)``:
        what the Redis gate brings its balances and caps up to once ledger rows are written."""
        used: dict[str, int] = {}
        caps: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        a, k = accounts.c, api_keys.c
        async with self.engine.begin() as conn:
            for start in range(0, len(account_ids), 500):
                chunk = account_ids[start : start + 500]
                query = select(a.id, a.used_micros).where(a.id.in_(chunk))
                used.update((i, int(u)) for i, u in await conn.execute(query))
                capped = select(k.account_id, k.id, k.period_used_micros, k.period_start).where(
                    k.account_id.in_(chunk), k.spend_limit_micros.is_not(None)
                )
                for account_id, key_id, period_used, start_at in await conn.execute(capped):
                    caps[account_id].append((key_id, int(period_used), int(start_at)))
        return used, dict(caps)

    async def ledger_costs(self, request_ids: list[str]) -> dict[str, int]:
        """The cost of each of ``request_ids`` that is in the ledger (for reconciling the
        charges Redis still holds as pending)."""
        found: dict[str, int] = {}
        async with self.engine.begin() as conn:
            for start in range(0, len(request_ids), 500):
                query = select(ledger.c.request_id, ledger.c.cost_micros).where(
                    ledger.c.request_id.in_(request_ids[start : start + 500])
                )
                found.update((rid, cost) for rid, cost in await conn.execute(query))
        return found


def _summaries(rows: Iterable[Row[Any]]) -> list[UsageSummary]:
    by_group: dict[tuple[str, str], UsageSummary] = {}
    for row in rows:
        key_id, model, status, count, prompt, cached, completion, reasoning, image, cost = tuple(
            row
        )
        summary = by_group.setdefault((key_id, model), UsageSummary(key_id=key_id, model=model))
        summary.requests += int(count)
        summary.prompt_tokens += int(prompt or 0)
        summary.cached_tokens += int(cached or 0)
        summary.completion_tokens += int(completion or 0)
        summary.reasoning_tokens += int(reasoning or 0)
        summary.image_tokens += int(image or 0)
        summary.cost_micros += int(cost or 0)
        summary.statuses[status] = summary.statuses.get(status, 0) + int(count)
    return sorted(by_group.values(), key=lambda s: (s.key_id, s.model))
