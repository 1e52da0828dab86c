"""The ledger writer: settled requests are appended in bounded batches, off the request path.

When the store cannot be reached, rows stay in memory and are retried; the store skips request
ids it already holds, so a retried batch is never written twice. The buffer is bounded: past
``max_pending`` rows, new requests are refused (503) until the store is back. Rows still unwritten
when the process stops are spilled to a JSON-lines file, which the next start loads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from relaygate.errors import ServiceUnavailable
from relaygate.store.records import LedgerRow
from relaygate.store.sql import SqlStore

log = logging.getLogger("relaygate.ledger")

Written = Callable[[Sequence[LedgerRow]], Awaitable[None]]


async def _nothing(rows: Sequence[LedgerRow]) -> None:
    return None


class LedgerWriter:
    """Buffers ledger rows and writes them every ``flush_seconds`` (or sooner when full)."""

    def __init__(
        self,
        store: SqlStore,
        flush_seconds: float,
        batch_size: int,
        max_pending: int = 100_000,
        spill_path: Path | None = None,
    ) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.spill_path = spill_path
        self.pending: list[LedgerRow] = []
        self.written = 0
        self.failing = False
        self.on_written: Written = _nothing
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()

    def append(self, row: LedgerRow) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.batch_size:
            self._wake.set()

    def check_capacity(self) -> None:
        """Refuse new work while the buffer of unwritten rows is full (503)."""
        if len(self.pending) >= self.max_pending:
            raise ServiceUnavailable(
                "Service temporarily unavailable: the ledger store cannot be reached and its"
                " buffer is full"
            )

    async def start(self) -> None:
        """Write rows spilled by an earlier process first (so key balances loaded after this
        include them), then flush in the background."""
        self._load_spill()
        if not await self.drain():
            raise RuntimeError("cannot write the spilled ledger rows: the store is unreachable")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write the rows pending now, one batch at a time; False if the store failed.

        Rows appended while it writes wait for the next flush: under steady load, a flush that
        drained until empty never ended, and wrote a transaction of a few rows every few
        milliseconds instead of one batch every ``flush_seconds``."""
        async with self._lock:
            left = len(self.pending)
            while left:
                batch = self.pending[: min(self.batch_size, left)]
                try:
                    self.written += await self.store.write_ledger(batch)
                except Exception as exc:
                    if not self.failing:
                        log.error(
                            "ledger write failed (%s); %d rows kept for the next try",
                            type(exc).__name__,
                            len(self.pending),
                        )
                    self.failing = True
                    return False
                if self.failing:
                    log.warning("ledger store is back; writing %d kept rows", len(self.pending))
                self.failing = False
                del self.pending[: len(batch)]
                left -= len(batch)
                try:
                    await self.on_written(batch)
                except Exception:
                    log.exception("after-write hook failed")
            return True

    async def drain(self) -> bool:
        """Write until nothing is pending; False if the store failed."""
        while self.pending:
            if not await self.flush():
                return False
        return True

    async def close(self, attempts: int = 3) -> None:
        """Stop the background task and write what is left (spilling it if the store is down)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for attempt in range(attempts):
            if await self.drain():
                return
            await asyncio.sleep(0.2 * (attempt + 1))
        self._spill()

    def _spill(self) -> None:
        if not self.pending:
            return
        if self.spill_path is None:
            log.error("ledger store unreachable at shutdown: %d rows lost", len(self.pending))
            return
        with self.spill_path.open("a", encoding="utf-8") as out:
            for row in self.pending:
                out.write(json.dumps(asdict(row)) + "\n")
        log.error(
            "ledger store unreachable at shutdown: %d rows spilled to %s",
            len(self.pending),
            self.spill_path,
        )
        self.pending.clear()

    def _load_spill(self) -> None:
        if self.spill_path is None or not self.spill_path.exists():
            return
        rows = [
            LedgerRow(**json.loads(line))
            for line in self.spill_path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        self.pending[:0] = rows
        self.spill_path.unlink()
        log.warning("loaded %d spilled ledger rows from %s", len(rows), self.spill_path)
