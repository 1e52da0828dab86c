"""The store the accounting tests share (a test module may define its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaygate.store.records import KeyRecord
from relaygate.store.sql import SqlStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    await store.upgrade()
    await store.create_key(KeyRecord(id="key-1", name="k", key_hash="h", prefix="p",
                                     created_at=0, granted_micros=10**9))
    yield store
    await store.close()
