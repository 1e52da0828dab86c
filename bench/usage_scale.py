"""Usage at scale: seed a large ledger, then time the usage report and the request log.

    python -m bench.usage_scale [--rows 2000000] [--runs 50] [--backends sqlite,postgresql]
                                [--sqlite-path /tmp/relaygate-usage-scale.db]
                                [--postgres-url postgresql://postgres@127.0.0.1:5432/...]

Seeds ``--rows`` ledger rows (~50 accounts, ~500 keys, ~10 models over 90 days; keys, accounts
and models drawn with skewed weights, a daily rhythm, a few percent of statuses other than
``ok``) in bulk (SQLite: executemany; PostgreSQL: COPY), builds the rollups with the code that
back-fills them in migration 7, then times ``usage_report`` (each ``group_by``, with and without
an account, key or model filter, over 90 days and over 30 days with bounds inside hours) and
``request_log`` (the first page and a page 45 days deep, each filter), ``--runs`` times each,
after warm-up runs. A database that already holds the rows is not seeded again.

Writes ``bench/results/usage_scale.json``: p50/p95 in milliseconds per query and backend, the
query plans (EXPLAIN) of every request-log filter and report part, the seed's timings, and the
rollup maintenance's own cost (Python per row, the upsert per batch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from relaygate.accounts.usage import encode_cursor, request_log, usage_report
from relaygate.store import LedgerRow, SqlStore
from relaygate.store.rollups import (
    DAY_MS,
    HOUR_MS,
    Level,
    rebuild_rollups,
    rollup_cells,
    upsert_cells,
)
from relaygate.store.schema import ledger, usage_rollups
from relaygate.store.usage_sql import (
    Filters,
    ledger_page_query,
    plan,
    report_query,
    sqlite_hinted,
)

ROOT = Path(__file__).resolve().parent.parent
END_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z: the seeded ledger ends here
DAYS = 90
DEEP_AFTER = (END_MS - 45 * DAY_MS, "chatcmpl-zzzz")  # the request log's deep page starts here
FIELDS = tuple(column.name for column in ledger.columns)
MODELS = (  # name, input, cached input, output (USD per 1M tokens), reasons
    ("gpt-5.2", 1.75, 0.175, 14.0, True),
    ("gpt-5-mini", 0.25, 0.025, 2.0, True),
    ("gpt-4.1", 2.0, 0.5, 8.0, False),
    ("claude-sonnet-4.5", 3.0, 0.3, 15.0, True),
    ("gemini-2.5-flash", 0.3, 0.075, 2.5, True),
    ("gpt-5.5", 5.0, 0.5, 30.0, True),
    ("claude-haiku-4.5", 1.0, 0.1, 5.0, False),
    ("gemini-2.5-pro", 1.25, 0.31, 10.0, True),
    ("gpt-4.1-nano", 0.1, 0.025, 0.4, False),
    ("o4-mini", 1.1, 0.275, 4.4, True),
)
STATUSES = (
    ("ok", 0.96),
    ("client_disconnected", 0.02),
    ("upstream_error", 0.01),
    ("cancelled", 0.007),
    ("interrupted", 0.003),
)
HOURLY = [0.4, 0.3, 0.25, 0.25, 0.3, 0.4, 0.6, 0.9, 1.2, 1.4, 1.5, 1.5]
HOURLY += [1.4, 1.5, 1.5, 1.4, 1.3, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5]


class Population:
    """Who sends the requests: keys in accounts, each key with a few models it uses."""

    def __init__(self, rng: random.Random, accounts: int = 50, keys: int = 500) -> None:
        account_weights = [1 / (rank + 1) ** 0.8 for rank in range(accounts)]
        key_weights = [1 / (rank + 1) ** 1.1 for rank in range(keys)]
        rng.shuffle(key_weights)
        self.key_ids = [f"key_{rng.getrandbits(64):016x}" for _ in range(keys)]
        self.account_of = {
            key: f"acct_{rng.choices(range(accounts), account_weights)[0]:04d}"
            for key in self.key_ids
        }
        self.key_cum = _cumulative(key_weights)
        popularity = [1 / (rank + 1) for rank in range(len(MODELS))]
        self.models_of = {
            key: sorted(set(rng.choices(range(len(MODELS)), popularity, k=rng.randint(1, 4))))
            for key in self.key_ids
        }


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _micros(tokens: int, usd_per_million: float) -> int:
    return -(-round(tokens * usd_per_million * 1_000_000) // 1_000_000)


def generate(rows: int, seed: int = 12) -> Iterator[tuple[Any, ...]]:
    """``rows`` ledger rows (tuples in the ledger's column order), deterministic for a seed."""
    rng = random.Random(seed)
    people = Population(rng)
    status_names = [name for name, _ in STATUSES]
    status_cum = _cumulative([share for _, share in STATUSES])
    hour_cum = _cumulative(HOURLY)
    start_ms = END_MS - DAYS * DAY_MS
    for i in range(rows):
        key = rng.choices(people.key_ids, cum_weights=people.key_cum)[0]
        name, p_in, p_cached, p_out, reasons = MODELS[rng.choice(people.models_of[key])]
        day = rng.randrange(DAYS)
        hour = rng.choices(range(24), cum_weights=hour_cum)[0]
        created_at = start_ms + day * DAY_MS + hour * HOUR_MS + rng.randrange(HOUR_MS)
        status = rng.choices(status_names, cum_weights=status_cum)[0]
        prompt = int(rng.lognormvariate(6.5, 1.0)) + 10
        cached = prompt // 2 if rng.random() < 0.3 else 0
        completion = 0 if status == "interrupted" else int(rng.lognormvariate(5.5, 1.0))
        reasoning = completion // 3 if reasons else 0
        parts = (
            _micros(prompt - cached, p_in),
            _micros(cached, p_cached),
            _micros(completion - reasoning, p_out),
            _micros(reasoning, p_out),
        )
        values = {
            "request_id": f"chatcmpl-{seed:02d}{i:010d}{rng.getrandbits(24):06x}",
            "key_id": key,
            "model": name,
            "upstream": "openai" if status != "interrupted" else "",
            "upstream_model": name if status != "interrupted" else "",
            "created_at": created_at,
            "status": status,
            "stream": rng.random() < 0.6,
            "latency_ms": int(rng.lognormvariate(7.0, 0.6)),
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "completion_tokens": completion,
            "reasoning_tokens": reasoning,
            "image_tokens": 0,
            "prompt_audio_tokens": 0,
            "completion_audio_tokens": 0,
            "cost_micros": sum(parts),
            "account_id": people.account_of[key],
            "input_cost_micros": parts[0],
            "cached_cost_micros": parts[1],
            "output_cost_micros": parts[2],
            "reasoning_cost_micros": parts[3],
        }
        yield tuple(values[field] for field in FIELDS)


def _chunks(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- seeding ---------------------------------------------------------------------------------


async def ledger_count(store: SqlStore) -> int:
    async with store.engine.begin() as conn:
        return int((await conn.execute(select(func.count()).select_from(ledger))).scalar_one())


def _seed_sqlite(path: str, rows: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-2000000")  # 2 GB: the indexes' pages stay in memory
    db.execute("BEGIN")
    db.execute("DELETE FROM ledger")
    sql = f"INSERT INTO ledger ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})"
    for chunk in _chunks(generate(rows), 100_000):
        db.executemany(sql, chunk)
    db.execute("COMMIT")  # no ANALYZE: relaygate never runs one, so the plans are as deployed
    db.close()


async def _seed_postgres(url: str, rows: int) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute("TRUNCATE ledger")
        for chunk in _chunks(generate(rows), 100_000):
            await conn.copy_records_to_table("ledger", records=chunk, columns=list(FIELDS))
        await conn.execute("VACUUM ANALYZE ledger")
    finally:
        await conn.close()


async def _create_postgres_database(url: str) -> None:
    parsed = make_url(url)
    admin = await asyncpg.connect(
        parsed.set(drivername="postgresql", database="test").render_as_string(False)
    )
    try:
        exists = await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", parsed.database
        )
        if not exists:
            await admin.execute(f'CREATE DATABASE "{parsed.database}"')
    finally:
        await admin.close()


async def seed(store: SqlStore, rows: int) -> dict[str, Any]:
    """Bring the database to ``rows`` ledger rows and their rollups (skipped when there)."""
    if store.dialect == "postgresql":
        await _create_postgres_database(store.database_url)
    await store.upgrade()
    held = await ledger_count(store)
    if held == rows:
        if await rollups_complete(store, rows):
            return {"seeded": False, "ledger_rows": held}
        return {"seeded": False, "ledger_rows": held, **await _backfill(store)}
    began = time.perf_counter()
    if store.dialect == "sqlite":
        path = make_url(store.database_url).database
        assert path
        await asyncio.to_thread(_seed_sqlite, path, rows)
    else:
        await _seed_postgres(store.database_url, rows)
    inserted = time.perf_counter() - began
    return {
        "seeded": True,
        "ledger_rows": await ledger_count(store),
        "insert_seconds": round(inserted, 1),
        **await _backfill(store),
    }


async def _backfill(store: SqlStore) -> dict[str, float]:
    """Build the rollups from the ledger with migration 7's back-fill."""
    began = time.perf_counter()
    async with store.engine.begin() as conn:
        await conn.run_sync(rebuild_rollups)
    path = make_url(store.database_url).database
    if store.dialect == "sqlite" and path:  # fold the WAL into the database, as a quiet hour would
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    return {"rollup_backfill_seconds": round(time.perf_counter() - began, 1)}


async def rollups_complete(store: SqlStore, rows: int) -> bool:
    """Whether every rollup level counts ``rows`` requests (a level added since the seed, or
    an interrupted back-fill, makes it False)."""
    r = usage_rollups.c
    async with store.engine.begin() as conn:
        found = await conn.execute(select(r.level, func.sum(r.requests)).group_by(r.level))
        totals = {int(level): int(total) for level, total in found}
    return totals == dict.fromkeys(map(int, Level), rows)


async def rollup_rows(store: SqlStore) -> dict[int, int]:
    r = usage_rollups.c
    async with store.engine.begin() as conn:
        found = await conn.execute(select(r.level, func.count()).group_by(r.level))
        return {int(level): int(count) for level, count in found}


# --- measuring -------------------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> dict[str, Any]:
    for _ in range(3):
        result = await call()
    samples = []
    encode = []
    for _ in range(runs):
        began = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        json.dumps(result)
        encode.append((time.perf_counter() - began) * 1000)
    samples.sort()
    items = result[0] if isinstance(result, tuple) else result
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[math.ceil(len(samples) * 0.95) - 1], 2),  # nearest rank
        "max_ms": round(samples[-1], 2),
        "json_encode_p50_ms": round(statistics.median(encode), 3),
        "items": len(items),
    }


