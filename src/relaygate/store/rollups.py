"""Usage rollups: ledger totals per hour and per day, kept as ledger rows are written.

Usage reports read these tables and never the ledger, so they cost the same at two million
ledger rows as at two hundred. Each batch of ledger rows is added in the same transaction as
its insert (:func:`add_to_rollups`, called by ``SqlStore.write_ledger``): the rows are summed in
Python per cell first, then one multi-row upsert (``INSERT ... ON CONFLICT DO UPDATE SET x = x +
excluded.x``) adds every cell of every level.

The levels (one table, ``usage_rollups``, a ``level`` column):

- ``HOUR``: hour x account x key x model, the base every other level could be derived from;
- ``DAY``: day x account x key x model, for ranges of whole days;
- ``DAY_KEY``: day x account x key (model ``''``), for reports by key over every model;
- ``HOUR_MODEL`` and ``DAY_MODEL``: hour/day x model (account and key ``''``), for reports over
  every account and key;
- ``HOUR_ACCOUNT`` and ``DAY_ACCOUNT``: hour/day x account x model (key ``''``), for an
  account's reports over all its keys (a large account's keys would be many rows otherwise);
- ``WEEK`` and ``WEEK_KEY``: week (from Monday, UTC) x account x key (x model), for reports by
  key over long ranges (90 days of 500 keys: ~6k week rows where days are ~45k).

With ~500 keys and ~10 models, hour x key x model barely compresses a sparse ledger (2M rows
gave ~660k cells); a query over 90 days of every key reads ~900 day x model rows instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import IntEnum
from functools import cache
from itertools import chain
from operator import add, attrgetter
from typing import Any

from sqlalchemy import Connection, case, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from relaygate.store.records import LedgerRow
from relaygate.store.schema import ROLLUP_SUMS, ledger, usage_rollups

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
WEEK_OFFSET_MS = 3 * DAY_MS
"""Weeks begin on Monday, 00:00 UTC: ``t - (t + WEEK_OFFSET_MS) % WEEK_MS`` (the offset keeps
the dividend positive, so Python and SQL agree)."""


def week_start(ms: int) -> int:
    return ms - (ms + WEEK_OFFSET_MS) % WEEK_MS


class Level(IntEnum):
    """The rollup levels: which time bucket, and which of account/key/model they keep."""

    HOUR = 0
    DAY = 1
    DAY_KEY = 2
    HOUR_MODEL = 3
    DAY_MODEL = 4
    HOUR_ACCOUNT = 5
    DAY_ACCOUNT = 6
    WEEK = 7
    WEEK_KEY = 8


STATUSES = ("ok", "client_disconnected", "upstream_error", "cancelled", "interrupted")
"""The statuses with a count column of their own; any other counts as ``status_other``."""

_LEDGER_SUMS = (
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "image_tokens",
    "prompt_audio_tokens",
    "completion_audio_tokens",
    "cost_micros",
    "input_cost_micros",
    "cached_cost_micros",
    "output_cost_micros",
    "reasoning_cost_micros",
    "latency_ms",
)
"""The ledger columns summed as they are (ROLLUP_SUMS is requests, these, then the statuses)."""
assert ("requests", *_LEDGER_SUMS, *(f"status_{s}" for s in (*STATUSES, "other"))) == ROLLUP_SUMS

_row_sums = attrgetter(*_LEDGER_SUMS)
_status = attrgetter("status")
_STATUS_INDEX = {status: 1 + len(_LEDGER_SUMS) + i for i, status in enumerate(STATUSES)}
_OTHER_INDEX = len(ROLLUP_SUMS) - 1
_NO_STATUSES = (0,) * (len(STATUSES) + 1)
_KEY_COLUMNS = ("level", "bucket", "account_id", "key_id", "model")

Cell = tuple[int, int, str, str, str]
"""A rollup row's identity: level, bucket, account id, key id, model."""


