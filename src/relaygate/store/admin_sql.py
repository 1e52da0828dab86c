"""The admin API's SQL: accounts, their keys, credit grants, redemption codes, admin tokens and
the audit log.

Every function takes the :class:`SqlStore` first and runs one transaction. A change and its
audit entry are written in the same transaction: no change without its entry, no entry without
its change. Every key or account change takes the next key revision, so each gateway's cache
picks it up within ``key_refresh_seconds``. Decisions that must hold under concurrency are made
in SQL (a conditional ``UPDATE ... RETURNING``, a unique index), never by an in-process lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import Row, and_, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from relaygate.store.periods import period_start
from relaygate.store.reads import read_first
from relaygate.store.records import AccountRecord, KeyRecord
from relaygate.store.schema import (
    accounts,
    admin_tokens,
    api_keys,
    audit_log,
    credit_grants,
    ledger,
    redemption_codes,
)
from relaygate.store.sql import SqlStore, _key_from_row, _next_revision, account_from_row

Page = tuple[int, str] | None
"""Where a listing resumes: the last row's ``(created_at, id)``, newest first."""


@dataclass(slots=True)
class AuditEntry:
    """One admin action: who, what, when, from where."""

    at: int
    """Unix milliseconds."""
    actor: str
    action: str
    target_type: str
    target_id: str
    account_id: str | None = None
    address: str | None = None
    detail: dict[str, Any] | None = None
    id: int = 0


@dataclass(slots=True)
class GrantRecord:
    """A change of an account's granted credits."""

    id: str
    account_id: str
    amount_micros: int
    source: str
    """``grant`` or ``code``."""
    actor: str
    created_at: int
    note: str | None = None
    idempotency_key: str | None = None
    granted_after: int = 0
    used_after: int = 0


@dataclass(slots=True)
class CodeRecord:
    """A redemption code as stored: its hash, never the code."""

    id: str
    code_hash: str
    prefix: str
    amount_micros: int
    created_at: int
    created_by: str
    expires_at: int | None = None
    redeemed_at: int | None = None
    account_id: str | None = None


@dataclass(slots=True)
class AdminTokenRecord:
    """An admin token as stored: its hash, never the token."""

    id: str
    name: str
    token_hash: str
    prefix: str
    created_at: int
    revoked_at: int | None = None


class GrantRefused(Exception):
    """The grant would take the account's granted credits below what it used, or the account
    does not exist; nothing was written."""

    def __init__(self, reason: str, account: AccountRecord | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.account = account


class TooManyKeys(Exception):
    """The account holds as many keys (not revoked) as it may; nothing was written."""

    def __init__(self, held: int) -> None:
        super().__init__(held)
        self.held = held


class IdempotencyMismatch(Exception):
    """The ``Idempotency-Key`` was used before for a different request."""


# --- rows ------------------------------------------------------------------------------------


def _audit_from_row(row: Row[Any]) -> AuditEntry:
    m = dict(row._mapping)
    m["detail"] = json.loads(m["detail"])
    return AuditEntry(**m)


async def _audit(conn: AsyncConnection, entry: AuditEntry) -> None:
    values = asdict(entry)
    del values["id"]
    values["detail"] = json.dumps(entry.detail or {}, sort_keys=True)
    await conn.execute(audit_log.insert().values(**values))


async def _account_for_update(conn: AsyncConnection, account_id: str) -> AccountRecord | None:
    query = select(accounts).where(accounts.c.id == account_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return account_from_row(row) if row else None


def _page(query: Any, table: Any, after: Page, limit: int) -> Any:
    """Newest first, resuming after ``after``; one row more than ``limit`` tells if more
    follow."""
    c = table.c
    if after is not None:
        created, ident = after
        query = query.where(
            or_(c.created_at < created, and_(c.created_at == created, c.id < ident))
        )
    return query.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)


# --- accounts --------------------------------------------------------------------------------


async def insert_account(
    store: SqlStore, record: AccountRecord, grant: GrantRecord | None, entry: AuditEntry
) -> AccountRecord:
    """Create an account (with its initial grant, if any) and its audit entry."""
    values = asdict(record)
    async with store.engine.begin() as conn:
        values["revision"] = await _next_revision(conn)
        await conn.execute(accounts.insert().values(**values))
        if grant is not None:
            grant.granted_after, grant.used_after = record.granted_micros, 0
            await conn.execute(credit_grants.insert().values(**asdict(grant)))
        await _audit(conn, entry)
        row = (await conn.execute(select(accounts).where(accounts.c.id == record.id))).one()
    return account_from_row(row)


async def get_account(store: SqlStore, account_id: str) -> AccountRecord | None:
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
    return account_from_row(row) if row else None


async def list_accounts(
    store: SqlStore, *, q: str | None, only: str | None, after: Page, limit: int
) -> list[AccountRecord]:
    """Accounts newest first; ``q`` matches a part of the name (any case) or the whole id;
    ``only`` restricts the listing to one account (a member's)."""
    query = select(accounts)
    if only is not None:
        query = query.where(accounts.c.id == only)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(accounts.c.name.ilike(pattern, escape="\\"), accounts.c.id == q))
    async with store.engine.connect() as conn:
        rows = await conn.execute(_page(query, accounts, after, limit))
        return [account_from_row(row) for row in rows]


