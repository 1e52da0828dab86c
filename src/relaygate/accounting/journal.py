"""The ledger journal: an append-only file that makes a settled request's row durable before its
response ends, and remembers the requests in flight (Redis's AOF, PostgreSQL's WAL).

Each process writes its own files in the ``journal_path`` directory, each held with an
``flock`` for as long as the process lives. Records are lines, copied into a shared mapping of
the file (no system call a record; see :meth:`Journal._map`), or, where that is not possible,
written with one ``os.write`` each (a write that fails part way is cut off, so a partial record
never swallows the next one):

- ``H`` + a header: the format version, the field names of the other records, and the store the
  rows belong to (:mod:`relaygate.accounting.journal_format`).
- ``O`` + ``[request id, key id, model, created (ms), stream, prompt estimate, its cost]``: a
  request is about to reach an upstream. If a crash leaves it unsettled, its row is
  ``interrupted``, charged the prompt estimate.
- ``S`` + a ledger row (a JSON array of its fields): the request was settled; this is its row.
- ``C`` + a request id: the request was cancelled before reaching an upstream (no row).

At start (and about once a minute while it runs), a process replays every journal file no live
process holds, one process at a time (a lock on ``.recover``): a settled row wins over the
admission of the same request, the store skips request ids it already holds but lets a real row
replace an ``interrupted`` one; it writes the rows and removes the files. A torn or unreadable
record (the tail of a file cut by a power loss) is skipped and reported. Once a file's rows
are all in the store, it is obsolete: the writer starts a new segment (carrying the records of
the requests still in flight) past ``SEGMENT_BYTES`` and removes the old one when the store
has caught up with it.

Durability (``journal_fsync``): every record is in the kernel's page cache (copied into the
mapping, or written) before the response ends, so a killed process loses nothing. What a power
loss (or a kernel crash) can lose depends on the policy: ``always`` makes each settled row
durable before its response ends (the response awaits a group commit: one fdatasync in a thread
serves every row written while the previous one ran, so the event loop never waits for the disk;
admission records are synced with them), ``everysec`` (the default) fsyncs once a second in a
thread (up to about a second of rows), ``no`` leaves it to the operating system (typically up to
30 seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from relaygate.accounting.journal_format import (
    Foreign,
    Recovered,
    encode_id,
    encode_into,
    header,
    read_records,
    row_values,
)
from relaygate.accounting.journal_format import (
    encode_row as encode_row,  # re-exported (tests build records with it)
)
from relaygate.outage import Outage
from relaygate.store.records import LedgerRow

log = logging.getLogger("relaygate.journal")

FsyncPolicy = Literal["always", "everysec", "no"]

AdmittedValues = tuple[str, str, str, int, bool, int, int, str]
"""An admission record's fields: request id, key id, model, created (ms), stream, prompt
estimate, its cost, api (:data:`~relaygate.accounting.journal_format.ADMITTED_FIELDS`)."""

SEGMENT_BYTES = 1 << 20
"""A segment is rotated once it is this large (and removed once the store holds its rows)."""

MAP_SEGMENTS = 2
"""A segment's mapping holds this many ``SEGMENT_BYTES`` (records written between two flushes
fit past the rotation size); a segment that outgrows it goes on with ``os.write``."""

ROTATE_BACKOFF_MAX = 30.0
"""A failed rotation is retried after 1 s, then twice as long each time, up to this."""

RECOVER_LOCK = ".recover"
"""The file whose lock serializes recovery in a journal directory."""

_SUFFIX = ".journal"
_NEW = ".new"


@dataclass(slots=True)
class _Segment:
    fd: int
    path: Path
    size: int = 0
    torn: bool = False
    """A failed write left a partial record that could not be cut off."""
    mark: int = 0
    """Rows appended to the ledger when this segment was retired: it is obsolete once as many
    have been stored."""
    view: mmap.mmap | None = None
    """The file's preallocated first ``capacity`` bytes, mapped: records are copied in."""
    capacity: int = 0

    def unmap(self, fill: bool) -> None:
        """Stop copying into the mapping; with ``fill``, end its unused part with empty lines
        (skipped at replay) so that records written after it follow on."""
        view, self.view = self.view, None
        if view is None:
            return
        if fill and self.size < self.capacity:
            view[self.size : self.capacity] = b"\n" * (self.capacity - self.size)
            self.size = self.capacity
        view.close()


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Journal:
    """This process's journal files in ``directory``."""

    def __init__(
        self,
        directory: Path,
        fsync: FsyncPolicy = "everysec",
        store: str = "",
        mapped: bool = True,
    ) -> None:
        self.directory = directory
        self.mapped = mapped
        """Records are copied into a mapping of each segment (else one ``os.write`` each)."""
        self.fsync = fsync
        self._syncs = fsync != "no"
        """Written descriptors are remembered for a sync (not with ``no``)."""
        self._group_commit_on = fsync == "always"
        self.store = store
        """The fingerprint of the store its rows belong to (:func:`store_fingerprint`): written
        in each file's header; files of another store are not replayed."""
        self.inflight: dict[str, bytes] = {}
        """Admission records of the requests in flight (carried into each new segment)."""
        self.failures = 0
        self._settled_record = bytearray(b"S")
        self._admitted_record = bytearray(b"O")
        """Reused record buffers: each record is encoded in place after its kind."""
        self.closed_drops = 0
        """Records written while no segment was open (after :meth:`close`)."""
        self._current: _Segment | None = None
        self._retired: list[_Segment] = []
        self._dirty: set[int] = set()
        self._directory_dirty = False
        self._syncing: set[int] = set()
        """Descriptors the fsync thread is syncing (not closed until it is done)."""
        self._thread_call: asyncio.Future[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._committer: asyncio.Task[None] | None = None
        self.fsync_outage = Outage(log, "journal fsync")
        self._seq = itertools.count()
        self._lock = threading.Lock()
        """Guards ``_dirty``/``_syncing``/``_directory_dirty`` against the ``everysec`` thread
        (adding to ``_dirty`` needs no lock: the thread never replaces the set)."""
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self.rotation_outage = Outage(log, "journal rotation")
        """Failures to start a new segment (a full disk): logged once, then counted."""
        self._rotate_after = 0.0
        self._rotate_backoff = 0.0

    # --- recovery ----------------------------------------------------------------------------

    def recover(self, wait: bool = True) -> Recovered | None:
        """Read every journal file no live process holds (each stays locked until
        :meth:`discard` or :meth:`release`).

        Recovery is serialized by a lock on the directory's ``.recover`` file, held until
        :meth:`discard` or :meth:`release`: workers starting together never split a dead
        process's files between them (one would charge a request ``interrupted`` whose real row
        is in a file the other read). Blocks for it if ``wait``, else returns None when another
        process is recovering. Blocking: call it in a thread."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(self.directory / RECOVER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(lock)
            return None
        recovered = Recovered(lock=lock)
        try:
            self._read_orphans(recovered)
        except BaseException:
            self.release(recovered)
            raise
        return recovered

    def _read_orphans(self, recovered: Recovered) -> None:
        opened: dict[str, LedgerRow] = {}
        settled: dict[str, LedgerRow] = {}
        cancelled: set[str] = set()
        for path in sorted(self.directory.iterdir()):
            if not path.name.endswith(_SUFFIX):
                self._remove_stale_new(path)
                continue
            fd = self._lock_orphan(path)
            if fd is None:
                continue
            with open(fd, "rb", closefd=False) as file:
                data = file.read()
            try:
                read_records(data, self.store, recovered, opened, settled, cancelled)
            except Foreign as exc:
                os.close(fd)
                recovered.foreign.append(path)
                log.error("journal: %s is left in place, not replayed: %s", path, exc)
                continue
            recovered.files.append((fd, path))
        recovered.rows = list(settled.values())
        for request_id, row in opened.items():
            if request_id not in settled and request_id not in cancelled:
                recovered.rows.append(row)
                recovered.interrupted += 1

    def _remove_stale_new(self, path: Path) -> None:
        """A ``.new`` file is a segment being created (locked, header only, until renamed);
        one no process holds was left by a crash during its creation: removed."""
        if not path.name.endswith(_NEW):
            return
        fd = self._lock_orphan(path)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.close(fd)

    @staticmethod
    def _lock_orphan(path: Path) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # another process replayed and removed it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # a live process holds it
        if os.fstat(fd).st_nlink == 0:  # removed while we waited for it
            os.close(fd)
            return None
        return fd

    @staticmethod
    def discard(recovered: Recovered) -> None:
        """The recovered rows are in the store: remove their files."""
        for fd, path in recovered.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.close(fd)
        recovered.files.clear()
        Journal._unlock(recovered)

    @staticmethod
    def release(recovered: Recovered) -> None:
        """Leave the recovered files for a later start (the store could not take them)."""
        for fd, _ in recovered.files:
            os.close(fd)
        recovered.files.clear()
        Journal._unlock(recovered)

    @staticmethod
    def _unlock(recovered: Recovered) -> None:
        if recovered.lock >= 0:
            os.close(recovered.lock)
            recovered.lock = -1

    # --- writing -----------------------------------------------------------------------------

    def open(self) -> None:
        """Start this process's first segment, and the once-a-second fsync if asked for."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._current = self._new_segment()
        if self.fsync == "everysec":
            # A thread of its own: the request path and the event loop pay nothing for it
            # (no timer, future or executor hand-off a second).
            self._stop.clear()
            self._sync_thread = threading.Thread(
                target=self._sync_every_second, name="journal-fsync", daemon=True
            )
            self._sync_thread.start()

    def _new_segment(self, carried: bytes = b"") -> _Segment:
        """A new segment: its header, then ``carried`` (the records of the requests in flight),
        mapped unless ``mapped`` is off or the file system cannot."""
        name = f"{os.getpid()}-{next(self._seq)}-{os.urandom(3).hex()}"
        temporary = self.directory / (name + _NEW)
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        first = header(self.store) + carried
        path = self.directory / (name + _SUFFIX)
        try:
            # Locked before it takes the name other processes replay: never an orphan.
            fcntl.flock(fd, fcntl.LOCK_EX)
            _write_all(fd, first)
            temporary.rename(path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        if self.fsync != "no":
            with self._lock:
                self._directory_dirty = True  # synced with the next records
        segment = _Segment(fd, path, size=len(first))
        if self.mapped:
            self._map(segment)
        return segment

    @staticmethod
    def _map(segment: _Segment) -> None:
        """Preallocate the segment's first ``MAP_SEGMENTS * SEGMENT_BYTES`` bytes and map them:
        a record is then a copy into the page cache, with no system call, inode update or
        file-system journal handle (two ``os.write`` a request cost the event loop more than
        the rest of the journal). A killed process loses nothing, ``fdatasync`` syncs the
        pages, and a full disk fails here (the segment is then written), never while copying.
        Mapped through a descriptor of its own: the lock ends with the segment's."""
        capacity = MAP_SEGMENTS * SEGMENT_BYTES
        fallocate = getattr(os, "posix_fallocate", None)
        if fallocate is None or segment.size >= capacity:
            return
        try:
            fd = os.open(segment.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fallocate(fd, 0, capacity)
            segment.view = mmap.mmap(fd, capacity)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, segment.size)  # as it was: written with os.write from here
            return
        finally:
            os.close(fd)
        segment.capacity = capacity

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append(self, data: bytes | bytearray) -> None:
        segment = self._current
        if segment is None or segment.torn:
            self._append_slow(segment, data)
            return
        view = segment.view
        if view is not None:
            start = segment.size
            end = start + len(data)
            if end <= segment.capacity:
                view[start:end] = data  # the common case: a copy into the page cache
                segment.size = end
                if self._syncs:
                    self._dirty.add(segment.fd)
                return
            segment.unmap(fill=True)  # full: later records are appended after it
        # One os.write of the whole record (no memoryview, no loop).
        try:
            written = os.write(segment.fd, data)
            if written != len(data):
                _write_all(segment.fd, data[written:])  # a copy: the buffer is reused
        except OSError:
            self._cut(segment)
            raise
        segment.size += len(data)
        if self._syncs:
            self._dirty.add(segment.fd)  # synced in a thread: once a second, or by group commit

    def _append_slow(self, segment: _Segment | None, data: bytes | bytearray) -> None:
        """No segment open (after :meth:`close`), or one a failed write left torn."""
        if segment is None:
            self._dropped(data)
            return
        fd = segment.fd
        data = b"\n" + data  # end the partial record a failed write left (an empty line)
        try:
            _write_all(fd, data)
        except OSError:
            self._cut(segment)
            raise
        segment.size = os.fstat(fd).st_size  # past the partial record
        segment.torn = False
        if self._syncs:
            self._dirty.add(fd)

    def _dropped(self, data: bytes | bytearray) -> None:
        """A record after :meth:`close` (or before :meth:`open`): it cannot be journaled."""
        self.closed_drops += 1
        if self.closed_drops == 1 or self.closed_drops % 1000 == 0:
            log.error(
                "journal closed: %d records not journaled (this one: %s)",
                self.closed_drops,
                data[:1].decode(errors="replace"),
            )

    @staticmethod
    def _cut(segment: _Segment) -> None:
        """A write failed, perhaps part way (a nearly full disk): cut the partial record off,
        or, if even that fails, end it with a newline before the next record (the reader skips
        it as torn) so it cannot swallow the next one."""
        try:
            if os.fstat(segment.fd).st_size != segment.size:
                os.ftruncate(segment.fd, segment.size)
        except OSError:
            segment.torn = True

    def admitted(
        self,
        request_id: str,
        key_id: str,
        model: str,
        created_at: int,
        stream: bool,
        prompt_tokens: int,
        cost: int,
        api: str = "chat",
    ) -> None:
        """A request may now reach an upstream: the prompt estimate and its cost are its charge
        if the process dies before it settles (a row of ``api``, the API the client called)."""
        values = (request_id, key_id, model, created_at, stream, prompt_tokens, cost, api)
        self.admitted_values(values)

    def admitted_values(self, values: AdmittedValues) -> None:
        """:meth:`admitted` with its arguments as one tuple (in :data:`ADMITTED_FIELDS` order),
        as the request path builds it: no call passes them one by one."""
        buffer = self._admitted_record
        encode_into(values, buffer, 1)
        buffer.append(10)  # b"\n"
        record = bytes(buffer)
        self.inflight[values[0]] = record
        self._append(record)

    def cancelled(self, request_id: str) -> None:
        """The request ended before reaching an upstream: no row."""
        if self.inflight.pop(request_id, None) is not None:
            self._append(b"C" + encode_id(request_id) + b"\n")

    def settled(self, row: LedgerRow, values: tuple[Any, ...] | None = None) -> None:
        """The request's row, durable before its response ends (raises OSError if it is not).
        ``values``: the row's field values in :data:`ROW_FIELDS` order, when the caller built
        the row from them (not read back field by field)."""
        inflight = self.inflight
        if inflight:
            inflight.pop(row.request_id, None)
        record = self._settled_record
        encode_into(row_values(row) if values is None else values, record, 1)
        record.append(10)  # b"\n"
        self._append(record)

    # --- compaction --------------------------------------------------------------------------

    def compact(self, appended: int, stored: int) -> None:
        """Rotate a full segment; remove the segments whose rows are all in the store.

        ``appended`` counts the rows handed to the ledger so far, ``stored`` those the store
        holds (rows are stored in the order they were appended)."""
        segment = self._current
        if (
            segment is not None
            and segment.size >= SEGMENT_BYTES
            and time.monotonic() >= self._rotate_after
        ):
            fresh = self._rotate()
            if fresh is not None:
                segment.mark = appended
                self._retired.append(segment)
                self._current = fresh
        while self._retired and self._retired[0].mark <= stored:
            with self._lock:  # the sync thread cannot take its descriptor meanwhile
                if self._retired[0].fd in self._syncing:
                    break  # in the fsync thread's hands: removed next time
                old = self._retired.pop(0)
                self._dirty.discard(old.fd)
                with contextlib.suppress(FileNotFoundError):
                    old.path.unlink()
                old.unmap(fill=False)
                os.close(old.fd)

    def _rotate(self) -> _Segment | None:
        """A new segment carrying the records of the requests in flight, or None (the current
        one is kept, and rotation is retried after a back-off)."""
        try:
            carried = b"".join(self.inflight.values())
            fresh = self._new_segment(carried)
            if carried and self.fsync != "no":
                self._dirty.add(fresh.fd)
        except OSError as exc:
            self.rotation_outage.failed(exc, "keeping the current segment")
            self._rotate_backoff = min(max(2 * self._rotate_backoff, 1.0), ROTATE_BACKOFF_MAX)
            self._rotate_after = time.monotonic() + self._rotate_backoff
            return None
        self.rotation_outage.ok()
        self._rotate_backoff = 0.0
        return fresh

    def _sync_every_second(self) -> None:
        """The ``everysec`` thread: fsync what was written in the last second."""
        while not self._stop.wait(1.0):
            self._sync_now()

    def _take_dirty(self) -> tuple[list[int], bool]:
        """What to sync now: the descriptors written since the last sync (marked as being
        synced) and whether the directory changed. A record written after this is marked
        again; one written before is covered by the fdatasync that follows."""
        with self._lock:
            fds = list(self._dirty)
            self._dirty.difference_update(fds)
            directory, self._directory_dirty = self._directory_dirty, False
            self._syncing.update(fds)
        return fds, directory

    def _synced(self, fds: list[int]) -> None:
        with self._lock:
            self._syncing.difference_update(fds)

    def _sync_now(self) -> None:
        """One sync, blocking (in the ``everysec`` thread)."""
        if not self._dirty and not self._directory_dirty:
            return
        fds, directory = self._take_dirty()
        try:
            for fd in fds:
                os.fdatasync(fd)
            if directory:
                self._sync_directory()
        except OSError as exc:
            self.fsync_outage.failed(exc, "rows written but perhaps not on disk")
        else:
            self.fsync_outage.ok()
        finally:
            self._synced(fds)

    async def sync(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """fsync what was written since the last sync (in a thread: off the event loop)."""
        if not self._dirty and not self._directory_dirty:
            return
        fds, directory = self._take_dirty()
        loop = loop or asyncio.get_running_loop()
        try:
            for fd in fds:
                await self._in_thread(loop, os.fdatasync, fd)
            if directory:
                await self._in_thread(loop, self._sync_directory)
        except OSError as exc:
            self.fsync_outage.failed(exc, "rows written but perhaps not on disk")
        else:
            self.fsync_outage.ok()
        finally:
            self._synced(fds)

    async def _in_thread(
        self, loop: asyncio.AbstractEventLoop, call: Callable[..., None], *args: object
    ) -> None:
        # Shielded: a cancelled caller (close) still waits for the thread before closing fds.
        self._thread_call = loop.run_in_executor(None, call, *args)
        await asyncio.shield(self._thread_call)

    def durable(self) -> asyncio.Future[None] | None:
        """With ``journal_fsync: always``, a future done once what was written so far is on
        disk (None with other policies). One fdatasync, in a thread, serves every record written
        while the previous one ran (a group commit): the event loop never waits for the disk."""
        if not self._group_commit_on or self._current is None:
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        if self._committer is None:
            self._committer = loop.create_task(self._group_commit(), name="journal-commit")
        return waiter

    async def _group_commit(self) -> None:
        waiters: list[asyncio.Future[None]] = []
        try:
            while self._waiters:
                waiters, self._waiters = self._waiters, []
                await self.sync()
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self._committer = None
            for waiter in [*waiters, *self._waiters]:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    async def close(self, keep: bool) -> None:
        """Close this process's files: removed when ``keep`` is false (every row is in the
        store), else left for the next start to replay."""
        if self._committer is not None:
            await self._committer
        if self._sync_thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._sync_thread.join)  # a fdatasync it is running
            self._sync_thread = None
        if self._thread_call is not None:
            with contextlib.suppress(OSError):
                await self._thread_call  # a fsync still running in its thread
        segments = [*self._retired, *([self._current] if self._current else [])]
        self._retired, self._current = [], None
        if keep and self.fsync != "no":
            for segment in segments:
                with contextlib.suppress(OSError):
                    os.fdatasync(segment.fd)
        for segment in segments:
            segment.unmap(fill=False)
            if not keep:
                with contextlib.suppress(FileNotFoundError):
                    segment.path.unlink()
            elif segment.capacity:
                with contextlib.suppress(OSError):
                    os.ftruncate(segment.fd, segment.size)  # the unused tail of its mapping
            os.close(segment.fd)