def _hour_cells(rows: Iterable[LedgerRow]) -> dict[Cell, list[int]]:
    """The rows' totals per hour x account x key x model (this runs on the event loop for
    every ledger batch): the rows are grouped by cell first, then each group's columns are
    summed and its statuses counted by builtins (about half a microsecond a row where adding
    up each row's 13 columns in Python cost over one)."""
    groups: dict[Cell, list[LedgerRow]] = {}
    for row in rows:
        at = row.created_at
        cell: Cell = (Level.HOUR, at - at % HOUR_MS, row.account_id or "", row.key_id, row.model)
        group = groups.get(cell)
        if group is None:
            groups[cell] = [row]
        else:
            group.append(row)
    cells: dict[Cell, list[int]] = {}
    for hour_cell, group in groups.items():
        sums = [len(group), *map(sum, zip(*map(_row_sums, group), strict=True)), *_NO_STATUSES]
        for status, count in Counter(map(_status, group)).items():
            sums[_STATUS_INDEX.get(status, _OTHER_INDEX)] += count
        cells[hour_cell] = sums
    return cells


def _add(cells: dict[Cell, list[int]], cell: Cell, sums: list[int]) -> None:
    held = cells.get(cell)
    if held is None:
        cells[cell] = sums.copy()
    else:
        held[:] = map(add, held, sums)


def _every_level(hours: dict[Cell, list[int]]) -> dict[Cell, list[int]]:
    """The hour cells and the cells of every other level they add to."""
    cells = dict(hours)
    for (_, hour, account_id, key_id, model), sums in hours.items():
        day = hour - hour % DAY_MS
        _add(cells, (Level.DAY, day, account_id, key_id, model), sums)
        _add(cells, (Level.DAY_KEY, day, account_id, key_id, ""), sums)
        _add(cells, (Level.HOUR_MODEL, hour, "", "", model), sums)
        _add(cells, (Level.DAY_MODEL, day, "", "", model), sums)
        _add(cells, (Level.HOUR_ACCOUNT, hour, account_id, "", model), sums)
        _add(cells, (Level.DAY_ACCOUNT, day, account_id, "", model), sums)
        week = week_start(hour)
        _add(cells, (Level.WEEK, week, account_id, key_id, model), sums)
        _add(cells, (Level.WEEK_KEY, week, account_id, key_id, ""), sums)
    return cells


def rollup_cells(added: Iterable[LedgerRow], removed: Iterable[LedgerRow] = ()) -> list[Any]:
    """What adding ``added`` and taking away ``removed`` changes, as upsert parameters: one
    tuple per cell of every level (key columns, then ROLLUP_SUMS), sorted by key so that
    concurrent writers lock rows in one order (no deadlock on PostgreSQL)."""
    hours = _hour_cells(added)
    for cell, sums in _hour_cells(removed).items():
        _add(hours, cell, [-value for value in sums])
    cells = _every_level(hours)
    return [(*cell, *sums) for cell, sums in sorted(cells.items()) if any(sums)]


@cache
def _upsert_sql(dialect: str, rows: int) -> str:
    """A multi-row upsert of ``rows`` rollup cells that adds to the totals held."""
    names = (*_KEY_COLUMNS, *ROLLUP_SUMS)
    width = len(names)
    if dialect == "sqlite":
        values = ", ".join(["(" + ", ".join("?" * width) + ")"] * rows)
    else:
        values = ", ".join(
            "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
            for r in range(rows)
        )
    table = usage_rollups.name
    updates = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in ROLLUP_SUMS)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES {values}"  # noqa: S608
        f" ON CONFLICT ({', '.join(_KEY_COLUMNS)}) DO UPDATE SET {updates}"
    )


_MAX_PAGE = 512
"""Most cells in one statement (26 parameters each: under both drivers' limits)."""


def _pages(count: int) -> list[tuple[int, int]]:
    """``count`` cells in pages whose sizes are powers of two (a dozen statement texts at most,
    as ``relaygate.store.sql._pages`` explains for the ledger)."""
    pages = []
    start = 0
    while start < count:
        size = min(_MAX_PAGE, 1 << ((count - start).bit_length() - 1))
        pages.append((start, start + size))
        start += size
    return pages


async def upsert_cells(conn: AsyncConnection, dialect: str, cells: list[Any]) -> None:
    """Add ``cells`` (from :func:`rollup_cells`) to the rollups."""
    for start, end in _pages(len(cells)):
        params = tuple(chain.from_iterable(cells[start:end]))
        await conn.exec_driver_sql(_upsert_sql(dialect, end - start), params)


def new_rows(rows: list[LedgerRow], new_ids: set[str]) -> list[LedgerRow]:
    """The rows the insert wrote: the first of each new request id (a repeated id in one
    batch is inserted once, in order)."""
    seen: set[str] = set()
    fresh = []
    for row in rows:
        if row.request_id in new_ids and row.request_id not in seen:
            seen.add(row.request_id)
            fresh.append(row)
    return fresh