async def update_account(
    store: SqlStore, account_id: str, values: dict[str, Any], entry: AuditEntry
) -> AccountRecord | None:
    async with store.engine.begin() as conn:
        revision = await _next_revision(conn)  # first, always: one lock order for every change
        if await _account_for_update(conn, account_id) is None:
            return None
        await conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(revision=revision, **values)
        )
        await _audit(conn, entry)
        row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).one()
    return account_from_row(row)


# --- keys ------------------------------------------------------------------------------------


def _key_values(record: KeyRecord) -> dict[str, Any]:
    values = asdict(record)
    values["models"] = json.dumps(list(record.models)) if record.models is not None else None
    return values


async def insert_key(
    store: SqlStore, record: KeyRecord, entry: AuditEntry, *, max_keys: int | None = None
) -> KeyRecord | AccountRecord | None:
    """Create a key under its account, which must exist and be active, and hold fewer than
    ``max_keys`` keys that are not revoked (else :class:`TooManyKeys`). The count is read with
    the account's row locked (PostgreSQL; SQLite's transaction holds the database), so keys
    created at once never pass the limit together.

    Returns the key; the account when it is suspended (nothing written); ``None`` when there is
    no such account."""
    async with store.engine.begin() as conn:
        revision = await _next_revision(conn)
        account = await _account_for_update(conn, record.account_id)
        if account is None or account.status != "active":
            return account
        if max_keys is not None:
            k = api_keys.c
            held = await conn.execute(
                select(func.count()).where(k.account_id == account.id, k.revoked_at.is_(None))
            )
            count = int(held.scalar_one())
            if count >= max_keys:
                raise TooManyKeys(count)
        values = _key_values(record)
        values["revision"] = revision
        await conn.execute(api_keys.insert().values(**values))
        await _audit(conn, entry)
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == record.id))).one()
    return _key_from_row(row)


async def list_keys(store: SqlStore, account_id: str, after: Page, limit: int) -> list[KeyRecord]:
    query = select(api_keys).where(api_keys.c.account_id == account_id)
    async with store.engine.connect() as conn:
        rows = await conn.execute(_page(query, api_keys, after, limit))
        return [_key_from_row(row) for row in rows]


async def key_for_update(conn: AsyncConnection, key_id: str) -> KeyRecord | None:
    query = select(api_keys).where(api_keys.c.id == key_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _key_from_row(row) if row else None


async def update_key(
    store: SqlStore, key_id: str, values: dict[str, Any], entry: AuditEntry
) -> KeyRecord | None:
    """Change a key (``values`` as columns). The caller checked the change against the key as
    :func:`key_for_update` reads it, in its own transaction: see :func:`checked_key_update`."""
    async with store.engine.begin() as conn:
        revision = await _next_revision(conn)
        return await _update_key(conn, key_id, revision, values, entry)


async def _update_key(
    conn: AsyncConnection, key_id: str, revision: int, values: dict[str, Any], entry: AuditEntry
) -> KeyRecord | None:
    if "models" in values and values["models"] is not None:
        values = {**values, "models": json.dumps(list(values["models"]))}
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(revision=revision, **values)
        .returning(*api_keys.c)
    )
    row = result.first()
    if row is None:
        return None
    await _audit(conn, entry)
    return _key_from_row(row)


async def checked_key_update(
    store: SqlStore,
    key_id: str,
    check: Any,
    values: dict[str, Any],
    entry: AuditEntry,
    *,
    now: int | None = None,
) -> KeyRecord | None:
    """Read the key locked, let ``check(key)`` raise to refuse the change (nothing written),
    then apply ``values``. ``None``: no such key. A cap set where there was none, or moved to
    another kind of period, is first rebased on what the key spent in it (the check sees
    that)."""
    async with store.engine.begin() as conn:
        revision = await _next_revision(conn)
        current = await key_for_update(conn, key_id)
        if current is None:
            return None
        moment = int(time.time()) if now is None else now
        rebased = await _rebase_cap(conn, current, values, moment)
        if rebased:
            current = replace(
                current,
                period_used_micros=rebased["period_used_micros"],
                period_start=rebased["period_start"],
            )
            values = {**values, **rebased}
        check(current)
        return await _update_key(conn, key_id, revision, values, entry)