async def busiest(store: SqlStore) -> dict[str, str]:
    """The account, key and model with the most requests (the heaviest filters)."""
    r = usage_rollups.c
    found = {}
    async with store.engine.begin() as conn:
        for name, column, level in (
            ("account_id", r.account_id, 2),
            ("key_id", r.key_id, 2),
            ("model", r.model, 4),
        ):
            query = (
                select(column)
                .where(r.level == level)
                .group_by(column)
                .order_by(func.sum(r.requests).desc())
                .limit(1)
            )
            found[name] = str((await conn.execute(query)).scalar_one())
    return found


def report_ranges() -> dict[str, dict[str, tuple[int, int]]]:
    """The report matrix: ``{group_by: {range name: (start_ms, end_ms)}}`` (bench.usage_http
    times the same over HTTP)."""
    long = (END_MS - DAYS * DAY_MS, END_MS)
    inside = (END_MS - 30 * DAY_MS + 17 * 60_000, END_MS - HOUR_MS - 3 * 60_000)
    ranges = {  # group_by=hour covers at most 31 days
        "hour": {
            "7d-inside-hours": (END_MS - 7 * DAY_MS + 17 * 60_000, END_MS - 3 * 60_000),
            "31d": (END_MS - 31 * DAY_MS, END_MS),
        },
        "day": {"90d": long, "30d-inside-hours": inside},
        "model": {"90d": long, "30d-inside-hours": inside},
        "key": {"90d": long, "30d-inside-hours": inside},
    }
    return ranges


