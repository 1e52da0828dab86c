"""Keys beneath an account: created (the raw key returned once, stored hashed), listed,
changed and revoked. Each change takes a key revision, so every gateway applies it within
``key_refresh_seconds``."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from relaygate.accounts import audit
from relaygate.accounts.accounts import check_visible, check_writable, clean_name, usd
from relaygate.accounts.principal import Principal
from relaygate.errors import Conflict, InvalidRequest, NotFound
from relaygate.keys.tokens import display_prefix, hash_key, new_key, new_key_id
from relaygate.store import admin_sql
from relaygate.store.admin_sql import Page, TooManyKeys
from relaygate.store.periods import period_start
from relaygate.store.records import AccountRecord, KeyRecord
from relaygate.store.sql import SqlStore

PERIODS = ("total", "day", "week", "month")
MAX_KEYS_PER_ACCOUNT = 100
"""The default of ``max_keys_per_account``: the most keys (not revoked) an account holds."""
MAX_MODELS = 200
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency")
KEY_FIELDS = frozenset(
    {"name", "models", *LIMIT_FIELDS, "expires_at", "spend_limit_micros", "spend_limit_period"}
)


def spent_in_period(key: KeyRecord, period: str, now: int) -> int:
    """What ``key`` has spent in its current ``period`` (its lifetime for ``total``)."""
    if period == "total":
        return key.used_micros
    return key.period_used_micros if key.period_start >= period_start(period, now) else 0


def _clean(field: str, value: Any, known_models: Collection[str] | None, now: int) -> Any:
    if field == "name":
        return clean_name(value, required=False)
    if field == "models":
        if value is None:
            return None
        if len(value) > MAX_MODELS:
            raise InvalidRequest(f"models lists more than {MAX_MODELS} models", param="models")
        unknown = [m for m in value if known_models is not None and m not in known_models]
        if unknown:
            raise InvalidRequest(f"Unknown model {unknown[0][:200]!r}", param="models")
        return tuple(dict.fromkeys(value))
    if field in LIMIT_FIELDS:
        if value is not None and not 1 <= value <= 10**9:
            raise InvalidRequest(f"{field} must be between 1 and 10^9 (or null)", param=field)
        return value
    if field == "expires_at":
        if value is not None and value <= now:
            raise InvalidRequest("expires_at must be in the future", param="expires_at")
        return value
    if field == "spend_limit_micros":
        if value is not None and value < 0:
            raise InvalidRequest("spend_limit_usd must not be negative", param="spend_limit_usd")
        return value
    if field == "spend_limit_period":
        if value is not None and value not in PERIODS:
            raise InvalidRequest(
                "spend_limit_period must be one of total, day, week, month",
                param="spend_limit_period",
            )
        return value
    raise InvalidRequest(f"{field} cannot be changed", param=field)


def clean_key_fields(
    changes: dict[str, Any], known_models: Collection[str] | None, now: int
) -> dict[str, Any]:
    """Validated column values of a key (``concurrency`` is ``max_concurrency``)."""
    return {field: _clean(field, value, known_models, now) for field, value in changes.items()}


async def create_key(
    store: SqlStore,
    principal: Principal,
    account_id: str,
    fields: dict[str, Any],
    *,
    known_models: Collection[str] | None = None,
    now: int | None = None,
    max_keys: int | None = MAX_KEYS_PER_ACCOUNT,
) -> tuple[KeyRecord, str]:
    """A new key under an active account; returns it and the raw key (shown once). An account
    that already holds ``max_keys`` keys (revoked ones not counted) gets no more: 409."""
    check_visible(principal, account_id)
    await check_writable(store, principal, account_id)
    now = int(time.time()) if now is None else now
    values = clean_key_fields(fields, known_models, now)
    if values.get("spend_limit_micros") is None:
        if values.get("spend_limit_period") is not None:
            raise InvalidRequest(
                "spend_limit_period needs spend_limit_usd", param="spend_limit_period"
            )
    elif values.get("spend_limit_period") is None:
        values["spend_limit_period"] = "total"
    raw = new_key()
    record = KeyRecord(
        id=new_key_id(),
        key_hash=hash_key(raw),
        prefix=display_prefix(raw),
        created_at=now,
        account_id=account_id,
        **{"name": "", **values},
    )
    entry = audit.entry(
        principal, "key.create", "key", record.id, account_id=account_id, detail=_detail(values)
    )
    try:
        created = await admin_sql.insert_key(store, record, entry, max_keys=max_keys)
    except TooManyKeys as refused:
        raise Conflict(
            f"The account already holds {refused.held} keys, the most it may"
            f" (max_keys_per_account = {max_keys}): revoke one it no longer uses first"
        ) from None
    if created is None:
        raise NotFound("No account with that id")
    if isinstance(created, AccountRecord):
        raise InvalidRequest(
            "The account is suspended: reactivate it before adding keys", param="account_id"
        )
    return created, raw


def _detail(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


async def list_keys(
    store: SqlStore, principal: Principal, account_id: str, *, after: Page, limit: int
) -> tuple[list[KeyRecord], bool]:
    check_visible(principal, account_id)
    if await admin_sql.get_account(store, account_id) is None:
        raise NotFound("No account with that id")
    rows = await admin_sql.list_keys(store, account_id, after, limit)
    return rows[:limit], len(rows) > limit


async def get_key(store: SqlStore, principal: Principal, key_id: str) -> KeyRecord:
    key = await store.get_key(key_id)
    if key is None or not principal.may_see(key.account_id):
        raise NotFound("No key with that id")
    return key


def _check_cap(values: dict[str, Any], now: int) -> Any:
    def check(key: KeyRecord) -> None:
        if key.revoked_at is not None:
            raise InvalidRequest("The key is revoked: a revoked key cannot be changed")
        cap = values.get("spend_limit_micros", key.spend_limit_micros)
        period = values.get("spend_limit_period", key.spend_limit_period) or "total"
        if cap is None:
            return
        spent = spent_in_period(key, period, now)
        if cap < spent:
            where = "in its lifetime" if period == "total" else f"this {period}"
            raise InvalidRequest(
                f"spend_limit_usd {usd(cap)} is below the {usd(spent)} USD the key has already"
                f" spent {where}",
                param="spend_limit_usd",
            )

    return check


async def update_key(
    store: SqlStore,
    principal: Principal,
    key_id: str,
    changes: dict[str, Any],
    *,
    known_models: Collection[str] | None = None,
    now: int | None = None,
) -> KeyRecord:
    """Change a key (only the fields given). A spend cap below what the key has already spent
    in its period is refused, decided on the key's row as the transaction holds it."""
    key = await get_key(store, principal, key_id)
    await check_writable(store, principal, key.account_id)
    now = int(time.time()) if now is None else now
    values = clean_key_fields(changes, known_models, now)
    new_cap = values.get("spend_limit_micros")
    if new_cap is not None and values.get("spend_limit_period", key.spend_limit_period) is None:
        values["spend_limit_period"] = "total"
    if not values:
        return key
    entry = audit.entry(
        principal, "key.update", "key", key_id, account_id=key.account_id, detail=_detail(values)
    )
    updated = await admin_sql.checked_key_update(
        store, key_id, _check_cap(values, now), values, entry, now=now
    )
    if updated is None:
        raise NotFound("No key with that id")
    return updated


async def revoke_key(
    store: SqlStore, principal: Principal, key_id: str, *, now: int | None = None
) -> KeyRecord:
    """Revoke a key (again: no change); it stops working on every gateway within a second."""
    key = await get_key(store, principal, key_id)
    await check_writable(store, principal, key.account_id)
    if key.revoked_at is not None:
        return key
    now = int(time.time()) if now is None else now
    entry = audit.entry(principal, "key.revoke", "key", key_id, account_id=key.account_id)
    revoked = await admin_sql.update_key(store, key_id, {"revoked_at": now}, entry)
    if revoked is None:
        raise NotFound("No key with that id")
    return revoked
