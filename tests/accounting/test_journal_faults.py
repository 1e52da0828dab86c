"""The journal under faults: short writes on a nearly full disk, failed rotations, workers
recovering together, and a settle cancelled by the shutdown deadline."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from relaygate.accounting import journal as journal_module
from relaygate.accounting import journal_format
from relaygate.accounting import ledger as ledger_module
from relaygate.accounting.admission import Admissions, Ticket
from relaygate.accounting.gate import MemoryGate
from relaygate.accounting.journal import Journal
from relaygate.accounting.ledger import LedgerWriter
from relaygate.accounting.prices import Price
from relaygate.api.chat import CHAT
from relaygate.api.pipeline import Decoded, _complete_answer
from relaygate.app import Gateway
from relaygate.protocol.validate import decode_chat_request
from relaygate.providers.base import TokenUsage
from relaygate.routing.catalog import CatalogModel
from relaygate.settings import ModelSettings, Pricing, Settings
from relaygate.store.records import KeyRecord, LedgerRow
from relaygate.store.sql import SqlStore
from tests.accounting.journal_support import _row


def _short_writes(monkeypatch: pytest.MonkeyPatch, fd: int, allowed: int) -> None:
    """The disk takes ``allowed`` more bytes on ``fd``, then fails with ENOSPC."""
    real = os.write
    left = [allowed]

    def write(target: int, data: Any) -> int:
        if target != fd:
            return real(target, data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = real(target, bytes(data)[: left[0]])
        left[0] -= written
        return written

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("truncate_fails", [False, True])
async def test_a_short_write_never_swallows_the_next_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, truncate_fails: bool
) -> None:
    directory = tmp_path / "journal"
    journal = Journal(directory, "no", mapped=False)  # records written with os.write
    journal.open()
    assert journal._current is not None
    journal.settled(_row(1))
    with monkeypatch.context() as patch:
        _short_writes(patch, journal._current.fd, 20)  # a nearly full disk
        if truncate_fails:

            def refuse(fd: int, size: int) -> None:
                raise OSError(errno.EIO, "I/O error")

            patch.setattr(os, "ftruncate", refuse)
        with pytest.raises(OSError, match="No space left"):
            journal.settled(_row(2))
    journal.settled(_row(3))  # space freed: this row is durable
    journal.settled(_row(4))
    for segment in [journal._current]:  # kill -9
        os.close(segment.fd)
    recovered = Journal(directory, "no").recover()
    assert [row.request_id for row in recovered.rows] == ["req-1", "req-3", "req-4"]
    assert recovered.skipped == (1 if truncate_fails else 0)
    Journal.release(recovered)


class _SlowGate:
    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def settle(self, hold: object, cost: int, tokens: int) -> int:
        self.entered.set()
        await asyncio.Event().wait()  # a Redis round trip the shutdown deadline cuts
        return cost


class _Price:
    def for_tier(self, tier: str | None) -> _Price:
        return self

    def cost(self, usage: TokenUsage) -> int:
        return 10 * (usage.prompt_tokens + usage.completion_tokens)

    def cost_parts(self, usage: TokenUsage) -> tuple[int, int, int, int]:
        return 10 * usage.prompt_tokens, 0, 10 * usage.completion_tokens, 0


async def test_a_settle_cancelled_while_it_awaits_the_gate_still_writes_its_row(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal", "no")
    ledger = LedgerWriter(SimpleNamespace(), 60, 100, journal=journal)  # type: ignore[arg-type]
    journal.open()
    gate = _SlowGate()
    admissions = Admissions(gate, ledger)  # type: ignore[arg-type]
    ledger.admitted("req-1", "key-1", "m", False, 5, 50)
    model = SimpleNamespace(name="m", price=_Price())
    ticket = Ticket("req-1", SimpleNamespace(id="key-1", account_id=""), model, False, None, 5, 0.0)  # type: ignore[arg-type]
    usage = TokenUsage(prompt_tokens=5, completion_tokens=100)
    task = asyncio.create_task(admissions.settle(ticket, usage, "ok", "u", "m"))
    await gate.entered.wait()
    task.cancel()  # the shutdown deadline
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(row.request_id, row.status, row.cost_micros) for row in ledger.pending] == [
        ("req-1", "ok", 1050)
    ]
    assert journal.inflight == {}
    await journal.close(keep=False)


async def test_a_failed_rotation_leaks_no_file_or_descriptor_and_backs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 200)
    directory = tmp_path / "journal"
    journal = Journal(directory, "no")
    journal.open()
    journal.admitted("in-flight", "key-1", "m", 0, False, 5, 4)
    for n in range(5):
        journal.settled(_row(n))
    calls = []

    def full_disk(fd: int, data: bytes) -> None:
        calls.append(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    descriptors = len(os.listdir("/proc/self/fd"))
    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR):
        patch.setattr(journal_module, "_write_all", full_disk)
        for _ in range(50):  # 50 flushes
            journal.compact(appended=5, stored=5)
    assert len(list(directory.glob("*.journal"))) == 1
    assert len(os.listdir("/proc/self/fd")) == descriptors
    assert len(calls) == 1  # retried after a back-off, not at every flush
    assert caplog.text.count("journal rotation unreachable") == 1
    journal._rotate_after = 0.0  # the back-off is over, the disk has room again
    journal.compact(appended=5, stored=5)
    assert len(list(directory.glob("*.journal"))) == 1  # rotated, and the old segment removed
    assert journal._current is not None
    assert journal._current.size > 0  # carries the request in flight
    await journal.close(keep=False)
    assert list(directory.glob("*.journal")) == []


def _orphan(directory: Path, name: str, *records: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"".join(records))
    return path


def _settled(row: LedgerRow) -> bytes:
    return b"S" + journal_module.encode_row(row) + b"\n"


async def test_workers_starting_together_recover_one_at_a_time(
    store: SqlStore, tmp_path: Path
) -> None:
    directory = tmp_path / "journal"
    _orphan(directory, "1-0-aaa.journal", _settled(_row(1)))
    lock = os.open(directory / ".recover", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # another worker is recovering
    writer = LedgerWriter(store, 60, 100, journal=Journal(directory, "no"))
    try:
        starting = asyncio.create_task(writer.start())
        done, _ = await asyncio.wait({starting}, timeout=0.3)
        assert not done  # it waits for the other worker's recovery
    finally:
        os.close(lock)
    await starting
    assert [row.request_id for row in await store.ledger_rows("key-1")] == ["req-1"]
    await writer.close()


async def test_a_dead_process_split_between_two_workers_keeps_its_real_row(
    store: SqlStore, tmp_path: Path
) -> None:
    """The admission and the real row in different files, replayed by different workers in
    the wrong order: the real row replaces the ``interrupted`` one."""
    directory = tmp_path / "journal"
    admitted = b'O["req-long","key-1","m",1,true,5,4]\n'
    real = _row(2, cost=5000, request_id="req-long")
    later = _orphan(directory, "1-1-bbb.journal", admitted, _settled(real))
    held = os.open(later, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # read by another worker, not yet replayed
    _orphan(directory, "1-0-aaa.journal", admitted)
    first = LedgerWriter(store, 60, 100, journal=Journal(directory, "no"))
    await first.start()
    os.close(held)
    second = LedgerWriter(store, 60, 100, journal=Journal(directory, "no"))
    await second.start()
    rows = await store.ledger_rows("key-1")
    assert [(row.status, row.cost_micros) for row in rows] == [("ok", 5000)]
    key = await store.get_key("key-1")
    assert key is not None
    assert key.used_micros == 5000
    await first.close()
    await second.close()


async def test_orphan_journals_are_replayed_without_a_restart(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that stopped with the store down left its journal: a live worker writes it
    (about once a minute, and when the store recovers)."""
    monkeypatch.setattr(ledger_module, "ORPHAN_SECONDS", 0.0)
    directory = tmp_path / "journal"
    writer = LedgerWriter(store, 0.01, 100, journal=Journal(directory, "no"))
    await writer.start()
    orphan = _orphan(directory, "7-0-ccc.journal", _settled(_row(7)))
    deadline = asyncio.get_running_loop().time() + 10
    while not await store.ledger_rows("key-1"):
        assert asyncio.get_running_loop().time() < deadline, "the orphan was never replayed"
        await asyncio.sleep(0.01)
    assert [row.request_id for row in await store.ledger_rows("key-1")] == ["req-7"]
    while orphan.exists():
        assert asyncio.get_running_loop().time() < deadline, "the orphan was never removed"
        await asyncio.sleep(0.01)
    await writer.close()


