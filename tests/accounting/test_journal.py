"""The ledger journal: replay at start (torn tails, locks, in-flight requests), rotation, and
write failures at the OS boundary."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import stat
import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from relaygate.accounting import journal as journal_module
from relaygate.accounting.journal import Journal
from relaygate.accounting.ledger import LedgerWriter
from relaygate.store.records import LedgerRow
from relaygate.store.sql import SqlStore
from tests.accounting.journal_support import _row


def _writer(
    store: SqlStore, directory: Path, spill: Path | None = None, mapped: bool = True
) -> LedgerWriter:
    return LedgerWriter(store, flush_seconds=60, batch_size=100, spill_path=spill,
                        journal=Journal(directory, "no", mapped=mapped))


def _admit(writer: LedgerWriter, n: int) -> None:
    writer.admitted(f"req-{n}", "key-1", "m", False, prompt_tokens=7, cost=4)


async def _crash(writer: LedgerWriter) -> None:
    """What a kill -9 leaves: the files, unlocked, nothing flushed."""
    assert writer._task is not None
    writer._task.cancel()
    journal = writer.journal
    assert journal is not None
    for segment in [*journal._retired, journal._current]:
        assert segment is not None
        os.close(segment.fd)


async def test_a_crash_loses_no_settled_row_and_charges_requests_in_flight(
    store: SqlStore, tmp_path: Path
) -> None:
    directory = tmp_path / "journal"
    first = _writer(store, directory)
    await first.start()
    for n in range(3):
        _admit(first, n)
        first.append(_row(n))
    _admit(first, 3)  # in flight at the crash
    _admit(first, 4)
    first.cancelled("req-4")  # ended before reaching an upstream: no row
    (path,) = directory.glob("*.journal")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await _crash(first)

    fresh: list[LedgerRow] = []
    second = _writer(store, directory)

    async def written(rows: object) -> None:
        fresh.extend(rows)  # type: ignore[call-overload]

    second.on_written = written
    await second.start()
    rows = {row.request_id: row for row in await store.ledger_rows("key-1")}
    assert {k: (r.status, r.cost_micros) for k, r in rows.items()} == {
        "req-0": ("ok", 10), "req-1": ("ok", 10), "req-2": ("ok", 10),
        "req-3": ("interrupted", 4),
    }
    assert rows["req-3"].prompt_tokens == 7
    assert sorted(row.request_id for row in fresh) == sorted(rows)
    key = await store.get_key("key-1")
    assert key is not None
    assert key.used_micros == 34
    assert path not in set(directory.glob("*.journal"))  # replayed, then removed
    await second.close()
    assert list(directory.glob("*.journal")) == []


async def test_a_torn_last_record_is_skipped_and_reported(
    store: SqlStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    good = b"S" + journal_module.encode_row(_row(1)) + b"\n"
    torn = (b"S" + journal_module.encode_row(_row(2)))[:40]
    (directory / "123-0-abc.journal").write_bytes(good + b"\x00\x00garbage\n" + torn)
    writer = _writer(store, directory)
    with caplog.at_level(logging.WARNING):
        await writer.start()  # never a refusal to start
    assert [row.request_id for row in await store.ledger_rows("key-1")] == ["req-1"]
    assert "2 torn or unreadable records skipped" in caplog.text
    await writer.close()


async def test_a_torn_spill_file_of_an_earlier_version_is_loaded_up_to_its_tear(
    store: SqlStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "spill.jsonl"
    line = json.dumps(asdict(_row(1))) + "\n"
    spill.write_text(line + json.dumps(asdict(_row(2)))[:30])
    writer = _writer(store, tmp_path / "journal", spill)
    with caplog.at_level(logging.WARNING):
        await writer.start()
    assert [row.request_id for row in await store.ledger_rows("key-1")] == ["req-1"]
    assert "1 torn or unreadable lines skipped" in caplog.text
    assert not spill.exists()
    await writer.close()


async def test_a_file_held_by_a_live_process_is_not_replayed(
    store: SqlStore, tmp_path: Path
) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    held = directory / "999-0-abc.journal"
    held.write_bytes(b"S" + journal_module.encode_row(_row(1)) + b"\n")
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process (another open file description)
    try:
        writer = _writer(store, directory)
        await writer.start()
        assert await store.ledger_rows("key-1") == []
        assert held.exists()
        await writer.close()
    finally:
        os.close(fd)


async def test_segments_rotate_and_go_once_the_store_holds_their_rows(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 1000)
    directory = tmp_path / "journal"
    writer = _writer(store, directory)
    await writer.start()
    _admit(writer, 0)  # stays in flight throughout
    for n in range(1, 40):
        writer.append(_row(n))
        if n % 5 == 0:
            assert await writer.flush()
    assert await writer.flush()
    files = list(directory.glob("*.journal"))
    assert len(files) == 1  # the old segments went; the small current one stays
    assert len(files[0].read_bytes().rstrip(b"\0")) < 2000  # less its mapping's unused tail
    # the request still in flight was carried into the current segment
    await _crash(writer)
    second = _writer(store, directory)
    await second.start()
    rows = {row.request_id: row.status for row in await store.ledger_rows("key-1")}
    assert len(rows) == 40
    assert rows["req-0"] == "interrupted"
    await second.close()


async def test_a_journal_write_failure_is_logged_with_the_rows_at_risk(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk: the rows are still written to the store, and the log says what is at risk;
    at shutdown with the store down too, the loss is counted, never silent."""
    writer = _writer(store, tmp_path / "journal", mapped=False)  # written with os.write
    await writer.start()

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", full)
    with caplog.at_level(logging.ERROR):
        writer.append(_row(1))
        writer.append(_row(2))
    assert "journal write failed ([Errno 28] No space left on device): 1 rows at risk" in (
        caplog.text
    )
    assert await writer.flush()
    assert len(await store.ledger_rows("key-1")) == 2

    writer.append(_row(3))

    async def down(rows: list[LedgerRow]) -> list[LedgerRow]:
        raise OSError("store unreachable")

    monkeypatch.setattr(store, "write_ledger", down)
    with caplog.at_level(logging.ERROR):
        await writer.close(attempts=1)
    assert "1 ledger rows (10 micro-USD) lost" in caplog.text


