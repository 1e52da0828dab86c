"""The in-memory key cache: authentication without a database round trip.

Every key and account is loaded at start-up and changes are picked up every
``key_refresh_seconds`` by revision (created, revoked, re-credited keys; accounts credited,
suspended, limited), so a revocation, a suspension or a credit change made by the CLI or the
admin API applies within a second (at once with Redis, whose key-change channel triggers a
refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable

from relaygate.errors import AuthenticationFailed, PermissionDenied
from relaygate.keys.tokens import hash_key
from relaygate.outage import Outage
from relaygate.store.records import AccountRecord, KeyRecord
from relaygate.store.sql import SqlStore

log = logging.getLogger("relaygate.keys")

KeyListener = Callable[[KeyRecord], None]
AccountListener = Callable[[AccountRecord], None]


def bearer_token(authorization: bytes | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header, or raise 401."""
    if not authorization:
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer YOUR_API_KEY'"
        )
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "Malformed Authorization header: expected 'Authorization: Bearer YOUR_API_KEY'"
        )
    return token


class KeyCache:
    """Keys by hash, and their accounts by id, kept in step with the store."""

    def __init__(self, store: SqlStore, refresh_seconds: float) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.by_hash: dict[str, KeyRecord] = {}
        self.by_id: dict[str, KeyRecord] = {}
        self.accounts: dict[str, AccountRecord] = {}
        self.revision = 0
        self.listeners: list[KeyListener] = []
        self.account_listeners: list[AccountListener] = []
        self.outage = Outage(log, "key store (key cache refresh; serving from the cache)")
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        """Apply every change since the last refresh (keys and accounts); returns how many keys
        changed. Accounts are applied first: a new key's account is known when the key is."""
        revision, keys, accounts = await self.store.changes_since(self.revision)
        for account in accounts:
            self.accounts[account.id] = account
            for account_listener in self.account_listeners:
                account_listener(account)
        for record in keys:
            old = self.by_id.get(record.id)
            if old is not None and old.key_hash != record.key_hash:
                self.by_hash.pop(old.key_hash, None)
            self.by_id[record.id] = record
            self.by_hash[record.key_hash] = record
            for listener in self.listeners:
                listener(record)
        self.revision = max(self.revision, revision)
        return len(keys)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="key-refresh")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:
                self.outage.failed(exc)
            else:
                self.outage.ok()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def authenticate(self, authorization: bytes | None, now: float | None = None) -> KeyRecord:
        """The key behind the header, or raise :class:`AuthenticationFailed` (401)."""
        digest = hash_key(bearer_token(authorization))
        record = self.by_hash.get(digest)
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            raise AuthenticationFailed("Invalid or expired token: this API key is not known")
        if record.revoked_at is not None:
            raise AuthenticationFailed("Invalid or expired token: this API key has been revoked")
        if record.expires_at is not None and record.expires_at <= (
            time.time() if now is None else now
        ):
            raise AuthenticationFailed("Invalid or expired token: this API key has expired")
        account = self.accounts.get(record.account_id)
        if account is None and record.account_id:
            raise PermissionDenied(
                "Unknown account: the account this API key belongs to does not exist; ask the"
                " gateway's operator"
            )
        if account is not None and account.status != "active":
            raise PermissionDenied(
                "Account suspended: the account this API key belongs to is suspended, so none"
                " of its keys may be used; ask the gateway's operator to reactivate it"
            )
        return record
