"""Usage rollups, usage reports and the request log, on SQLite and PostgreSQL.

The rollups are checked against the ledger itself: after any mix of batches they must equal a
GROUP BY over the ledger (what migration 7's back-fill computes), and every report must equal a
direct aggregation of the ledger's rows.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select, text

from relaygate.accounts.usage import (
    MAX_LIMIT,
    encode_cursor,
    parse_time,
    request_log,
    usage_report,
)
from relaygate.errors import InvalidRequest
from relaygate.store import LedgerRow, SqlStore
from relaygate.store.rollups import DAY_MS, HOUR_MS, Level, rebuild_rollups
from relaygate.store.schema import schema_migrations, usage_rollups
from relaygate.store.usage_sql import (
    Filters,
    ledger_page_query,
    plan,
    report_query,
    sqlite_hinted,
    usage_by_key_and_model,
)
from tests.store.test_store import Backend, backend, make_key, make_row, store

__all__ = ["backend", "store"]  # the fixtures, shared with test_store

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TOKENS = (
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "image_tokens",
    "prompt_audio_tokens",
    "completion_audio_tokens",
)
COSTS = (
    "cost_micros",
    "input_cost_micros",
    "cached_cost_micros",
    "output_cost_micros",
    "reasoning_cost_micros",
)


async def rollup_table(store: SqlStore) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """Every rollup row: its key columns → its totals (rows that add up to nothing left out)."""
    async with store.engine.begin() as conn:
        rows = (await conn.execute(select(usage_rollups))).all()
    table = {}
    for row in rows:
        key, sums = tuple(row[:5]), tuple(int(v) for v in row[5:])
        if any(sums):
            table[key] = sums
    return table


async def rebuilt(store: SqlStore) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The rollups as migration 7's back-fill builds them from the ledger."""
    async with store.engine.begin() as conn:
        await conn.run_sync(rebuild_rollups)
    return await rollup_table(store)


def row_at(key_id: str, account_id: str, at: int, **values: Any) -> LedgerRow:
    fields: dict[str, Any] = {
        "account_id": account_id,
        "created_at": at,
        "prompt_tokens": 100 + at % 7,
        "cached_tokens": 10,
        "completion_tokens": 50 + at % 5,
        "reasoning_tokens": 5,
        "image_tokens": 3,
        "prompt_audio_tokens": 2,
        "completion_audio_tokens": 1,
        "cost_micros": 1000 + at % 13,
        "input_cost_micros": 300,
        "cached_cost_micros": 20,
        "output_cost_micros": 600,
        "reasoning_cost_micros": 80,
        "latency_ms": 40,
    }
    fields.update(values)
    return make_row(key_id, **fields)


async def seed(store: SqlStore) -> list[LedgerRow]:
    """Rows over 16 days, two accounts, three keys, three models and several statuses,
    written in mixed batches: repeats, an in-batch duplicate, interrupted rows replaced by
    their real rows in a later batch and in the same batch."""
    a = await store.create_key(make_key())
    b = await store.create_key(make_key())
    c = await store.create_key(make_key())
    accounts = {a.id: "acct_one", b.id: "acct_one", c.id: "acct_two"}
    models = ("gpt-5.2", "gpt-5.5", "mini")
    statuses = ("ok", "ok", "ok", "client_disconnected", "upstream_error", "cancelled", "odd")
    rows = []
    for i in range(60):
        key_id = (a.id, b.id, c.id)[i % 3]
        at = T0 + 20 * HOUR_MS + i * 389 * 60_000 + i % 4  # 16 days: weeks, days, hours
        rows.append(
            row_at(key_id, accounts[key_id], at, model=models[i % 5 % 3], status=statuses[i % 7])
        )
    assert await store.write_ledger(rows[:20])
    assert await store.write_ledger([*rows[10:40], rows[35]])  # repeats, and one twice
    interrupted = row_at(a.id, "", T0 + 3 * HOUR_MS, status="interrupted", completion_tokens=0)
    await store.write_ledger([interrupted, *rows[40:50]])
    # the real row: another hour, the account known, another model
    real = replace(
        interrupted, status="ok", created_at=T0 + 30 * HOUR_MS, account_id="acct_one", model="mini"
    )
    second = row_at(c.id, "", T0 + 50 * HOUR_MS, status="interrupted")
    second_real = replace(second, status="ok", account_id="acct_two", cost_micros=7)
    await store.write_ledger([real, second, second_real, *rows[45:60]])
    await store.write_ledger([real, second_real])  # written already: changes nothing
    return await store.ledger_rows()