async def test_in_flight_charge_is_journaled_at_the_tier_price_when_going_upstream(
    tmp_path: Path,
) -> None:
    """The admission record is written when the request is about to reach an upstream (not
    before its images are fetched), with the prompt estimate priced at its service tier."""
    journal = Journal(tmp_path / "journal", "no")
    journal.open()
    ledger = LedgerWriter(SimpleNamespace(), 60, 100, journal=journal)  # type: ignore[arg-type]
    gate = MemoryGate()
    key = KeyRecord(
        id="key-1", name="", key_hash="h", prefix="p", created_at=0, granted_micros=10**9
    )
    gate.credits.load(key.id, key.granted_micros, 0, False)
    settings = ModelSettings(
        pricing=Pricing(
            input=Decimal("5"), output=Decimal("30"), service_tiers={"priority": Decimal("2")}
        ),
        max_output_tokens=1000,
    )
    model = CatalogModel("m", settings, Price.from_settings(settings.pricing), [])
    body = (
        b'{"model": "m", "service_tier": "priority", "max_tokens": 10,'
        b' "messages": [{"role": "user", "content": "hi"}]}'
    )
    request, _ = decode_chat_request(body)
    admissions = Admissions(gate, ledger)
    ticket = await admissions.admit(key, model, request, len(body), "req-1")
    assert journal.inflight == {}  # images not fetched yet: a crash here charges nothing
    admissions.going_upstream(ticket)
    (record,) = journal.inflight.values()
    fields = dict(zip(journal_format.ADMITTED_FIELDS, json.loads(record[1:]), strict=True))
    assert fields["api"] == "chat"
    cost = fields["cost_micros"]
    assert cost == 2 * model.price.worst_case(ticket.prompt_guess, 0)
    await admissions.settle(ticket, None, "upstream_error", "u", "m")
    await journal.close(keep=False)


