"""Stored responses (``relaygate.store.responses_sql``) on SQLite and PostgreSQL."""

from __future__ import annotations

import msgspec
import pytest

from relaygate.store import SqlStore
from relaygate.store.responses_sql import ResponseStore
from tests.store.test_store import backend, store

__all__ = ["backend", "store"]

ITEMS = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]},
]


@pytest.mark.asyncio
async def test_an_owner_reads_back_its_response(store: SqlStore) -> None:
    responses = ResponseStore(store, retention_seconds=60)
    await responses.save("resp_1", "acct_a", "key_a", "m", ITEMS, now=1000)
    assert await responses.load("resp_1", "acct_a", now=1001) == ITEMS


@pytest.mark.asyncio
async def test_another_account_and_unknown_ids_read_nothing(store: SqlStore) -> None:
    responses = ResponseStore(store, retention_seconds=60)
    await responses.save("resp_1", "acct_a", "key_a", "m", ITEMS, now=1000)
    assert await responses.load("resp_1", "acct_b", now=1001) is None
    assert await responses.load("resp_2", "acct_a", now=1001) is None


@pytest.mark.asyncio
async def test_expired_responses_are_not_read_and_are_purged(store: SqlStore) -> None:
    responses = ResponseStore(store, retention_seconds=60)
    await responses.save("resp_old", "acct_a", "key_a", "m", ITEMS, now=1000)
    await responses.save("resp_new", "acct_a", "key_a", "m", ITEMS, now=1050)
    assert await responses.load("resp_old", "acct_a", now=1060) is None
    assert await responses.purge(now=1060) == 1
    assert await responses.purge(now=1060) == 0
    assert await responses.load("resp_new", "acct_a", now=1060) == ITEMS


@pytest.mark.asyncio
async def test_a_conversation_longer_than_asked_is_sized_but_not_read(store: SqlStore) -> None:
    responses = ResponseStore(store, retention_seconds=60)
    items = [*ITEMS, {"type": "message", "role": "user", "content": "é" * 100}]
    await responses.save("resp_1", "acct_a", "key_a", "m", items, now=1000)
    size = len(msgspec.json.encode(items))  # "é" is 2 bytes: 100 more bytes than characters
    fits = await responses.load_sized("resp_1", "acct_a", size, now=1001)
    assert fits is not None
    assert (fits.items, fits.size) == (items, size)
    for limit in (size - 1, size - 100, 10):  # too long in bytes, or already in characters
        found = await responses.load_sized("resp_1", "acct_a", limit, now=1001)
        assert found is not None
        assert found.items is None
        assert found.size > limit
    assert await responses.load_sized("resp_1", "acct_b", size, now=1001) is None


@pytest.mark.asyncio
async def test_the_response_object_is_read_back_by_its_owner_and_deleted(store: SqlStore) -> None:
    responses = ResponseStore(store, retention_seconds=60)
    response = {"id": "resp_1", "object": "response", "status": "completed", "model": "m"}
    await responses.save("resp_1", "acct_a", "key_a", "m", ITEMS, now=1000,
                         response=response, outputs=1)  # fmt: skip
    assert await responses.load("resp_1", "acct_a", now=1001) == ITEMS  # still continued
    assert await responses.get("resp_1", "acct_a", now=1001) == {**response, "output": ITEMS[1:]}
    assert await responses.get("resp_1", "acct_b", now=1001) is None
    assert await responses.get("resp_1", "acct_a", now=1061) is None  # expired
    assert await responses.delete("resp_1", "acct_b", now=1001) is False
    assert await responses.delete("resp_1", "acct_a", now=1001) is True
    assert await responses.delete("resp_1", "acct_a", now=1001) is False
    assert await responses.load("resp_1", "acct_a", now=1001) is None


@pytest.mark.asyncio
async def test_a_row_of_the_earlier_form_is_continued_but_has_no_response_object(
    store: SqlStore,
) -> None:
    responses = ResponseStore(store, retention_seconds=60)
    await responses.save("resp_1", "acct_a", "key_a", "m", ITEMS, now=1000)  # a bare list
    assert await responses.load("resp_1", "acct_a", now=1001) == ITEMS
    assert await responses.get("resp_1", "acct_a", now=1001) is None
    assert await responses.delete("resp_1", "acct_a", now=1001) is True