async def test_rollups_equal_a_group_by_over_the_ledger(store: SqlStore) -> None:
    ledger_rows = await seed(store)
    assert len(ledger_rows) == 62
    kept = await rollup_table(store)
    assert kept == await rebuilt(store)
    # and the hour level is the ledger's totals per hour x account x key x model
    expected: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 14)
    for row in ledger_rows:
        cell = (Level.HOUR, row.created_at // HOUR_MS * HOUR_MS, row.account_id, row.key_id)
        sums = expected[(*cell, row.model)]
        values = [1, *(getattr(row, n) for n in (*TOKENS, *COSTS)), row.latency_ms]
        sums[:] = [x + y for x, y in zip(sums, values, strict=True)]
    hours = {k[:5]: list(v[:14]) for k, v in kept.items() if k[0] == Level.HOUR}
    assert hours == dict(expected)
    statuses = Counter(row.status for row in ledger_rows)
    day_model = [v for k, v in kept.items() if k[0] == Level.DAY_MODEL]
    assert sum(v[14] for v in day_model) == statuses["ok"]
    assert sum(v[15] for v in day_model) == statuses["client_disconnected"]
    assert sum(v[18] for v in day_model) == statuses["interrupted"] == 0
    assert sum(v[19] for v in day_model) == statuses["odd"]
    # every level holds the same grand totals
    grand = [sum(column) for column in zip(*hours.values(), strict=True)]
    grand += [sum(v[i] for v in day_model) for i in range(14, 20)]
    for level in Level:
        rows_of_level = [v for k, v in kept.items() if k[0] == level]
        assert [sum(column) for column in zip(*rows_of_level, strict=True)] == grand, level


async def test_cli_totals_from_the_rollups_equal_the_ledgers(store: SqlStore) -> None:
    """``relaygate usage`` reads the rollups: the same totals as the ledger's GROUP BY (a status
    without a column of its own is counted as ``other``)."""
    rows = await seed(store)
    expected = []
    for summary in await store.usage():
        if "odd" in summary.statuses:
            summary.statuses["other"] = summary.statuses.pop("odd")
        expected.append(summary)
    assert await usage_by_key_and_model(store) == expected
    key_id = rows[0].key_id
    assert await usage_by_key_and_model(store, key_id) == [
        s for s in expected if s.key_id == key_id
    ]
    assert await usage_by_key_and_model(store, "key_none") == []


async def test_migration_7_backfills_the_rollups_from_the_ledger(backend: Backend) -> None:
    store = backend.open()
    await store.upgrade()
    await seed(store)
    kept = await rollup_table(store)
    async with store.engine.begin() as conn:  # back to the schema before migration 7
        await conn.execute(text("DROP TABLE usage_rollups"))
        await conn.execute(text("DROP INDEX ledger_model_created"))
        await conn.execute(text("DROP INDEX ledger_status_created"))
        await conn.execute(schema_migrations.delete().where(schema_migrations.c.version == 7))
    assert await backend.open().upgrade() == ["m007_usage_rollups"]
    assert await rollup_table(store) == kept


# --- usage reports ---------------------------------------------------------------------------


def expected_report(
    rows: list[LedgerRow], group_by: str, start: int, end: int, **filters: str
) -> dict[Any, tuple[int, ...]]:
    """What the report must say, from the ledger's rows (bounds rounded out to whole hours)."""
    start, end = start // HOUR_MS * HOUR_MS, -(-end // HOUR_MS) * HOUR_MS
    groups: dict[Any, list[int]] = defaultdict(lambda: [0] * 13)
    for row in rows:
        if not start <= row.created_at < end:
            continue
        if any(getattr(row, name) != value for name, value in filters.items()):
            continue
        group = {
            "hour": row.created_at // HOUR_MS * HOUR_MS,
            "day": row.created_at // DAY_MS * DAY_MS,
            "model": row.model,
            "key": row.key_id,
        }[group_by]
        values = [1, *(getattr(row, n) for n in (*TOKENS, *COSTS))]
        groups[group] = [x + y for x, y in zip(groups[group], values, strict=True)]
    return {group: tuple(sums) for group, sums in groups.items()}


def reported(views: list[dict[str, Any]], group_by: str) -> dict[Any, tuple[int, ...]]:
    name = {"hour": "start_ms", "day": "start_ms", "model": "model", "key": "key_id"}[group_by]
    return {v[name]: tuple(v[n] for n in ("requests", *TOKENS, *COSTS)) for v in views}


RANGES = [
    pytest.param(None, None, id="everything"),
    pytest.param(T0 + 21 * HOUR_MS + 1234, T0 + 47 * HOUR_MS + 5, id="hours-around-a-day"),
    pytest.param(T0 + 22 * HOUR_MS, T0 + 23 * HOUR_MS + 1, id="within-a-day"),
    pytest.param(T0, T0 + 2 * DAY_MS, id="whole-days"),
    pytest.param(T0 + DAY_MS + 5 * HOUR_MS, T0 + 19 * DAY_MS + 3 * HOUR_MS, id="weeks-days-hours"),
    pytest.param(T0 + 4 * DAY_MS, T0 + 18 * DAY_MS, id="whole-weeks"),
    pytest.param(T0 + 30 * HOUR_MS, T0 + 30 * HOUR_MS, id="empty"),
]


@pytest.mark.parametrize(("start", "end"), RANGES)
async def test_usage_report_equals_an_aggregation_of_the_ledger(
    store: SqlStore, start: int | None, end: int | None
) -> None:
    rows = await seed(store)
    a, c = rows[0], rows[2]
    filter_sets: list[dict[str, str]] = [
        {},
        {"account_id": a.account_id},
        {"key_id": c.key_id},
        {"model": "gpt-5.5"},
        {"account_id": a.account_id, "model": "mini"},
        {"key_id": a.key_id, "model": "gpt-5.2"},
    ]
    for group_by in ("hour", "day", "model", "key"):
        for filters in filter_sets:
            if group_by == "hour" and start is None:
                with pytest.raises(InvalidRequest, match="at most 31 days"):
                    await usage_report(store, group_by=group_by)
                continue
            views = await usage_report(
                store, start_ms=start, end_ms=end, group_by=group_by, **filters
            )
            low = 0 if start is None else start
            high = 10**15 if end is None else end
            assert reported(views, group_by) == expected_report(
                rows, group_by, low, high, **filters
            ), (group_by, filters)


async def test_usage_report_shows_cost_in_usd_and_statuses(store: SqlStore) -> None:
    key = await store.create_key(make_key())
    await store.write_ledger(
        [
            row_at(key.id, "acct_x", T0 + 5, cost_micros=1_500_000, status="ok"),
            row_at(key.id, "acct_x", T0 + 9, cost_micros=250, status="upstream_error"),
        ]
    )
    [view] = await usage_report(store, key_id=key.id, group_by="day")
    assert view["day"] == "2026-01-01"
    assert view["start_ms"] == T0
    assert view["cost_usd"] == "1.500250"
    assert view["cost_micros"] == 1_500_250
    assert view["statuses"] == {"ok": 1, "upstream_error": 1}
    assert view["mean_latency_ms"] == 40
    [hour] = await usage_report(store, group_by="hour", start_ms=T0, end_ms=T0 + 1)
    assert hour["hour"] == "2026-01-01T00:00:00Z"


# --- the request log -------------------------------------------------------------------------


async def every_page(store: SqlStore, limit: int, **filters: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = await request_log(store, limit=limit, cursor=cursor, **filters)
        assert len(page) <= limit
        seen.extend(page)
        if cursor is None:
            return seen


async def test_request_log_pages_visit_every_row_once_newest_first(store: SqlStore) -> None:
    key = await store.create_key(make_key())
    other = await store.create_key(make_key())
    rows = [
        row_at(
            (key.id, other.id)[i % 2], "acct_p", T0 + i // 5, status=("ok", "cancelled")[i % 3 == 0]
        )
        for i in range(37)
    ]  # five rows share each created_at
    await store.write_ledger(rows)
    order = sorted(rows, key=lambda r: (r.created_at, r.request_id), reverse=True)
    for limit in (1, 3, 5, 37, 100):
        seen = await every_page(store, limit)
        assert [v["request_id"] for v in seen] == [r.request_id for r in order]
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"key_id": key.id}, lambda r: r.key_id == key.id),
        ({"account_id": "acct_p"}, lambda r: True),
        ({"status": "cancelled"}, lambda r: r.status == "cancelled"),
        ({"status": "ok", "key_id": other.id}, lambda r: r.status == "ok" and r.key_id == other.id),
        (
            {"model": "gpt-5.2", "start_ms": T0 + 2, "end_ms": T0 + 6},
            lambda r: T0 + 2 <= r.created_at < T0 + 6,
        ),
        ({"model": "none"}, lambda r: False),
    ]
    for filters, wanted in cases:
        seen = await every_page(store, 4, **filters)
        assert [v["request_id"] for v in seen] == [r.request_id for r in order if wanted(r)]


