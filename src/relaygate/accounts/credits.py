"""Top-ups: an admin grants credits to an account (or takes them back, never below what the
account has used). With an idempotency key, a repeated request answers the first result and
adds nothing."""

from __future__ import annotations

import time

from relaygate.accounts import audit
from relaygate.accounts.accounts import MAX_NAME, check_visible, new_grant_id, require_admin, usd
from relaygate.accounts.principal import Principal
from relaygate.errors import Conflict, InvalidRequest, NotFound
from relaygate.store import admin_sql
from relaygate.store.admin_sql import GrantRecord, GrantRefused, IdempotencyMismatch
from relaygate.store.sql import SqlStore

MAX_NOTE = 500
MAX_IDEMPOTENCY_KEY = MAX_NAME


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
            param="Idempotency-Key",
        )
    return value


async def add_credits(
    store: SqlStore,
    principal: Principal,
    account_id: str,
    amount_micros: int,
    *,
    note: str | None = None,
    idempotency_key: str | None = None,
    now: int | None = None,
) -> tuple[GrantRecord, bool]:
    """Grant ``amount_micros`` (negative: take back) to an account; returns the grant and
    whether it is the answer of an earlier request with the same idempotency key."""
    check_visible(principal, account_id)
    require_admin(principal, "grant credits")
    if amount_micros == 0:
        raise InvalidRequest("amount_usd must not be zero", param="amount_usd")
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidRequest(f"note is longer than {MAX_NOTE} characters", param="note")
    idempotency_key = check_idempotency_key(idempotency_key)
    now = int(time.time()) if now is None else now
    grant = GrantRecord(
        id=new_grant_id(),
        account_id=account_id,
        amount_micros=amount_micros,
        source="grant",
        actor=principal.actor,
        created_at=now,
        note=note,
        idempotency_key=idempotency_key,
    )
    detail = {"amount_micros": amount_micros, "note": note, "grant_id": grant.id}
    entry = audit.entry(
        principal, "credits.add", "account", account_id, account_id=account_id, detail=detail
    )
    try:
        made = await admin_sql.grant_credits(store, grant, entry)
    except GrantRefused as refused:
        if refused.account is None:
            raise NotFound("No account with that id") from None
        account = refused.account
        raise InvalidRequest(
            f"amount_usd {usd(amount_micros)} would take the account's credits"
            f" ({usd(account.granted_micros)} USD) below what it has used"
            f" ({usd(account.used_micros)} USD)",
            param="amount_usd",
        ) from None
    except IdempotencyMismatch:
        raise Conflict(
            "This Idempotency-Key was used for a different request (another account, amount"
            " or note): use a new key for a new grant",
            param="Idempotency-Key",
        ) from None
    return made, made.id != grant.id


async def list_grants(
    store: SqlStore, principal: Principal, account_id: str, *, limit: int = 100
) -> list[GrantRecord]:
    """An account's top-up history, newest first: grants and redeemed codes (a member sees
    its own account's)."""
    check_visible(principal, account_id)
    return await admin_sql.list_grants(store, account_id, max(1, min(limit, 500)))
