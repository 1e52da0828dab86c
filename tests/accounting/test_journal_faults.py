"""The journal under faults: short writes on a nearly full disk, failed rotations, workers
recovering together, and a settle cancelled by the shutdown deadline."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relaygate.accounting.journal import Journal
from relaygate.store.records import KeyRecord, LedgerRow
from relaygate.store.sql import SqlStore


def _row(n: int, status: str = "ok", cost: int = 10, request_id: str = "") -> LedgerRow:
    return LedgerRow(
        request_id=request_id or f"req-{n}",
        key_id="key-1",
        model="m",
        upstream="u",
        upstream_model="m",
        created_at=n,
        status=status,
        cost_micros=cost,
        latency_ms=1,
        stream=False,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    await store.upgrade()
    await store.create_key(
        KeyRecord(
            id="key-1", name="k", key_hash="h", prefix="p", created_at=0, granted_micros=10**9
        )
    )
    yield store
    await store.close()


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
    journal = Journal(directory, "no")
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
