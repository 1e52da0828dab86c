"""The ledger writer: what one flush writes, and draining at start and stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaygate.accounting.ledger import LedgerWriter
from relaygate.store.records import LedgerRow
from relaygate.store.sql import SqlStore


def _row(n: int) -> LedgerRow:
    return LedgerRow(
        request_id=f"req-{n}",
        key_id="key-1",
        model="m",
        upstream="u",
        upstream_model="m",
        created_at=n,
        status="ok",
        cost_micros=1,
        latency_ms=1,
        stream=False,
    )


class HeldStore(SqlStore):
    """A real SQLite store whose ledger writes wait until the test lets them through."""

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self.batches: list[int] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def write_ledger(self, rows: list[LedgerRow]) -> list[LedgerRow]:
        self.batches.append(len(rows))
        self.entered.set()
        await self.release.wait()
        return await super().write_ledger(rows)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[HeldStore]:
    held = HeldStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    await held.upgrade()
    yield held
    await held.close()


async def test_a_flush_writes_the_rows_pending_when_it_began(store: HeldStore) -> None:
    """Rows settled during a write wait for the next flush. A flush that drained until empty
    never ended under steady load, and wrote a few rows per transaction."""
    writer = LedgerWriter(store, flush_seconds=60, batch_size=100)
    for n in range(3):
        writer.append(_row(n))
    flushing = asyncio.create_task(writer.flush())
    await store.entered.wait()
    for n in range(3, 8):
        writer.append(_row(n))
    store.release.set()
    assert await flushing
    assert store.batches == [3]
    assert [row.request_id for row in writer.pending] == [f"req-{n}" for n in range(3, 8)]
    assert await writer.flush()
    assert store.batches == [3, 5]
    assert writer.pending == []
    assert writer.written == 8


async def test_a_flush_splits_its_rows_into_batches(store: HeldStore) -> None:
    store.release.set()
    writer = LedgerWriter(store, flush_seconds=60, batch_size=4)
    for n in range(10):
        writer.append(_row(n))
    assert await writer.flush()
    assert store.batches == [4, 4, 2]
    assert len(await store.ledger_rows("key-1")) == 10


async def test_close_writes_rows_settled_while_it_writes(store: HeldStore) -> None:
    """Stopping drains: rows that arrive during the last write are written too."""
    writer = LedgerWriter(store, flush_seconds=60, batch_size=100)
    writer.append(_row(0))
    closing = asyncio.create_task(writer.close())
    await store.entered.wait()
    writer.append(_row(1))
    store.release.set()
    await closing
    assert store.batches == [1, 1]
    assert writer.pending == []
    assert len(await store.ledger_rows("key-1")) == 2


async def test_a_full_batch_is_written_at_once_and_the_rest_waits_for_the_tick(
    store: HeldStore,
) -> None:
    """A full buffer wakes the writer early; the rows past the last full batch are not written
    as a transaction of their own (one per early wake-up doubled the transactions), but at the
    next tick, or at close."""
    writer = LedgerWriter(store, flush_seconds=60, batch_size=4)
    store.release.set()
    await writer.start()
    for n in range(6):
        writer.append(_row(n))
    await store.entered.wait()
    async with writer._lock:  # the early flush is over
        assert store.batches == [4]
        assert [row.request_id for row in writer.pending] == ["req-4", "req-5"]
    await writer.close()
    assert store.batches == [4, 2]
    assert len(await store.ledger_rows("key-1")) == 6


async def test_a_flush_of_whole_batches_leaves_the_rest_pending(store: HeldStore) -> None:
    store.release.set()
    writer = LedgerWriter(store, flush_seconds=60, batch_size=4)
    for n in range(10):
        writer.append(_row(n))
    assert await writer.flush(whole_batches=True)
    assert store.batches == [4, 4]
    assert len(writer.pending) == 2
    assert await writer.flush()
    assert store.batches == [4, 4, 2]