@pytest.mark.parametrize(("policy", "synced_after"), [
    pytest.param("always", 1, id="always"),
    pytest.param("everysec", 1, id="everysec"),
    pytest.param("no", 0, id="no"),
])
async def test_the_fsync_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, synced_after: int
) -> None:
    synced: list[str] = []
    monkeypatch.setattr(
        journal_module.os, "fdatasync", lambda fd: synced.append(threading.current_thread().name)
    )
    journal = Journal(tmp_path / "journal", policy)  # type: ignore[arg-type]
    journal.open()
    journal.admitted("req-1", "key-1", "m", 0, False, 5, 4)
    journal.settled(_row(1))
    assert synced == []  # never on the event loop
    durable = journal.durable()
    if policy == "always":  # the response awaits it
        assert durable is not None
        await durable
    else:
        assert durable is None
        await journal.sync()  # what the once-a-second task does (``everysec``)
    assert len(synced) == synced_after
    assert threading.main_thread().name not in synced
    await journal.close(keep=False)
    assert list((tmp_path / "journal").glob("*.journal")) == []


async def test_everysec_syncs_in_its_own_thread_without_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``everysec`` costs the event loop nothing: the once-a-second fdatasync runs in a thread
    of its own (no task, timer or executor hand-off on the loop)."""
    synced = threading.Event()
    threads: list[str] = []

    def fdatasync(fd: int) -> None:
        threads.append(threading.current_thread().name)
        synced.set()

    monkeypatch.setattr(journal_module.os, "fdatasync", fdatasync)
    journal = Journal(tmp_path / "journal", "everysec")
    journal.open()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "journal-fsync"] == []
    journal.settled(_row(1))
    assert await asyncio.to_thread(synced.wait, 30.0)
    assert threads[0] == "journal-fsync"
    await journal.close(keep=False)
    assert not any(t.name == "journal-fsync" for t in threading.enumerate())


def _kill(journal: Journal) -> None:
    """What a kill -9 leaves of a journal: its files as the page cache holds them, unlocked."""
    for segment in [*journal._retired, journal._current]:
        assert segment is not None
        os.close(segment.fd)


def test_records_are_copied_into_a_mapping_that_a_killed_process_leaves_on_disk(
    tmp_path: Path,
) -> None:
    """No system call a record: the segment's first bytes are preallocated and mapped; what
    was copied in is in the file for the next start, and the unused tail is not a record."""
    directory = tmp_path / "journal"
    journal = Journal(directory, "no")
    journal.open()
    segment = journal._current
    assert segment is not None
    assert segment.view is not None
    journal.admitted("in-flight", "key-1", "m", 0, False, 5, 4)
    for n in range(3):
        journal.settled(_row(n))
    assert segment.path.stat().st_size == segment.capacity > segment.size
    _kill(journal)
    recovered = Journal(directory, "no").recover()
    assert recovered is not None
    assert sorted(row.request_id for row in recovered.rows) == [
        "in-flight", "req-0", "req-1", "req-2"
    ]
    assert (recovered.interrupted, recovered.skipped) == (1, 0)
    Journal.release(recovered)


def test_a_segment_that_outgrows_its_mapping_goes_on_with_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows keep coming while the store is down (no flush, no rotation): past its mapping, a
    segment is appended to with os.write, after empty lines filling the mapping's rest."""
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 400)
    directory = tmp_path / "journal"
    journal = Journal(directory, "no")
    journal.open()
    segment = journal._current
    assert segment is not None
    assert segment.view is not None
    for n in range(30):
        journal.settled(_row(n))
    assert segment.view is None
    assert segment.path.stat().st_size == segment.size > segment.capacity
    _kill(journal)
    recovered = Journal(directory, "no").recover()
    assert recovered is not None
    assert sorted(row.created_at for row in recovered.rows) == list(range(30))
    assert recovered.skipped == 0
    Journal.release(recovered)


