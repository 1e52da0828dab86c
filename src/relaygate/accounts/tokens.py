"""Admin tokens: the credentials of scripts on the admin API.

Random (256 bits) with a visible ``rga-`` prefix, stored only as a SHA-256 hash, compared in
constant time. They are never API keys: the key cache holds only API keys' hashes, and the
admin API refuses API keys (``sk-``) before it looks anything up.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from relaygate.accounts import audit
from relaygate.accounts.accounts import clean_name, require_admin
from relaygate.accounts.principal import Principal
from relaygate.errors import AuthenticationFailed, NotFound
from relaygate.store import admin_sql
from relaygate.store.admin_sql import AdminTokenRecord
from relaygate.store.sql import SqlStore

ADMIN_TOKEN_PREFIX = "rga-"  # noqa: S105 - a prefix, not a secret


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_admin_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_admin_token(
    store: SqlStore, principal: Principal, name: str, *, now: int | None = None
) -> tuple[AdminTokenRecord, str]:
    """A new admin token; returns it and the token itself, shown once."""
    require_admin(principal, "create admin tokens")
    name = clean_name(name)
    token = new_admin_token()
    record = AdminTokenRecord(
        id="atk_" + secrets.token_hex(8),
        name=name,
        token_hash=hash_admin_token(token),
        prefix=token[:10],
        created_at=int(time.time()) if now is None else now,
    )
    entry = audit.entry(
        principal, "admin_token.create", "admin_token", record.id, detail={"name": name}
    )
    await admin_sql.insert_admin_token(store, record, entry)
    return record, token


async def verify_admin_token(store: SqlStore, token: str, address: str | None) -> Principal | None:
    """The admin behind ``token``; ``None`` when it is no admin token (not ``rga-``); 401 when
    it is one that is unknown or revoked."""
    if not token.startswith(ADMIN_TOKEN_PREFIX):
        return None
    digest = hash_admin_token(token)
    record = await admin_sql.admin_token_by_hash(store, digest)
    if record is None or not hmac.compare_digest(record.token_hash, digest):
        raise AuthenticationFailed("Invalid admin token")
    if record.revoked_at is not None:
        raise AuthenticationFailed("This admin token has been revoked")
    return Principal(via="admin_token", id=record.id, role="admin", address=address)


async def list_admin_tokens(store: SqlStore, principal: Principal) -> list[AdminTokenRecord]:
    require_admin(principal, "list admin tokens")
    return await admin_sql.list_admin_tokens(store)


async def revoke_admin_token(
    store: SqlStore, principal: Principal, token_id: str, *, now: int | None = None
) -> AdminTokenRecord:
    require_admin(principal, "revoke admin tokens")
    entry = audit.entry(principal, "admin_token.revoke", "admin_token", token_id)
    revoked = await admin_sql.revoke_admin_token(
        store, token_id, int(time.time()) if now is None else now, entry
    )
    if revoked is None:
        raise NotFound("No active admin token with that id")
    return revoked
