"""Accounts with several keys, made straight in a gateway's store (the admin API's job once it
exists; the CLI's ``keys create`` makes one account per key)."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from relaygate.keys.tokens import display_prefix, hash_key, new_key, new_key_id
from relaygate.store.records import AccountRecord, KeyRecord
from relaygate.store.sql import SqlStore


@dataclass
class Issued:
    """A key as its holder has it: the record and the key itself."""

    record: KeyRecord
    key: str

    @property
    def id(self) -> str:
        return self.record.id


async def open_account(
    database_url: str,
    granted_micros: int,
    keys: int,
    *,
    account: dict[str, Any] | None = None,
    key: dict[str, Any] | None = None,
) -> tuple[AccountRecord, list[Issued]]:
    """An account holding ``granted_micros`` and ``keys`` keys beneath it (each with the
    ``key`` fields: a spend cap, say)."""
    store = SqlStore(database_url)
    try:
        await store.upgrade()
        record = AccountRecord(
            id=f"acct_{secrets.token_hex(8)}",
            name="test account",
            created_at=int(time.time()),
            granted_micros=granted_micros,
            **(account or {}),
        )
        issued = []
        for n in range(keys):
            raw = new_key()
            created = await store.create_key(
                KeyRecord(
                    id=new_key_id(),
                    name=f"key {n}",
                    key_hash=hash_key(raw),
                    prefix=display_prefix(raw),
                    created_at=int(time.time()),
                    account_id="" if n == 0 else record.id,
                    **(key or {}),
                ),
                account=record if n == 0 else None,
            )
            issued.append(Issued(created, raw))
        found = await store.get_account(record.id)
        assert found is not None
        return found, issued
    finally:
        await store.close()


def open_account_sync(
    database_url: str, granted_micros: int, keys: int, **fields: Any
) -> tuple[AccountRecord, list[Issued]]:
    return asyncio.run(open_account(database_url, granted_micros, keys, **fields))


async def in_store(database_url: str, work: Any) -> Any:
    """``await work(store)`` on a store of ``database_url``, opened and closed around it."""
    store = SqlStore(database_url)
    try:
        return await work(store)
    finally:
        await store.close()