class _Broken:
    def __init__(self) -> None:
        self.provider = SimpleNamespace(label="u")
        self.upstream_model = "m"
        self.events = self._events()

    async def _events(self) -> AsyncIterator[list[Any]]:
        yield []
        raise RuntimeError("a bug of relaygate's")


async def test_a_non_stream_failing_inside_relaygate_is_an_internal_error_not_cancelled(
    tmp_path: Path,
) -> None:
    ledger = LedgerWriter(SimpleNamespace(), 60, 100)  # type: ignore[arg-type]
    admissions = Admissions(SimpleNamespace(), ledger)  # type: ignore[arg-type]

    async def settle(hold: object, cost: int, tokens: int) -> int:
        return cost

    admissions.gate.settle = settle  # type: ignore[attr-defined]
    model = SimpleNamespace(name="m", price=_Price())
    ticket = Ticket("req-1", SimpleNamespace(id="key-1", account_id=""), model, False, None, 5, 0.0)  # type: ignore[arg-type]
    gw = SimpleNamespace(admissions=admissions)

    async def send(message: object) -> None:
        raise AssertionError("nothing is sent")

    decoded = Decoded(request=SimpleNamespace(), raw={})  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="a bug"):
        await _complete_answer(gw, CHAT, ticket, decoded, _Broken(), send)  # type: ignore[arg-type]
    (row,) = ledger.pending
    assert (row.status, row.prompt_tokens, row.cost_micros) == ("internal_error", 5, 50)


async def test_a_record_after_close_is_logged_not_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "journal", "no")
    journal.open()
    await journal.close(keep=False)
    with caplog.at_level(logging.ERROR):
        journal.settled(_row(1))
    assert "journal closed: 1 records not journaled" in caplog.text