async def _rebase_cap(
    conn: AsyncConnection, key: KeyRecord, values: dict[str, Any], now: int
) -> dict[str, int]:
    """A cap set where there was none, or moved to another kind of period, counts what the key
    has already spent in that period (from the ledger; its lifetime use for ``total``), so that
    neither the check against it nor the gates start it at zero."""
    limit = values.get("spend_limit_micros", key.spend_limit_micros)
    period = values.get("spend_limit_period", key.spend_limit_period) or "total"
    if limit is None:
        return {}
    if key.spend_limit_micros is not None and (key.spend_limit_period or "total") == period:
        return {}
    if period == "total":
        return {"period_used_micros": key.used_micros, "period_start": 0}
    start = period_start(period, now)
    spent = await conn.execute(
        select(func.coalesce(func.sum(ledger.c.cost_micros), 0)).where(
            ledger.c.key_id == key.id, ledger.c.created_at >= start * 1000
        )
    )
    return {"period_used_micros": int(spent.scalar_one()), "period_start": start}


# --- credits ---------------------------------------------------------------------------------


async def grant_credits(store: SqlStore, grant: GrantRecord, entry: AuditEntry) -> GrantRecord:
    """Add ``grant.amount_micros`` (negative: take away) to the account's granted credits.

    With an idempotency key, a grant already made with it is returned instead (raises
    :class:`IdempotencyMismatch` when it was for another account, amount or note): the unique
    index decides, so concurrent requests with one key add once. A negative amount may not take
    granted below used (:class:`GrantRefused`).
    """
    try:
        async with store.engine.begin() as conn:
            revision = await _next_revision(conn)  # first: it orders concurrent grants
            return await _grant(conn, revision, grant, entry)
    except IntegrityError:
        if grant.idempotency_key is None:
            raise
    # Another transaction made the grant with this key first (PostgreSQL answers a
    # conflicting insert in a concurrent transaction with a unique violation after waiting).
    async with store.engine.connect() as conn:
        earlier = await _grant_by_key(conn, grant.idempotency_key)
    if earlier is None:  # pragma: no cover - the conflicting row was committed
        raise GrantRefused("conflict")
    return _replayed(earlier, grant)


async def _grant_by_key(conn: AsyncConnection, key: str) -> GrantRecord | None:
    row = (
        await conn.execute(select(credit_grants).where(credit_grants.c.idempotency_key == key))
    ).first()
    return GrantRecord(**dict(row._mapping)) if row else None


def _replayed(earlier: GrantRecord, grant: GrantRecord) -> GrantRecord:
    same = (earlier.account_id, earlier.amount_micros, earlier.note) == (
        grant.account_id,
        grant.amount_micros,
        grant.note,
    )
    if not same:
        raise IdempotencyMismatch(earlier.id)
    return earlier


async def _grant(
    conn: AsyncConnection, revision: int, grant: GrantRecord, entry: AuditEntry
) -> GrantRecord:
    """The grant inside the caller's transaction, which took ``revision`` first."""
    if grant.idempotency_key is not None:
        earlier = await _grant_by_key(conn, grant.idempotency_key)
        if earlier is not None:
            return _replayed(earlier, grant)
    c = accounts.c
    result = await conn.execute(
        update(accounts)
        .where(
            c.id == grant.account_id,
            # only taking credits back is bounded: a top-up is always welcome
            or_(
                literal(grant.amount_micros) >= 0,
                c.granted_micros + grant.amount_micros >= c.used_micros,
            ),
        )
        .values(granted_micros=c.granted_micros + grant.amount_micros, revision=revision)
        .returning(c.granted_micros, c.used_micros)
    )
    balance = result.first()
    if balance is None:
        account = await _account_for_update(conn, grant.account_id)
        raise GrantRefused("below_used" if account else "no_account", account)
    grant.granted_after, grant.used_after = int(balance[0]), int(balance[1])
    await conn.execute(credit_grants.insert().values(**asdict(grant)))
    await _audit(conn, entry)
    return grant


async def list_grants(store: SqlStore, account_id: str, limit: int = 100) -> list[GrantRecord]:
    query = (
        select(credit_grants)
        .where(credit_grants.c.account_id == account_id)
        .order_by(credit_grants.c.created_at.desc(), credit_grants.c.id.desc())
        .limit(limit)
    )
    async with store.engine.connect() as conn:
        return [GrantRecord(**dict(row._mapping)) for row in await conn.execute(query)]