async def test_request_log_breaks_the_cost_down(store: SqlStore) -> None:
    key = await store.create_key(make_key())
    row = row_at(key.id, "acct_q", T0 + 7)
    old = row_at(
        key.id,
        "acct_q",
        T0 + 6,
        input_cost_micros=0,
        cached_cost_micros=0,
        output_cost_micros=0,
        reasoning_cost_micros=0,
    )
    await store.write_ledger([row, old])
    [view, old_view], cursor = await request_log(store, limit=2)
    assert cursor is None
    assert view["request_id"] == row.request_id
    assert view["created"] == "2026-01-01T00:00:00.007Z"
    assert view["cost"] == {
        "input": {"tokens": row.prompt_tokens - 10, "cost_micros": 300, "cost_usd": "0.000300"},
        "cached_input": {"tokens": 10, "cost_micros": 20, "cost_usd": "0.000020"},
        "output": {"tokens": row.completion_tokens - 5, "cost_micros": 600, "cost_usd": "0.000600"},
        "reasoning": {"tokens": 5, "cost_micros": 80, "cost_usd": "0.000080"},
    }
    assert view["cost_parts_recorded"] is True
    assert old_view["cost_parts_recorded"] is False


@pytest.mark.parametrize(
    ("call", "param"),
    [
        pytest.param({"group_by": "week"}, "group_by", id="unknown-group-by"),
        pytest.param({"start_ms": T0 + 1, "end_ms": T0}, "from", id="from-after-to"),
        pytest.param({"start_ms": -1}, "from", id="negative-from"),
        pytest.param({"end_ms": "soon"}, "to", id="non-numeric-to"),
        pytest.param(
            {"group_by": "hour", "start_ms": T0, "end_ms": T0 + 32 * DAY_MS},
            "group_by",
            id="too-many-hours",
        ),
        pytest.param({"model": "m" * 201}, "model", id="oversized-model"),
        pytest.param({"key_id": ""}, "key", id="empty-key"),
    ],
)
async def test_bad_report_inputs_are_invalid_requests(
    store: SqlStore, call: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await usage_report(store, **call)
    assert raised.value.param == param


@pytest.mark.parametrize(
    ("call", "param"),
    [
        pytest.param({"cursor": "not a cursor!"}, "cursor", id="garbage-cursor"),
        pytest.param({"cursor": "abc"}, "cursor", id="short-base64-cursor"),
        pytest.param({"cursor": encode_cursor(5, "")}, "cursor", id="cursor-without-id"),
        pytest.param({"cursor": "eHl6OmFiYw"}, "cursor", id="cursor-without-time"),  # xyz:abc
        pytest.param({"cursor": "x" * 500}, "cursor", id="long-cursor"),
        pytest.param({"limit": 0}, "limit", id="zero-limit"),
        pytest.param({"limit": MAX_LIMIT + 1}, "limit", id="huge-limit"),
        pytest.param({"limit": True}, "limit", id="boolean-limit"),
        pytest.param({"start_ms": 10, "end_ms": 5}, "from", id="from-after-to"),
        pytest.param({"status": "s" * 41}, "status", id="oversized-status"),
    ],
)
async def test_bad_request_log_inputs_are_invalid_requests(
    store: SqlStore, call: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await request_log(store, **call)
    assert raised.value.param == param


# --- query plans -----------------------------------------------------------------------------


async def test_sqlite_reads_every_filter_through_an_index(store: SqlStore) -> None:
    """No request-log page and no report part scans a whole table on SQLite (PostgreSQL's
    plans depend on its statistics: bench/usage_scale.py records them on 2M rows)."""
    if store.dialect != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    await seed(store)
    engine = store.engine.sync_engine

    async def explain(query: Any, hint: Filters | None = None) -> str:
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        sql = sqlite_hinted(sql, hint) if hint is not None else sql
        async with store.engine.begin() as conn:
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
            return " / ".join(str(row[-1]) for row in rows)

    log_filters: list[tuple[Filters, str | None]] = [
        (Filters(), None),
        (Filters(account_id="acct_one"), None),
        (Filters(key_id="key_x"), None),
        (Filters(model="mini"), None),
        (Filters(), "cancelled"),
        (Filters(key_id="key_x"), "upstream_error"),
        (Filters(account_id="acct_one", model="mini"), "ok"),
    ]
    for filters, status in log_filters:
        for after in (None, (T0 + DAY_MS, "chatcmpl-z")):
            plan_text = await explain(ledger_page_query(filters, status, None, None, after, 51))
            assert "USING INDEX" in plan_text, (filters, status, plan_text)
            assert "USE TEMP B-TREE FOR ORDER BY" not in plan_text, plan_text  # no full sort
    for group_by in ("hour", "day", "model", "key"):
        for filters in (
            Filters(),
            Filters(account_id="a"),
            Filters(key_id="k"),
            Filters(model="m"),
        ):
            for level, start, end in plan(filters, group_by, T0 + HOUR_MS, T0 + 20 * DAY_MS):
                query = report_query(filters, group_by, level, start, end)
                plan_text = await explain(query, filters)
                assert "SEARCH usage_rollups USING" in plan_text, plan_text
                wanted = "PRIMARY KEY" if filters == Filters() else "INDEX usage_rollups_"
                assert wanted in plan_text, (group_by, filters, plan_text)


async def test_postgresql_reads_a_key_and_status_page_through_one_index(store: SqlStore) -> None:
    """Migration 9's partial index answers the request log filtered by key and a status other
    than ``ok`` (on 2M rows PostgreSQL otherwise ANDs two bitmaps and sorts). A few rows give
    the planner no reason to prefer an index, so sequential and bitmap scans are turned off:
    the test shows the index matches the query's words, bench/usage_http.py its speed."""
    if store.dialect != "postgresql":
        pytest.skip("the index is PostgreSQL's")
    rows = await seed(store)
    key_id = rows[0].key_id
    query = ledger_page_query(Filters(key_id=key_id), "upstream_error", None, None, None, 50)
    sql = str(query.compile(store.engine.sync_engine, compile_kwargs={"literal_binds": True}))
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        await conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        plan_text = " / ".join(
            str(row[0]) for row in await conn.exec_driver_sql("EXPLAIN " + sql)
        )
    assert "ledger_key_status_created" in plan_text, plan_text
    page, _ = await request_log(store, key_id=key_id, status="upstream_error", limit=50)
    expected = [r for r in rows if r.key_id == key_id and r.status == "upstream_error"]
    assert sorted(row["request_id"] for row in page) == sorted(r.request_id for r in expected)


async def test_sqlite_reports_do_not_take_the_write_lock(store: SqlStore) -> None:
    """A report and a request-log page are plain reads on SQLite: they run while another
    connection holds the one write lock (the ledger writer's), instead of queueing behind it."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite's write lock")
    rows = await seed(store)
    path = store.engine.url.database
    assert path
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE usage_rollups SET requests = requests + 1000")  # not committed
        views = await usage_report(store, group_by="model")
        assert sum(view["requests"] for view in views) == len(rows)
        page, _ = await request_log(store, limit=5)
        assert len(page) == 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1767225600000", T0, id="unix-ms"),
        pytest.param("2026-01-01", T0, id="date"),
        pytest.param("2026-01-01T01:00:00Z", T0 + HOUR_MS, id="utc-time"),
        pytest.param("2026-01-01T02:00:00+01:00", T0 + HOUR_MS, id="offset"),
        pytest.param("", None, id="empty"),
    ],
)
def test_time_bounds_parse_as_unix_ms_or_iso_8601(value: str, expected: int | None) -> None:
    assert parse_time("from", value) == expected


@pytest.mark.parametrize("value", ["yesterday", "-5", "2026-13-01", "1" * 30, "x" * 100])
def test_bad_time_bounds_are_invalid_requests(value: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_time("to", value)
    assert raised.value.param == "to"


async def test_a_replayed_interrupted_row_counts_under_its_keys_account(store: SqlStore) -> None:
    # the journal's admission record names no account: a replay writes ``interrupted`` rows
    # with account_id "", which used to roll up under account '' until the real row came
    key = await store.create_key(make_key())
    interrupted = row_at(key.id, "", T0 + 5, status="interrupted", cost_micros=400)
    [written] = await store.write_ledger([interrupted])
    assert written.account_id == key.account_id
    [stored] = await store.ledger_rows(key.id)
    assert stored.account_id == key.account_id
    [view] = await usage_report(store, account_id=key.account_id, group_by="model")
    assert (view["requests"], view["cost_micros"]) == (1, 400)
    accounts_held = {cell[2] for cell in await rollup_table(store) if cell[0] == Level.HOUR}
    assert accounts_held == {key.account_id}
    account = await store.get_account(key.account_id)
    assert account is not None
    assert account.used_micros == 400
    page, _ = await request_log(store, account_id=key.account_id, limit=10)
    assert [row["request_id"] for row in page] == [interrupted.request_id]
    # its real row replaces it under the same account; the rollups equal the ledger's
    real = replace(interrupted, status="ok", account_id=key.account_id, cost_micros=900)
    await store.write_ledger([real])
    [view] = await usage_report(store, account_id=key.account_id, group_by="model")
    assert (view["requests"], view["cost_micros"]) == (1, 900)
    account = await store.get_account(key.account_id)
    assert account is not None
    assert account.used_micros == 900
    assert await rollup_table(store) == await rebuilt(store)