async def test_shutdown_waits_for_the_cancelled_requests_to_settle(tmp_path: Path) -> None:
    """uvicorn's backstop cancels the request tasks and runs the lifespan shutdown at once: the
    gateway lets them settle (a Redis round trip) before it closes the ledger."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", journal_path=str(tmp_path / "j")
    )
    gateway = Gateway(settings)
    settled = asyncio.Event()
    started = asyncio.Event()

    async def request() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            for _ in range(3):
                await asyncio.sleep(0)  # settle() awaiting the gate
            settled.set()

    task = asyncio.create_task(request())
    gateway.requests.add(task)
    await started.wait()
    task.cancel()
    await gateway._wait_for_requests()
    assert settled.is_set()
    await gateway.store.close()


async def test_always_shares_one_fdatasync_between_concurrent_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``journal_fsync: always``: every settled row is on disk before its response ends, and
    the rows written while one fdatasync runs share the next one (a group commit)."""
    release = threading.Event()
    calls: list[str] = []

    def fdatasync(fd: int) -> None:
        calls.append(threading.current_thread().name)
        release.wait(30)  # the disk is slow: rows pile up behind this sync

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    journal = Journal(tmp_path / "journal", "always")
    journal.open()
    ledger = LedgerWriter(SimpleNamespace(), 60, 1000, journal=journal)  # type: ignore[arg-type]
    admissions = Admissions(SimpleNamespace(), ledger)  # type: ignore[arg-type]

    async def settle(hold: object, cost: int, tokens: int) -> int:
        return cost

    admissions.gate.settle = settle  # type: ignore[attr-defined]
    model = SimpleNamespace(name="m", price=_Price())
    done: list[int] = []

    async def request(n: int) -> None:
        key = SimpleNamespace(id="key-1", account_id="")
        ticket = Ticket(f"req-{n}", key, model, False, None, 5, 0.0)  # type: ignore[arg-type]
        await admissions.settle(ticket, TokenUsage(prompt_tokens=5), "ok", "u", "m")
        done.append(n)

    first = asyncio.create_task(request(0))
    while not calls:  # the first sync is running in its thread
        await asyncio.sleep(0.001)
    others = [asyncio.create_task(request(n)) for n in range(1, 50)]
    await asyncio.sleep(0)
    assert done == []  # nobody's response ends before its row is on disk
    release.set()
    await asyncio.gather(first, *others)
    assert sorted(done) == list(range(50))
    assert 2 <= len(calls) <= 3  # 50 rows: the first sync, then one (or two) for the rest
    assert threading.main_thread().name not in calls
    await journal.close(keep=False)


def _header(store: str, row: list[str], admitted: list[str] | None = None) -> bytes:
    fields = {
        "version": 1,
        "row": row,
        "admitted": admitted or list(journal_format.ADMITTED_FIELDS),
        "store": store,
    }
    return b"H" + json.dumps(fields).encode() + b"\n"


async def test_replay_decodes_a_file_by_its_own_field_list(store: SqlStore, tmp_path: Path) -> None:
    """A file written by a version whose rows had other fields, in another order."""
    directory = tmp_path / "journal"
    fields = [
        "cost_micros",
        "request_id",
        "key_id",
        "model",
        "upstream",
        "upstream_model",
        "created_at",
        "status",
        "latency_ms",
        "stream",
        "completion_tokens",
        "gone",
    ]
    values = [123, "req-1", "key-1", "m", "u", "m", 5, "ok", 9, False, 40, "dropped"]
    admitted = [
        "cost_micros",
        "request_id",
        "key_id",
        "model",
        "created_at",
        "stream",
        "prompt_tokens",
    ]
    _orphan(
        directory,
        "1-0-aaa.journal",
        _header("", fields, admitted),
        b"S" + json.dumps(values).encode() + b"\n",
        b'O[4,"req-2","key-1","m",6,true,7]\n',
    )
    writer = LedgerWriter(store, 60, 100, journal=Journal(directory, "no"))
    await writer.start()
    rows = {row.request_id: row for row in await store.ledger_rows("key-1")}
    assert (rows["req-1"].cost_micros, rows["req-1"].completion_tokens) == (123, 40)
    assert (rows["req-2"].status, rows["req-2"].cost_micros) == ("interrupted", 4)
    assert rows["req-2"].prompt_tokens == 7
    await writer.close()


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
async def test_an_interrupted_row_keeps_the_api_the_client_called(
    store: SqlStore, tmp_path: Path, api: str
) -> None:
    directory = tmp_path / "journal"
    journal = Journal(directory, "no")
    journal.open()
    journal.admitted("req-1", "key-1", "m", 5, True, 7, 4, api)
    for segment in [*journal._retired, journal._current]:  # killed: the files stay
        assert segment is not None
        os.close(segment.fd)
    writer = LedgerWriter(store, 60, 100, journal=Journal(directory, "no"))
    await writer.start()
    (row,) = await store.ledger_rows("key-1")
    assert (row.status, row.api, row.cost_micros, row.prompt_tokens) == ("interrupted", api, 4, 7)
    await writer.close()


