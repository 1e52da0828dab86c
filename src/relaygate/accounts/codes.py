"""Redemption codes: each worth an amount, shown once when created, stored as a hash, and
redeemed into an account exactly once (a conditional update only one transaction wins)."""

from __future__ import annotations

import hashlib
import secrets
import time

from relaygate.accounts import audit
from relaygate.accounts.accounts import (
    check_visible,
    check_writable,
    new_grant_id,
    require_admin,
)
from relaygate.accounts.principal import Principal
from relaygate.errors import Conflict, InvalidRequest, NotFound
from relaygate.store import admin_sql
from relaygate.store.admin_sql import CodeRecord, GrantRecord, Page
from relaygate.store.sql import SqlStore

CODE_PREFIX = "rgc-"
MAX_CODES = 1000
"""The most codes one request creates."""
MAX_CODE_CHARS = 100


def new_code() -> str:
    """A code of 144 random bits: nobody guesses one."""
    return CODE_PREFIX + secrets.token_urlsafe(18)


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


async def create_codes(
    store: SqlStore,
    principal: Principal,
    *,
    count: int,
    amount_micros: int,
    expires_at: int | None = None,
    now: int | None = None,
) -> list[tuple[CodeRecord, str]]:
    """``count`` new codes worth ``amount_micros`` each; returns them with the codes, which
    are never shown again."""
    require_admin(principal, "create redemption codes")
    if not 1 <= count <= MAX_CODES:
        raise InvalidRequest(f"count must be between 1 and {MAX_CODES}", param="count")
    if amount_micros <= 0:
        raise InvalidRequest("amount_usd must be more than zero", param="amount_usd")
    now = int(time.time()) if now is None else now
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("expires_at must be in the future", param="expires_at")
    made = []
    for _ in range(count):
        code = new_code()
        record = CodeRecord(
            id="code_" + secrets.token_hex(8),
            code_hash=hash_code(code),
            prefix=code[:8],
            amount_micros=amount_micros,
            created_at=now,
            created_by=principal.actor,
            expires_at=expires_at,
        )
        made.append((record, code))
    detail = {
        "count": count,
        "amount_micros": amount_micros,
        "expires_at": expires_at,
        "ids": [record.id for record, _ in made],
    }
    entry = audit.entry(principal, "codes.create", "redemption_code", made[0][0].id, detail=detail)
    await admin_sql.insert_codes(store, [record for record, _ in made], entry)
    return made


async def list_codes(
    store: SqlStore, principal: Principal, *, after: Page, limit: int
) -> tuple[list[CodeRecord], bool]:
    require_admin(principal, "list redemption codes")
    rows = await admin_sql.list_codes(store, after, limit)
    return rows[:limit], len(rows) > limit


async def redeem(
    store: SqlStore, principal: Principal, account_id: str, code: str, *, now: int | None = None
) -> GrantRecord:
    """Credit a code's amount to an active account, once."""
    check_visible(principal, account_id)
    await check_writable(store, principal, account_id)
    code = code.strip()
    if not code or len(code) > MAX_CODE_CHARS:
        raise InvalidRequest("This is not a redemption code", param="code")
    now = int(time.time()) if now is None else now
    code_hash = hash_code(code)
    grant = GrantRecord(
        id=new_grant_id(),
        account_id=account_id,
        amount_micros=0,
        source="code",
        actor=principal.actor,
        created_at=now,
    )
    entry = audit.entry(
        principal,
        "code.redeem",
        "redemption_code",
        "",
        account_id=account_id,
        detail={"grant_id": grant.id},
    )
    outcome, made = await admin_sql.redeem_code(store, code_hash, account_id, now, grant, entry)
    if outcome == "ok" and isinstance(made, GrantRecord):
        return made
    if outcome == "no_account":
        raise NotFound("No account with that id")
    if outcome == "suspended":
        raise InvalidRequest("The account is suspended: it cannot redeem codes", param="account_id")
    return await _refusal(store, code_hash, now)


async def _refusal(store: SqlStore, code_hash: str, now: int) -> GrantRecord:
    """Why a code could not be redeemed (raised, never returned)."""
    code = await admin_sql.code_by_hash(store, code_hash)
    if code is None:
        raise NotFound("No such redemption code", param="code")
    if code.redeemed_at is not None:
        raise Conflict("This redemption code has already been redeemed", param="code")
    raise InvalidRequest("This redemption code has expired", param="code")