async def add_to_rollups(
    conn: AsyncConnection,
    dialect: str,
    rows: list[LedgerRow],
    new_ids: set[str],
    inserted: list[LedgerRow] | None = None,
) -> None:
    """Add a ledger batch to the rollups, inside the transaction that inserted it.

    Called after the insert (``new_ids``: the request ids it wrote) and before
    ``_replace_interrupted``: a real row that conflicted with an ``interrupted`` one will
    replace it, so the interrupted row (read here, locked as the replacement will lock it) is
    taken away and the real row added. ``inserted``: the rows the insert wrote (the first of
    each of ``new_ids``), when the caller has them already. A batch costs one statement per
    512 cells here (a cell: one row of one level; a batch of one key and model in one hour
    has 9)."""
    if inserted is None:
        inserted = rows if len(new_ids) == len(rows) else new_rows(rows, new_ids)
    added = inserted
    removed: list[LedgerRow] = []
    conflicting = {
        row.request_id: row
        for row in rows
        if row.request_id not in new_ids and row.status != "interrupted"
    }
    if conflicting:
        added = list(added)
        held = await conn.execute(
            select(ledger)
            .where(ledger.c.request_id.in_(list(conflicting)), ledger.c.status == "interrupted")
            .with_for_update()
        )
        for found in held:
            old = LedgerRow(**found._mapping)
            removed.append(old)
            added.append(conflicting[old.request_id])
    cells = rollup_cells(added, removed)
    if cells:
        await upsert_cells(conn, dialect, cells)


# --- building the rollups from the ledger (migration 7, the bench's seed) ------------------


def _status_count(status: str | None) -> Any:
    column = ledger.c.status
    matches = column.notin_(STATUSES) if status is None else column == status
    return func.sum(case((matches, 1), else_=0))


def rebuild_rollups(conn: Connection) -> None:
    """Empty the rollups and build them from the whole ledger: one INSERT ... SELECT ...
    GROUP BY over the ledger for the hour level, then one over the hour level per other
    level."""
    c = ledger.c
    hour = (c.created_at - c.created_at % literal_column(str(HOUR_MS))).label("bucket")
    account = func.coalesce(c.account_id, literal_column("''")).label("account_id")
    sums = [
        func.count().label("requests"),
        *(func.sum(c[name]).label(name) for name in _LEDGER_SUMS),
        *(_status_count(s).label(f"status_{s}") for s in STATUSES),
        _status_count(None).label("status_other"),
    ]
    conn.execute(usage_rollups.delete())
    by_hour = select(
        literal_column(str(int(Level.HOUR))), hour, account, c.key_id, c.model, *sums
    ).group_by(hour, account, c.key_id, c.model)
    conn.execute(usage_rollups.insert().from_select([*_KEY_COLUMNS, *ROLLUP_SUMS], by_hour))
    r = usage_rollups.c
    day = r.bucket - r.bucket % literal_column(str(DAY_MS))
    week = r.bucket - (r.bucket + literal_column(str(WEEK_OFFSET_MS))) % literal_column(
        str(WEEK_MS)
    )
    nothing: Any = literal_column("''")
    derived = {
        Level.DAY: (day, r.account_id, r.key_id, r.model),
        Level.DAY_KEY: (day, r.account_id, r.key_id, nothing),
        Level.HOUR_MODEL: (r.bucket, nothing, nothing, r.model),
        Level.DAY_MODEL: (day, nothing, nothing, r.model),
        Level.HOUR_ACCOUNT: (r.bucket, r.account_id, nothing, r.model),
        Level.DAY_ACCOUNT: (day, r.account_id, nothing, r.model),
        Level.WEEK: (week, r.account_id, r.key_id, r.model),
        Level.WEEK_KEY: (week, r.account_id, r.key_id, nothing),
    }
    for level, keys in derived.items():
        query = (
            select(
                literal_column(str(int(level))), *keys, *(func.sum(r[name]) for name in ROLLUP_SUMS)
            )
            .where(r.level == literal_column(str(int(Level.HOUR))))
            .group_by(*(key for key in keys if key is not nothing))
        )
        conn.execute(usage_rollups.insert().from_select([*_KEY_COLUMNS, *ROLLUP_SUMS], query))
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {usage_rollups.name}"))