async def measure_reports(store: SqlStore, heavy: dict[str, str], runs: int) -> dict[str, Any]:
    results = {}
    for group_by, spans in report_ranges().items():
        for range_name, (start, end) in spans.items():
            for filter_name in ("none", "account_id", "key_id", "model"):
                filters = {} if filter_name == "none" else {filter_name: heavy[filter_name]}
                name = f"{range_name} group_by={group_by} filter={filter_name}"

                def call(
                    g: str = group_by, f: dict[str, str] = filters, a: int = start, b: int = end
                ) -> Awaitable[Any]:
                    return usage_report(store, start_ms=a, end_ms=b, group_by=g, **f)

                results[name] = await timed(call, runs)
                print(store.dialect, name, results[name], flush=True)
    return results


def log_filters(heavy: dict[str, str]) -> dict[str, dict[str, str]]:
    return {
        "none": {},
        "account": {"account_id": heavy["account_id"]},
        "key": {"key_id": heavy["key_id"]},
        "model": {"model": heavy["model"]},
        "status=ok": {"status": "ok"},
        "status=cancelled": {"status": "cancelled"},
        "key+status=upstream_error": {"key_id": heavy["key_id"], "status": "upstream_error"},
        "account+model": {"account_id": heavy["account_id"], "model": heavy["model"]},
    }