@pytest.mark.parametrize("header", [True, False], ids=["previous-version", "no-header"])
async def test_admissions_written_before_the_api_field_replay_as_chat(
    store: SqlStore, tmp_path: Path, header: bool
) -> None:
    """A file of the previous version (its header lists seven admission fields) or of one
    before headers: the interrupted row's ``api`` is the column's default, ``chat``."""
    directory = tmp_path / "journal"
    first = [_header("", list(journal_format.ROW_FIELDS), list(journal_format.ADMITTED_FIELDS_V1))]
    _orphan(
        directory,
        "1-0-aaa.journal",
        *(first if header else []),
        b'O["req-2","key-1","m",6,true,7,4]\n',
    )
    writer = LedgerWriter(store, 60, 100, journal=Journal(directory, "no"))
    await writer.start()
    (row,) = await store.ledger_rows("key-1")
    assert (row.request_id, row.status, row.api, row.cost_micros) == (
        "req-2",
        "interrupted",
        "chat",
        4,
    )
    await writer.close()


def test_a_file_this_version_writes_names_the_api_in_its_header(tmp_path: Path) -> None:
    """The header lists ``api`` among the admission fields, so the previous version (which
    reads a file by its header's lists, the same format version) reads it too."""
    journal = Journal(tmp_path / "journal", "no")
    journal.open()
    journal.admitted("req-1", "key-1", "m", 5, True, 7, 4, "messages")
    assert journal._current is not None
    path = journal._current.path
    first, admitted = path.read_bytes().split(b"\n")[:2]
    found = json.loads(first[1:])
    assert (found["version"], found["admitted"][-1]) == (1, "api")
    values = json.loads(admitted[1:])
    assert dict(zip(found["admitted"], values, strict=True))["api"] == "messages"
    for segment in [*journal._retired, journal._current]:
        assert segment is not None
        os.close(segment.fd)


async def test_files_of_another_store_are_left_in_place(
    store: SqlStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "journal"
    ours = journal_format.store_fingerprint(f"sqlite:///{tmp_path / 'ledger.db'}")
    theirs = journal_format.store_fingerprint(f"sqlite:///{tmp_path / 'other.db'}")
    old = Journal(directory, "no", store=theirs)  # another deployment, same directory
    old.open()
    old.settled(_row(1))
    assert old._current is not None
    os.close(old._current.fd)  # it died
    foreign = old._current.path
    written = Journal(directory, "no", store=ours)
    written.open()
    written.settled(_row(2))
    assert written._current is not None
    os.close(written._current.fd)
    writer = LedgerWriter(store, 60, 100, journal=Journal(directory, "no", store=ours))
    with caplog.at_level(logging.ERROR):
        await writer.start()
    assert [row.request_id for row in await store.ledger_rows("key-1")] == ["req-2"]
    assert foreign.exists()
    assert "is left in place, not replayed: another store" in caplog.text
    await writer.close()


def test_the_store_fingerprint_ignores_the_password() -> None:
    fingerprint = journal_format.store_fingerprint
    assert fingerprint("postgresql://u:one@db/x") == fingerprint("postgresql://u:two@db/x")
    assert fingerprint("postgresql://u:one@db/x") != fingerprint("postgresql://u:one@db/y")
    assert "one" not in fingerprint("postgresql://u:one@db/x")
