"""The ledger writer: settled requests are appended in bounded batches, off the request path.

Each row is first written to the journal (:mod:`relaygate.accounting.journal`), before its
response ends: a killed process forgets nothing, and the next start replays what the store does
not hold yet. When the store cannot be reached, rows stay in memory (and in the journal) and are
retried; the store skips request ids it already holds, so a retried batch is never written
twice. The buffer is bounded: past ``max_pending`` rows, new requests are refused (503) until
the store is back. Rows still unwritten when the process stops stay in its journal, which the
next start writes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from relaygate.accounting.journal import AdmittedValues, Journal
from relaygate.accounting.journal_format import Recovered
from relaygate.errors import ServiceUnavailable
from relaygate.outage import Outage
from relaygate.store.records import LedgerRow
from relaygate.store.sql import SqlStore

log = logging.getLogger("relaygate.ledger")

ORPHAN_SECONDS = 60.0
"""How often the writer looks for journal files that no live process holds."""

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
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.spill_path = spill_path
        """Deprecated: a spill file left by an earlier version is still written at start."""
        self.journal = journal
        self.pending: list[LedgerRow] = []
        self.written = 0
        self.appended = 0
        """Rows appended so far; ``appended - len(pending)`` of them are in the store."""
        self.outage = Outage(log, "ledger store")
        """The store's outage: its first failure, a count a minute, and its end are logged."""
        self.on_written: Written = _nothing
        """Called with the rows newly written to the store (not those it already held)."""
        self._unjournaled: dict[str, LedgerRow] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()

    def append(self, row: LedgerRow, values: tuple[Any, ...] | None = None) -> None:
        """Queue ``row`` for the store, having written it to the journal (``values``: its
        field values in order, when the caller has them: :meth:`Journal.settled`)."""
        if self.journal is not None:
            try:
                self.journal.settled(row, values)
            except OSError as exc:
                self._journal_failed(row, exc)
        self.pending.append(row)
        self.appended += 1
        if len(self.pending) >= self.batch_size:
            self._wake.set()

    def durable(self) -> asyncio.Future[None] | None:
        """With ``journal_fsync: always``, what to await before the response ends (the rows
        appended so far on disk); None otherwise."""
        return self.journal.durable() if self.journal is not None else None

    def _journal_failed(self, row: LedgerRow, exc: OSError) -> None:
        self._unjournaled[row.request_id] = row
        assert self.journal is not None
        self.journal.failures += 1
        if self.journal.failures == 1 or self.journal.failures % 1000 == 0:
            log.error(
                "journal write failed (%s): %d rows at risk until the store holds them",
                exc,
                len(self._unjournaled),
            )

    def admitted(
        self,
        request_id: str,
        key_id: str,
        model: str,
        stream: bool,
        prompt_tokens: int,
        cost: int,
        api: str = "chat",
    ) -> None:
        """A request was admitted: the prompt estimate (``cost``) is its charge if the process
        dies before it settles (a row of ``api``)."""
        if self.journal is not None:
            created = int(time.time() * 1000)
            self.admitted_values(
                (request_id, key_id, model, created, stream, prompt_tokens, cost, api)
            )

    def admitted_values(self, values: AdmittedValues) -> None:
        """:meth:`admitted` with the journal's admission record as one tuple (the request
        path's form: the fields are not passed on one by one)."""
        journal = self.journal
        if journal is not None:
            try:
                journal.admitted_values(values)
            except OSError as exc:
                journal.failures += 1
                if journal.failures == 1:
                    log.error("journal write failed (%s) for an admitted request", exc)

    def cancelled(self, request_id: str) -> None:
        if self.journal is not None:
            with contextlib.suppress(OSError):
                self.journal.cancelled(request_id)

    def check_capacity(self) -> None:
        """Refuse new work while the buffer of unwritten rows is full (503)."""
        if len(self.pending) >= self.max_pending:
            raise ServiceUnavailable(
                "Service temporarily unavailable: the ledger store cannot be reached and its"
                " buffer is full"
            )

    async def start(self) -> None:
        """Write the rows earlier processes left in their journals (and a spill file of an
        earlier version) first, so key balances loaded after this include them; then open this
        process's journal and flush in the background."""
        recovered: Recovered | None = Recovered()
        if self.journal is not None:
            recovered = await asyncio.to_thread(self.journal.recover)  # waits for its lock
        assert recovered is not None
        spilled = self._load_spill()
        self.pending[:0] = recovered.rows + spilled
        if recovered.skipped:
            log.warning(
                "journal: %d torn or unreadable records skipped in %s",
                recovered.skipped,
                self.journal.directory if self.journal else "",
            )
        if not await self.drain():
            Journal.release(recovered)
            raise RuntimeError("cannot write the journaled ledger rows: the store is unreachable")
        if recovered.files:
            log.warning(
                "journal: replayed %d rows (%d of requests interrupted by a crash, charged their"
                " prompt estimate) from %d files",
                len(recovered.rows),
                recovered.interrupted,
                len(recovered.files),
            )
        Journal.discard(recovered)
        if self.journal is not None:
            self.journal.open()
        if spilled and self.spill_path is not None:
            self.spill_path.unlink()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def _run(self) -> None:
        orphans_at = time.monotonic() + ORPHAN_SECONDS
        while not self._closing:
            full = False
            with contextlib.suppress(TimeoutError):
                full = await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            was_failing = self.outage.failing
            # Woken early by a full batch: the rows past the last full batch wait for the next
            # tick (a transaction costs ~16 round trips to the SQLite thread whatever its size;
            # writing the few left over as one of their own doubled the transactions).
            whole = full and not self._closing
            if not await self.flush(whole_batches=whole) or self.journal is None:
                continue
            if was_failing or time.monotonic() >= orphans_at:
                orphans_at = time.monotonic() + ORPHAN_SECONDS
                await self.replay_orphans()

    async def replay_orphans(self) -> int:
        """Write the rows of journal files no live process holds (a process that stopped with
        the store down, a scaled-in replica) and remove the files; the number of rows written.

        Runs at start, then about once a minute and after each store outage. Skipped while
        another process is recovering; on a store failure the files stay for the next try."""
        if self.journal is None:
            return 0
        recovered = await asyncio.to_thread(self.journal.recover, False)
        if recovered is None:
            return 0
        written = 0
        try:
            async with self._lock:
                rows = recovered.rows
                for start in range(0, len(rows), self.batch_size):
                    fresh = await self.store.write_ledger(rows[start : start + self.batch_size])
                    written += len(fresh)
                    self.written += len(fresh)
                    if fresh:
                        await self._after_write(fresh)
        except Exception as exc:
            Journal.release(recovered)
            self.outage.failed(exc, "replaying the journals of stopped processes")
            return written
        except BaseException:
            Journal.release(recovered)  # cancelled: the files stay for the next try
            raise
        if recovered.files:
            log.warning(
                "journal: replayed %d rows (%d new, %d of interrupted requests) from %d files"
                " of stopped processes",
                len(recovered.rows),
                written,
                recovered.interrupted,
                len(recovered.files),
            )
        Journal.discard(recovered)
        return written

    async def _after_write(self, fresh: list[LedgerRow]) -> None:
        try:
            await self.on_written(fresh)
        except Exception:
            log.exception("after-write hook failed")

    async def flush(self, whole_batches: bool = False) -> bool:
        """Write the rows pending now, one batch at a time; False if the store failed.

        Rows appended while it writes wait for the next flush: under steady load, a flush that
        drained until empty never ended, and wrote a transaction of a few rows every few
        milliseconds instead of one batch every ``flush_seconds``. With ``whole_batches``,
        only full batches are written (the rest waits for the next flush)."""
        async with self._lock:
            left = len(self.pending)
            if whole_batches:
                left -= left % self.batch_size
            while left:
                batch = self.pending[: min(self.batch_size, left)]
                try:
                    fresh = await self.store.write_ledger(batch)
                except Exception as exc:
                    self.outage.failed(exc, f"{len(self.pending)} rows kept for the next try")
                    return False
                if self.outage.failing:
                    log.warning("writing %d kept ledger rows", len(self.pending))
                self.outage.ok()
                self.written += len(fresh)
                del self.pending[: len(batch)]
                left -= len(batch)
                if self._unjournaled:
                    for row in batch:
                        self._unjournaled.pop(row.request_id, None)
                if fresh:
                    await self._after_write(fresh)
            if self.journal is not None:
                self.journal.compact(self.appended, self.appended - len(self.pending))
            return True

    async def drain(self) -> bool:
        """Write until nothing is pending; False if the store failed."""
        while self.pending:
            if not await self.flush():
                return False
        return True

    async def close(self, attempts: int = 3) -> None:
        """Stop the background task and write what is left; rows the store cannot take stay
        in the journal for the next start."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for attempt in range(attempts):
            if await self.drain():
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        if self.journal is None:
            if self.pending:
                log.error("ledger store unreachable at shutdown: %d rows lost", len(self.pending))
            return
        inflight = len(self.journal.inflight)
        keep = bool(self.pending or inflight)
        if self.pending:
            self._rejournal()
            log.error(
                "ledger store unreachable at shutdown: %d rows kept in the journal (%s); the"
                " next start writes them",
                len(self.pending),
                self.journal.directory.resolve(),
            )
        if inflight:
            log.warning(
                "%d requests never settled: the next start charges their prompt estimate",
                inflight,
            )
        await self.journal.close(keep=keep)

    def _rejournal(self) -> None:
        """Try once more to journal the pending rows whose journal write had failed."""
        assert self.journal is not None
        at_risk = [row for row in self.pending if row.request_id in self._unjournaled]
        if not at_risk:
            return
        try:
            for row in at_risk:
                self.journal.settled(row)
        except OSError as exc:
            log.error(
                "journal write failed at shutdown (%s): %d ledger rows (%d micro-USD) lost",
                exc,
                len(at_risk),
                sum(row.cost_micros for row in at_risk),
            )

    def _load_spill(self) -> list[LedgerRow]:
        """Rows of a spill file written by an earlier version (a torn last line is skipped)."""
        if self.spill_path is None or not self.spill_path.exists():
            return []
        rows, skipped = [], 0
        decode = msgspec.json.Decoder(LedgerRow).decode
        for line in self.spill_path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rows.append(decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError):
                skipped += 1
        log.warning(
            "loaded %d spilled ledger rows from %s (%d torn or unreadable lines skipped)",
            len(rows),
            self.spill_path,
            skipped,
        )
        return rows
