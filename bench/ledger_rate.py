"""Ledger rows per second into PostgreSQL: what the ledger writers of N worker processes
sustain, with the journal on, and how the pending-row queue behaves when offered more.

    python -m bench.ledger_rate [--workers 4] [--seconds 10] [--database-url URL]

Each worker is a process with its own :class:`relaygate.accounting.ledger.LedgerWriter` and
journal (``journal_fsync: everysec``), as ``relaygate serve --workers N`` has, and its own API
key (rows of one key all update that key's row: a hot key is a different measure). Phase 1
appends rows as fast as the writer takes them (a producer that waits while the queue is past
one batch), for ``--seconds``: the rows committed per second, summed over the workers, is the
sustained rate. Phase 2 offers twice that rate, open loop, with ``ledger_max_pending`` as in
the settings (``--max-pending``): it reports the queue's length every second, its peak, and the
appends the gateway would refuse (503, ``check_capacity``) once the queue is full.

It writes ``results/ledger_rate.json``. The database (default ``relaygate_ledger_rate`` on
127.0.0.1:5432) is created if missing and migrated with ``SqlStore.upgrade``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from relaygate.accounting.journal import Journal
from relaygate.accounting.journal_format import store_fingerprint
from relaygate.accounting.ledger import LedgerWriter
from relaygate.errors import ServiceUnavailable
from relaygate.store.records import KeyRecord, LedgerRow
from relaygate.store.sql import SqlStore


def _row(key_id: str) -> LedgerRow:
    return LedgerRow(
        request_id=uuid.uuid4().hex,
        key_id=key_id,
        model="bench-0ms",
        upstream="openai",
        upstream_model="bench-0ms",
        created_at=int(time.time() * 1000),
        status="ok",
        cost_micros=1505,
        latency_ms=2,
        stream=True,
        prompt_tokens=12,
        completion_tokens=100,
        input_cost_micros=105,
        output_cost_micros=1400,
    )


async def _worker(url: str, rate: float, seconds: float, max_pending: int) -> dict[str, Any]:
    """One worker's writer: appends at ``rate`` rows/s (0: as fast as it takes them)."""
    store = SqlStore(url)
    key = await store.create_key(
        KeyRecord(
            id=f"key_{uuid.uuid4().hex[:8]}",
            name="ledger-rate",
            key_hash=uuid.uuid4().hex,
            prefix="sk-x",
            created_at=int(time.time()),
            granted_micros=10**15,
        )
    )
    with tempfile.TemporaryDirectory(prefix="relaygate-ledger-rate-") as tmp:
        journal = Journal(Path(tmp), "everysec", store=store_fingerprint(url))
        ledger = LedgerWriter(store, 0.2, 512, max_pending=max_pending, journal=journal)
        await ledger.start()
        start = time.monotonic()
        written_before = ledger.appended - len(ledger.pending)
        refused = appended = 0
        queue: list[int] = []
        next_sample = start + 1
        while (now := time.monotonic()) < start + seconds:
            if rate:
                due = int((now - start) * rate) - appended - refused
                for _ in range(due):
                    try:
                        ledger.check_capacity()
                    except ServiceUnavailable:
                        refused += 1
                        continue
                    ledger.append(_row(key.id))
                    appended += 1
                await asyncio.sleep(0.002)
            elif len(ledger.pending) < ledger.batch_size * 2:
                for _ in range(64):
                    ledger.append(_row(key.id))
                    appended += 1
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.001)
            if now >= next_sample:
                queue.append(len(ledger.pending))
                next_sample += 1
        elapsed = time.monotonic() - start
        written = ledger.appended - len(ledger.pending) - written_before
        backlog = len(ledger.pending)
        await ledger.close()
    await store.close()
    return {
        "appended": appended,
        "written": written,
        "rows_per_second": written / elapsed,
        "refused": refused,
        "queue_each_second": queue,
        "backlog_at_end": backlog,
    }


def _run_worker(args: tuple[str, float, float, int]) -> dict[str, Any]:
    return asyncio.run(_worker(*args))


def _phase(url: str, workers: int, rate: float, seconds: float, max_pending: int) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        rows = pool.map(_run_worker, [(url, rate, seconds, max_pending)] * workers)
    return {
        "rows_per_second": sum(r["rows_per_second"] for r in rows),
        "refused": sum(r["refused"] for r in rows),
        "peak_queue": max(max(r["queue_each_second"] or [0]) for r in rows),
        "backlog_at_end": sum(r["backlog_at_end"] for r in rows),
        "workers": rows,
    }


async def _prepare(url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    admin = url.rsplit("/", 1)[0] + "/postgres"
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(admin.replace("postgresql+asyncpg", "postgresql"))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    store = SqlStore(url)
    await store.upgrade()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--max-pending", type=int, default=100_000)
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/relaygate_ledger_rate"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    asyncio.run(_prepare(args.database_url))
    sustained = _phase(args.database_url, args.workers, 0, args.seconds, args.max_pending)
    print(f"sustained: {sustained['rows_per_second']:.0f} ledger rows/s, {args.workers} workers")
    offered = 2 * sustained["rows_per_second"]
    over = _phase(
        args.database_url, args.workers, offered / args.workers, args.seconds, args.max_pending
    )
    print(
        f"offered {offered:.0f} rows/s: written {over['rows_per_second']:.0f} rows/s, queue peak"
        f" {over['peak_queue']} per worker (bound {args.max_pending}), backlog at end"
        f" {over['backlog_at_end']}, refused {over['refused']}"
    )
    result = {"workers": args.workers, "sustained": sustained, "offered": offered, "over": over}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ledger_rate.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