# --- redemption codes ------------------------------------------------------------------------


async def insert_codes(store: SqlStore, codes: Sequence[CodeRecord], entry: AuditEntry) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(redemption_codes.insert(), [asdict(code) for code in codes])
        await _audit(conn, entry)


async def list_codes(store: SqlStore, after: Page, limit: int) -> list[CodeRecord]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(_page(select(redemption_codes), redemption_codes, after, limit))
        return [CodeRecord(**dict(row._mapping)) for row in rows]


async def code_by_hash(store: SqlStore, code_hash: str) -> CodeRecord | None:
    async with store.engine.connect() as conn:
        query = select(redemption_codes).where(redemption_codes.c.code_hash == code_hash)
        row = (await conn.execute(query)).first()
    return CodeRecord(**dict(row._mapping)) if row else None


async def redeem_code(
    store: SqlStore,
    code_hash: str,
    account_id: str,
    now: int,
    grant: GrantRecord,
    entry: AuditEntry,
) -> tuple[str, GrantRecord | AccountRecord | None]:
    """Redeem a code into an active account, once: the code is marked redeemed by a
    conditional ``UPDATE`` that only one transaction can win, and its amount granted in the
    same transaction.

    Returns ``("ok", grant)``, ``("no_account", None)``, ``("suspended", account)`` or
    ``("unusable", None)`` (unknown, already redeemed or expired; nothing written)."""
    async with store.engine.begin() as conn:
        revision = await _next_revision(conn)
        account = await _account_for_update(conn, account_id)
        if account is None:
            return "no_account", None
        if account.status != "active":
            return "suspended", account
        c = redemption_codes.c
        won = await conn.execute(
            update(redemption_codes)
            .where(
                c.code_hash == code_hash,
                c.redeemed_at.is_(None),
                or_(c.expires_at.is_(None), c.expires_at > now),
            )
            .values(redeemed_at=now, account_id=account_id)
            .returning(c.id, c.amount_micros)
        )
        row = won.first()
        if row is None:
            return "unusable", None
        code_id, amount = row
        grant.amount_micros = int(amount)
        grant.note = f"redemption code {code_id}"
        entry.target_id = code_id
        entry.detail = {**(entry.detail or {}), "amount_micros": int(amount)}
        return "ok", await _grant(conn, revision, grant, entry)


# --- admin tokens ----------------------------------------------------------------------------


async def insert_admin_token(store: SqlStore, record: AdminTokenRecord, entry: AuditEntry) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(admin_tokens.insert().values(**asdict(record)))
        await _audit(conn, entry)


async def admin_token_by_hash(store: SqlStore, token_hash: str) -> AdminTokenRecord | None:
    """The token with this hash; a plain read (every admin request: never the write lock)."""
    query = select(admin_tokens).where(admin_tokens.c.token_hash == token_hash)
    row = await read_first(store, query)
    if row is None:
        return None
    return AdminTokenRecord(**{c.name: v for c, v in zip(admin_tokens.columns, row, strict=True)})


async def list_admin_tokens(store: SqlStore) -> list[AdminTokenRecord]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(admin_tokens).order_by(admin_tokens.c.created_at))
        return [AdminTokenRecord(**dict(row._mapping)) for row in rows]


async def revoke_admin_token(
    store: SqlStore, token_id: str, now: int, entry: AuditEntry
) -> AdminTokenRecord | None:
    async with store.engine.begin() as conn:
        c = admin_tokens.c
        result = await conn.execute(
            update(admin_tokens)
            .where(c.id == token_id, c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(*admin_tokens.c)
        )
        row = result.first()
        if row is None:
            return None
        await _audit(conn, entry)
    return AdminTokenRecord(**dict(row._mapping))


# --- audit -----------------------------------------------------------------------------------


async def append_audit(store: SqlStore, entry: AuditEntry) -> None:
    """An audit entry on its own (for actions whose change another module wrote)."""
    async with store.engine.begin() as conn:
        await _audit(conn, entry)


async def list_audit(
    store: SqlStore, *, account_id: str | None, before: int | None, limit: int
) -> list[AuditEntry]:
    """Entries newest first, each before id ``before``; ``account_id`` keeps one account's."""
    query = select(audit_log)
    if account_id is not None:
        query = query.where(audit_log.c.account_id == account_id)
    if before is not None:
        query = query.where(audit_log.c.id < before)
    query = query.order_by(audit_log.c.id.desc()).limit(limit + 1)
    async with store.engine.connect() as conn:
        return [_audit_from_row(row) for row in await conn.execute(query)]
