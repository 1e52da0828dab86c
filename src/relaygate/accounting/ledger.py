"""The ledger writer: settled requests are appended in bounded batches, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from relaygate.store.records import LedgerRow
from relaygate.store.sql import SqlStore

log = logging.getLogger("relaygate.ledger")


class LedgerWriter:
    """Buffers ledger rows and writes them every ``flush_seconds`` (or sooner when full).

    Rows that fail to write stay in the buffer and are tried again; the store skips request ids
    it already holds, so a retried batch is never written twice.
    """

    def __init__(self, store: SqlStore, flush_seconds: float, batch_size: int) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.pending: list[LedgerRow] = []
        self.written = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def append(self, row: LedgerRow) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything pending, one batch at a time."""
        while self.pending:
            batch = self.pending[: self.batch_size]
            try:
                self.written += await self.store.write_ledger(batch)
            except Exception:
                log.exception("ledger write failed; %d rows kept for the next try", len(batch))
                return
            del self.pending[: len(batch)]

    async def close(self) -> None:
        """Stop the background task and write what is left."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