async def measure_log(store: SqlStore, heavy: dict[str, str], runs: int) -> dict[str, Any]:
    deep = encode_cursor(*DEEP_AFTER)
    results = {}
    for filter_name, filters in log_filters(heavy).items():
        for page, cursor, limit in (
            ("first", None, 50),
            ("deep", deep, 50),
            ("first500", None, 500),
        ):
            if page == "first500" and filter_name != "none":
                continue
            name = f"{page} page limit={limit} filter={filter_name}"

            def call(c: str | None = cursor, n: int = limit, f: dict[str, str] = filters) -> Any:
                return request_log(store, limit=n, cursor=c, **f)

            results[name] = await timed(call, runs)
            print(store.dialect, name, results[name], flush=True)
    return results


def _compiled(store: SqlStore, query: Any) -> str:
    return str(query.compile(store.engine.sync_engine, compile_kwargs={"literal_binds": True}))


async def explain(store: SqlStore, query: Any, filters: Filters | None = None) -> list[str]:
    sql = _compiled(store, query)
    if store.dialect == "sqlite" and filters is not None:
        sql = sqlite_hinted(sql, filters)
    prefix = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
    async with store.engine.begin() as conn:
        rows = await conn.exec_driver_sql(prefix + sql)
        return [str(row[-1]) for row in rows]