def test_a_record_torn_inside_the_mapping_is_skipped(tmp_path: Path) -> None:
    """A process killed while copying a record leaves part of it before the zero bytes."""
    directory = tmp_path / "journal"
    directory.mkdir()
    good = b"S" + journal_module.encode_row(_row(1)) + b"\n"
    torn = (b"S" + journal_module.encode_row(_row(2)))[:30]
    (directory / "5-0-abc.journal").write_bytes(good + torn + bytes(4096))
    recovered = Journal(directory, "no").recover()
    assert recovered is not None
    assert [row.request_id for row in recovered.rows] == ["req-1"]
    assert recovered.skipped == 1
    Journal.release(recovered)


async def test_a_kept_segment_is_cut_to_its_records(tmp_path: Path) -> None:
    """Closed with rows the store lacks, a segment keeps its records, not its mapping's tail."""
    directory = tmp_path / "journal"
    journal = Journal(directory, "no")
    journal.open()
    journal.settled(_row(1))
    segment = journal._current
    assert segment is not None
    await journal.close(keep=True)
    data = segment.path.read_bytes()
    assert len(data) == segment.size
    assert data.endswith(b"S" + journal_module.encode_row(_row(1)) + b"\n")
    recovered = Journal(directory, "no").recover()
    assert recovered is not None
    assert [row.request_id for row in recovered.rows] == ["req-1"]
    Journal.release(recovered)


async def test_records_given_as_values_are_those_of_the_fields_one_by_one(
    tmp_path: Path,
) -> None:
    """The request path hands the journal the values it built a row from, and an admission's
    fields as one tuple: the records are byte for byte those the row and the fields give."""
    row = _row(1)
    values = (row.request_id, "key-1", "m", 0, False, 5, 4, "chat")
    by_field, by_values = Journal(tmp_path / "a", "no"), Journal(tmp_path / "b", "no")
    for journal in (by_field, by_values):
        journal.open()
    by_field.admitted(*values)
    by_field.settled(row)
    by_values.admitted_values(values)
    by_values.settled(row, tuple(asdict(row).values()))
    contents = []
    for journal in (by_field, by_values):
        (path,) = journal.directory.glob("*.journal")
        contents.append(path.read_bytes().rstrip(b"\0"))
        await journal.close(keep=False)
    assert contents[0] == contents[1]
    assert contents[0].count(b"\n") == 3  # the header, the admission, the row
