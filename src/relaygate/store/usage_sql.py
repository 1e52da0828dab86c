"""The usage queries: reports from the rollups, and the request log (the ledger, newest first).

Reports never read the ledger. A range is read at the coarsest levels that answer it: whole
weeks from a week level, whole UTC days from a day level, the hours around them from an hour
level; and from a level without keys (hour/day x account x model, or hour/day x model) when no
key is asked for. The inputs are checked by :mod:`relaygate.accounts.usage`; these functions
trust them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from relaygate.store.reads import read
from relaygate.store.records import LedgerRow, UsageSummary
from relaygate.store.rollups import DAY_MS, HOUR_MS, STATUSES, WEEK_MS, Level, week_start
from relaygate.store.schema import ROLLUP_SUMS, ledger, usage_rollups

if TYPE_CHECKING:
    from relaygate.store.sql import SqlStore

GROUPS = ("hour", "day", "model", "key")


@dataclass(frozen=True, slots=True)
class Filters:
    """What a report or the request log is restricted to (``None``: everything)."""

    account_id: str | None = None
    key_id: str | None = None
    model: str | None = None

    def narrow(self, query: Any, columns: Any) -> Any:
        """``query`` restricted to these filters, on ``columns`` (the rollups' or the
        ledger's), in the order account, key, model."""
        if self.account_id is not None:
            query = query.where(columns.account_id == self.account_id)
        if self.key_id is not None:
            query = query.where(columns.key_id == self.key_id)
        if self.model is not None:
            query = query.where(columns.model == self.model)
        return query


def hour_floor(ms: int) -> int:
    return ms - ms % HOUR_MS


def hour_ceil(ms: int) -> int:
    return -(-ms // HOUR_MS) * HOUR_MS


Grains = tuple[tuple[int, Level], ...]
"""Bucket sizes and their levels, coarsest first, ending with an hour level."""

_BY_KEY_AND_MODEL: Grains = ((WEEK_MS, Level.WEEK), (DAY_MS, Level.DAY), (HOUR_MS, Level.HOUR))
_BY_KEY: Grains = ((WEEK_MS, Level.WEEK_KEY), (DAY_MS, Level.DAY_KEY), (HOUR_MS, Level.HOUR))
_BY_ACCOUNT: Grains = ((DAY_MS, Level.DAY_ACCOUNT), (HOUR_MS, Level.HOUR_ACCOUNT))
_BY_MODEL: Grains = ((DAY_MS, Level.DAY_MODEL), (HOUR_MS, Level.HOUR_MODEL))


def _grains(filters: Filters, group_by: str) -> Grains:
    """The levels with the fewest rows that keep every column the report filters or groups
    on (no week level when grouping by day, nor any but the hour level by hour)."""
    if filters.key_id is not None or group_by == "key":
        keyed = filters.model is None and group_by != "model"
        grains = _BY_KEY if keyed else _BY_KEY_AND_MODEL
    elif filters.account_id is not None:
        grains = _BY_ACCOUNT
    else:
        grains = _BY_MODEL
    if group_by == "hour":
        return grains[-1:]
    return tuple(g for g in grains if g[0] != WEEK_MS) if group_by == "day" else grains


def _floor(ms: int, size: int) -> int:
    return week_start(ms) if size == WEEK_MS else ms - ms % size


def _split(grains: Grains, start: int, end: int) -> list[tuple[Level, int, int]]:
    (size, level), finer = grains[0], grains[1:]
    if not finer:
        return [(level, start, end)] if start < end else []
    first, last = _floor(start + size - 1, size), _floor(end, size)
    if first >= last:
        return _split(finer, start, end)
    return [(level, first, last), *_split(finer, start, first), *_split(finer, last, end)]


def plan(
    filters: Filters, group_by: str, start_ms: int, end_ms: int
) -> list[tuple[Level, int, int]]:
    """The parts of ``[start_ms, end_ms)`` (whole hours) to read, (level, from, to) each:
    whole weeks from a week level, the whole days around them from a day level, the hours
    around those from an hour level."""
    return _split(_grains(filters, group_by), start_ms, end_ms)


def _group_column(group_by: str) -> Any:
    r = usage_rollups.c
    if group_by == "hour":
        return r.bucket
    if group_by == "day":
        return r.bucket - r.bucket % literal_column(str(DAY_MS))
    return r.model if group_by == "model" else r.key_id


def report_query(filters: Filters, group_by: str, level: Level, start: int, end: int) -> Any:
    r = usage_rollups.c
    group = _group_column(group_by).label("grp")
    query = (
        select(group, *(func.sum(r[name]) for name in ROLLUP_SUMS))
        .where(r.level == int(level), r.bucket >= start, r.bucket < end)
        .group_by(group)
    )
    return filters.narrow(query, r)


def sqlite_hinted(sql: str, filters: Filters) -> str:
    """``sql`` (a report query compiled for SQLite) told which index to read.

    SQLite, without statistics (relaygate never runs ANALYZE), prefers the primary key's range
    of buckets, which holds every key's rows, to the filter's index; SQLAlchemy does not render
    SQLite's ``INDEXED BY``, so it goes into the compiled text. PostgreSQL picks the index by
    itself."""
    index = _index_for(filters)
    if index is None:
        return sql
    table = usage_rollups.name
    return sql.replace(f"FROM {table}", f"FROM {table} INDEXED BY {index}", 1)


async def _read(conn: AsyncConnection, query: Any, filters: Filters | None = None) -> list[Any]:
    """The rows of ``query``, read without SQLite's write lock (:mod:`relaygate.store.reads`):
    a report would otherwise hold the one write lock (the ledger writer's) for as long as it
    takes. A report's parts cover separate hours, so they need no common snapshot."""
    if filters is None:
        return await read(conn, query)
    return await read(conn, query, lambda sql: sqlite_hinted(sql, filters))


def _index_for(filters: Filters) -> str | None:
    """The rollup index that narrows ``filters`` most: by key, else account, else model."""
    if filters.key_id is not None:
        return "usage_rollups_key"
    if filters.account_id is not None:
        return "usage_rollups_account"
    return "usage_rollups_model" if filters.model is not None else None


async def usage_totals(
    store: SqlStore, filters: Filters, group_by: str, start_ms: int, end_ms: int
) -> dict[Any, list[int]]:
    """The rollup totals (ROLLUP_SUMS, in order) per group over whole hours ``[start_ms,
    end_ms)``; groups are hour/day starts (unix ms), models or key ids."""
    totals: dict[Any, list[int]] = {}
    async with store.engine.connect() as conn:
        for level, start, end in plan(filters, group_by, start_ms, end_ms):
            query = report_query(filters, group_by, level, start, end)
            result = await _read(conn, query, filters)
            for group, *sums in result:
                held = totals.get(group)
                if held is None:
                    totals[group] = [int(value or 0) for value in sums]
                else:
                    for i, value in enumerate(sums):
                        held[i] += int(value or 0)
    return totals


async def usage_by_key_and_model(store: SqlStore, key_id: str | None = None) -> list[UsageSummary]:
    """All-time totals per key and model, from the day level (``relaygate usage``); statuses
    without a column of their own are counted as ``other``."""
    r = usage_rollups.c
    query = (
        select(r.key_id, r.model, *(func.sum(r[name]) for name in ROLLUP_SUMS))
        .where(r.level == int(Level.DAY))
        .group_by(r.key_id, r.model)
    )
    if key_id is not None:
        query = query.where(r.key_id == key_id)
    async with store.engine.connect() as conn:
        rows = sorted(await _read(conn, query), key=lambda row: (row[0], row[1]))
    summaries = []
    for key, model, *sums in rows:
        totals = dict(zip(ROLLUP_SUMS, (int(value or 0) for value in sums), strict=True))
        if not totals["requests"]:
            continue
        statuses = {s: totals[f"status_{s}"] for s in (*STATUSES, "other")}
        summaries.append(
            UsageSummary(
                key_id=key,
                model=model,
                requests=totals["requests"],
                prompt_tokens=totals["prompt_tokens"],
                cached_tokens=totals["cached_tokens"],
                completion_tokens=totals["completion_tokens"],
                reasoning_tokens=totals["reasoning_tokens"],
                image_tokens=totals["image_tokens"],
                cost_micros=totals["cost_micros"],
                statuses={status: count for status, count in statuses.items() if count},
            )
        )
    return summaries


# --- the request log -------------------------------------------------------------------------


def ledger_page_query(
    filters: Filters,
    status: str | None,
    start_ms: int | None,
    end_ms: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> Any:
    """The query of :func:`ledger_page`.

    Each filter has an index ending in created_at, so the page is one index range scan read
    backwards (ties on created_at sorted by request id as they are read)."""
    c = ledger.c
    query = select(ledger).order_by(c.created_at.desc(), c.request_id.desc()).limit(limit)
    query = filters.narrow(query, c)
    if status is not None:
        query = query.where(c.status == status)
        if status != "ok":  # the words of the partial index's condition, so that it is used
            query = query.where(c.status != literal_column("'ok'"))
    if start_ms is not None:
        query = query.where(c.created_at >= start_ms)
    if end_ms is not None:
        query = query.where(c.created_at < end_ms)
    if after is not None:
        created_at, request_id = after
        query = query.where(
            c.created_at <= created_at,  # the range bound; the OR below is a filter on it
            or_(
                c.created_at < created_at,
                and_(c.created_at == created_at, c.request_id < request_id),
            ),
        )
    return query


async def ledger_page(
    store: SqlStore,
    filters: Filters,
    status: str | None,
    start_ms: int | None,
    end_ms: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[LedgerRow]:
    """Up to ``limit`` ledger rows newest first (by created_at, then request id), those after
    ``after`` (the last row of the previous page) when given."""
    query = ledger_page_query(filters, status, start_ms, end_ms, after, limit)
    async with store.engine.connect() as conn:
        rows = await _read(conn, query)
    names = [column.name for column in ledger.columns]
    found = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        values["stream"] = bool(values["stream"])  # SQLite's driver reads 0 or 1
        found.append(LedgerRow(**values))
    return found


async def ledger_row(store: SqlStore, request_id: str) -> LedgerRow | None:
    """The ledger row of one request (by its unique request id), if any."""
    async with store.engine.connect() as conn:
        rows = await _read(conn, select(ledger).where(ledger.c.request_id == request_id))
    if not rows:
        return None
    values = dict(zip([column.name for column in ledger.columns], rows[0], strict=True))
    values["stream"] = bool(values["stream"])
    return LedgerRow(**values)