async def plans(store: SqlStore, heavy: dict[str, str]) -> dict[str, list[str]]:
    """EXPLAIN of every request-log filter (first and deep page) and every report part."""
    found: dict[str, list[str]] = {}
    for filter_name, filters in log_filters(heavy).items():
        for page, after in (("first", None), ("deep", DEEP_AFTER)):
            query = ledger_page_query(
                Filters(filters.get("account_id"), filters.get("key_id"), filters.get("model")),
                filters.get("status"),
                None,
                None,
                after,
                51,
            )
            found[f"request_log {page} filter={filter_name}"] = await explain(store, query)
    start, end = END_MS - 30 * DAY_MS + 17 * 60_000, END_MS - HOUR_MS - 3 * 60_000
    start, end = start - start % HOUR_MS, -(-end // HOUR_MS) * HOUR_MS
    for group_by in ("hour", "day", "model", "key"):
        for filter_name in ("none", "account_id", "key_id", "model"):
            filters = Filters(
                **({} if filter_name == "none" else {filter_name: heavy[filter_name]})
            )
            for level, a, b in plan(filters, group_by, start, end):
                query = report_query(filters, group_by, level, a, b)
                name = f"report group_by={group_by} filter={filter_name} level={level.name}"
                found[name] = await explain(store, query, filters)
    return found


def _batch(seed: int, **fixed: Any) -> list[LedgerRow]:
    """512 rows as one ledger batch holds them: written within 0.2 s (one hour), keys and
    models drawn as in the seed; ``fixed`` overrides columns (one key, say)."""
    rows = []
    for i, values in enumerate(generate(512, seed=seed)):
        row = dict(zip(FIELDS, values, strict=True))
        row.update(created_at=END_MS + 1000 + i % 200, **fixed)
        rows.append(LedgerRow(**row))
    return rows


async def rollup_cost(store: SqlStore) -> dict[str, Any]:
    """The rollups' share of a ledger write: Python per row, and the upsert of one batch of
    512 rows (in a transaction rolled back, so the data stay as seeded)."""
    batches = {
        "spread_keys_and_models": _batch(99),
        "one_key_one_model": _batch(98, key_id="key_bench", account_id="acct_bench", model="m"),
    }
    found = {}
    for name, rows in batches.items():
        spent = []
        for _ in range(20):  # the fastest run: the code's own cost, without the machine's noise
            began = time.perf_counter()
            cells = rollup_cells(rows)
            spent.append(time.perf_counter() - began)
        python_us = min(spent) / len(rows) * 1e6
        new_cells, held_cells = [], []
        for _ in range(10):
            async with store.engine.connect() as conn:
                transaction = await conn.begin()
                began = time.perf_counter()
                await upsert_cells(conn, store.dialect, cells)  # the hour's first batch
                middle = time.perf_counter()
                await upsert_cells(conn, store.dialect, cells)  # a later one: rows exist
                new_cells.append((middle - began) * 1000)
                held_cells.append((time.perf_counter() - middle) * 1000)
                await transaction.rollback()
        found[name] = {
            "rows": len(rows),
            "cells": len(cells),
            "python_us_per_row": round(python_us, 2),
            "upsert_new_cells_p50_ms": round(statistics.median(new_cells), 2),
            "upsert_existing_cells_p50_ms": round(statistics.median(held_cells), 2),
        }
    return found


async def run_backend(url: str, rows: int, runs: int) -> dict[str, Any]:
    store = SqlStore(url)
    try:
        seeded = await seed(store, rows)
        print(store.dialect, seeded, flush=True)
        if runs == 0:
            return {"seed": seeded}
        heavy = await busiest(store)
        result: dict[str, Any] = {
            "seed": seeded,
            "rollup_rows_by_level": await rollup_rows(store),
            "heaviest_filters": heavy,
            "usage_report": await measure_reports(store, heavy, runs),
            "request_log": await measure_log(store, heavy, runs),
            "rollup_write_cost": await rollup_cost(store),
            "plans": await plans(store, heavy),
        }
        return result
    finally:
        await store.close()


async def _write_cost_only(urls: dict[str, str], backends: list[str], out: Path) -> None:
    results = json.loads(out.read_text())
    for backend in backends:
        store = SqlStore(urls[backend])
        try:
            results["backends"][backend]["rollup_write_cost"] = await rollup_cost(store)
        finally:
            await store.close()
        print(backend, results["backends"][backend]["rollup_write_cost"], flush=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--sqlite-path", default=str(Path(tempfile.gettempdir()) / "relaygate-usage-scale.db")
    )
    parser.add_argument(
        "--postgres-url", default="postgresql://postgres@127.0.0.1:5432/relaygate_usage_scale"
    )
    parser.add_argument("--seed-only", action="store_true", help="Seed, measure nothing.")
    parser.add_argument(
        "--write-cost-only",
        action="store_true",
        help="Measure only the rollups' cost per ledger batch, into the existing results.",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "usage_scale.json"))
    args = parser.parse_args()
    urls = {"sqlite": f"sqlite:///{args.sqlite_path}", "postgresql": args.postgres_url}
    out: dict[str, Any] = {
        "rows": args.rows,
        "runs": args.runs,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "backends": {},
    }
    if args.write_cost_only:
        asyncio.run(_write_cost_only(urls, args.backends.split(","), Path(args.out)))
        return
    runs = 0 if args.seed_only else args.runs
    for backend in args.backends.split(","):
        out["backends"][backend] = asyncio.run(run_backend(urls[backend], args.rows, runs))
    if args.seed_only:
        return
    out["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
