"""Plain reads: queries that never take SQLite's write lock.

The store's transactions all begin ``BEGIN IMMEDIATE`` on SQLite (writers queue on the lock
rather than fail half-way), so even a ``SELECT`` through SQLAlchemy holds the one write lock
(the ledger writer's) for as long as it runs, and waits for it while another connection holds
it. A read here runs on the driver's connection in autocommit instead: under WAL it reads the
last committed state, one statement at a time, and neither takes nor waits for the lock. What
it reads is one statement's snapshot; a caller that needs several statements to agree reads
in a transaction. PostgreSQL reads are plain reads already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from relaygate.store.sql import SqlStore


async def read(
    conn: AsyncConnection, query: Any, rewrite: Callable[[str], str] | None = None
) -> list[Any]:
    """The rows of ``query`` (tuples, in its columns' order). ``rewrite`` may change the
    compiled SQLite text (to name an index, say)."""
    if conn.dialect.name != "sqlite":
        return list(await conn.execute(query))
    compiled = query.compile(dialect=conn.dialect)
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    sql = str(compiled) if rewrite is None else rewrite(str(compiled))
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection  # aiosqlite's connection
    cursor = await driver.execute(sql, params)
    try:
        return list(await cursor.fetchall())
    finally:
        await cursor.close()


async def read_rows(store: SqlStore, query: Any) -> list[Any]:
    """The rows of ``query``, read on a connection of their own without the write lock."""
    async with store.engine.connect() as conn:
        return await read(conn, query)


async def read_first(store: SqlStore, query: Any) -> tuple[Any, ...] | None:
    """The first row of ``query`` (``None``: none), read without the write lock."""
    rows = await read_rows(store, query.limit(1))
    return tuple(rows[0]) if rows else None
