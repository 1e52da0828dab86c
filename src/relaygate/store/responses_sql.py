"""Stored responses (``previous_response_id``): kept per account, read back by their owner
only, purged once their retention time is over.

An expired response is never read (the read checks ``expires_at``); the rows themselves are
deleted by :meth:`ResponseStore.purge`, which the gateway runs at most once per
:data:`PURGE_EVERY_SECONDS`, on a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import and_, case, delete, func, select

from relaygate.store.schema import stored_responses
from relaygate.store.sql import SqlStore

PURGE_EVERY_SECONDS = 60.0
"""The least time between two purges of expired responses by one process."""

_items = msgspec.json.Decoder(list[dict[str, Any]])
_NO_LOCK = contextlib.nullcontext()


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored conversation as read: its items (``None``: too large, not read) and its
    encoded size in bytes (at least; in characters when it was not read)."""

    items: list[dict[str, Any]] | None
    size: int


class ResponseStore:
    """The ``stored_responses`` table of ``store``."""

    def __init__(self, store: SqlStore, retention_seconds: int) -> None:
        self.store = store
        self.retention = retention_seconds
        self._next_purge = 0.0
        self._sizing = asyncio.Semaphore(1)
        """SQLite reads a text whole to tell its length: one such read at a time."""

    async def save(
        self,
        response_id: str,
        owner: str,
        key_id: str,
        model: str,
        items: list[dict[str, Any]],
        now: float | None = None,
    ) -> None:
        """Keep ``items`` (the whole conversation through this response's output)."""
        now = time.time() if now is None else now
        row = {
            "id": response_id,
            "account_id": owner,
            "key_id": key_id,
            "model": model,
            "created_at": int(now),
            "expires_at": int(now) + self.retention,
            "conversation": msgspec.json.encode(items).decode(),
        }
        async with self.store.engine.begin() as conn:
            await conn.execute(stored_responses.insert(), row)
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_SECONDS
            await self.purge(now)

    async def load(
        self, response_id: str, owner: str, now: float | None = None
    ) -> list[dict[str, Any]] | None:
        """The conversation of ``owner``'s response, or ``None`` (unknown, another owner's, or
        expired: one answer for all three, so that ids of other accounts cannot be probed)."""
        found = await self.load_sized(response_id, owner, None, now)
        return None if found is None else found.items

    async def load_sized(
        self, response_id: str, owner: str, max_bytes: int | None, now: float | None = None
    ) -> Stored | None:
        """:meth:`load`, with the conversation's encoded size; one longer than ``max_bytes``
        is not read (``Stored.items`` is ``None``), so that a read is bounded by it."""
        now = time.time() if now is None else now
        column = stored_responses.c.conversation
        length = func.length(column)  # characters: never more than its UTF-8 bytes
        text_column = column if max_bytes is None else case((length <= max_bytes, column))
        query = select(length, text_column).where(
            and_(
                stored_responses.c.id == response_id,
                stored_responses.c.account_id == owner,
                stored_responses.c.expires_at > int(now),
            )
        )
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        chars, text = row
        if text is None:
            return Stored(None, int(chars))
        encoded = text.encode()
        if max_bytes is not None and len(encoded) > max_bytes:
            return Stored(None, len(encoded))
        return Stored(_items.decode(encoded), len(encoded))

    async def size(self, response_id: str, owner: str, now: float | None = None) -> int | None:
        """The encoded size of ``owner``'s stored conversation (as :meth:`load` finds it), or
        ``None``, without reading it into Python: PostgreSQL tells its bytes from the stored
        value's header; SQLite (3.43 would tell bytes with ``octet_length``) counts its
        characters (never more than its bytes) by reading it whole in C, one read at a time."""
        now = time.time() if now is None else now
        column = stored_responses.c.conversation
        postgres = self.store.engine.dialect.name == "postgresql"
        query = select(func.octet_length(column) if postgres else func.length(column)).where(
            and_(
                stored_responses.c.id == response_id,
                stored_responses.c.account_id == owner,
                stored_responses.c.expires_at > int(now),
            )
        )
        async with self._sizing if not postgres else _NO_LOCK, self.store.engine.connect() as conn:
            size = (await conn.execute(query)).scalar_one_or_none()
        return None if size is None else int(size)

    async def purge(self, now: float | None = None) -> int:
        """Delete every expired response; returns how many."""
        now = time.time() if now is None else now
        async with self.store.engine.begin() as conn:
            result = await conn.execute(
                delete(stored_responses).where(stored_responses.c.expires_at <= int(now))
            )
        return int(result.rowcount or 0)
