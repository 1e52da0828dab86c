"""Accounts: they own the balance their keys spend.

Who may do what: an admin every account; a member reads its own account, renames it and sets
its low-balance threshold. Another account is a 404 to a member, as if it did not exist.

A member of a suspended account may still sign in and read everything of its account (the
account, its balance, keys, usage, request log and audit log), so that it can see why; every
change it asks for is a 403 (:func:`check_writable`), changes nothing and is not audited (the
audit log records changes, and a refusal changes nothing). Admins are unaffected.
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal
from typing import Any

from relaygate.accounting.prices import micros_to_usd, usd_to_micros
from relaygate.accounts import audit
from relaygate.accounts.principal import Principal
from relaygate.errors import InvalidRequest, NotFound, PermissionDenied
from relaygate.store import admin_sql
from relaygate.store.admin_sql import GrantRecord, Page
from relaygate.store.records import AccountRecord
from relaygate.store.sql import SqlStore

MAX_NAME = 200
"""The longest name of an account, key or admin token, in characters."""
MAX_USD = Decimal(1_000_000_000)
"""The largest amount accepted anywhere, in USD (a billion)."""
STATUSES = ("active", "suspended")
MEMBER_ACCOUNT_FIELDS = frozenset({"name", "low_balance_micros"})
"""What a member may change on its own account."""


def new_account_id() -> str:
    return "acct_" + secrets.token_hex(8)


def require_admin(principal: Principal, what: str) -> None:
    if principal.role != "admin":
        raise PermissionDenied(f"Only an admin may {what}")


def check_visible(principal: Principal, account_id: str, what: str = "account") -> None:
    """404 for an account the principal may not see (it cannot tell whether it exists)."""
    if not principal.may_see(account_id):
        raise NotFound(f"No {what} with that id")


SUSPENDED_READ_ONLY = (
    "The account is suspended: its members can read it (balance, keys, usage, requests, audit)"
    " but change nothing. Ask the operator to reactivate it"
)


async def check_writable(store: SqlStore, principal: Principal, account_id: str) -> None:
    """403 when a member asks to change something of a suspended account (its own: the caller
    has checked that it may see it). An admin may change a suspended account (reactivating it
    first of all). Read before the change, in its own statement: a write that races the
    suspension is one that came just before it."""
    if principal.role == "admin":
        return
    account = await admin_sql.get_account(store, account_id)
    if account is not None and account.status != "active":
        raise PermissionDenied(SUSPENDED_READ_ONLY)


def clean_name(value: str, param: str = "name", *, required: bool = True) -> str:
    name = value.strip()
    if len(value) > MAX_NAME:
        raise InvalidRequest(f"{param} is longer than {MAX_NAME} characters", param=param)
    if required and not name:
        raise InvalidRequest(f"{param} must not be empty", param=param)
    if any(ord(ch) < 32 for ch in name):
        raise InvalidRequest(f"{param} must not contain control characters", param=param)
    return name


def usd_micros(value: Decimal, param: str, *, negative: bool = False, zero: bool = True) -> int:
    """An amount in USD as integer micro-USD, exactly, or 400: not a finite number, finer than
    a micro-dollar, negative (unless allowed), zero (unless allowed), or absurdly large."""
    if not value.is_finite():
        raise InvalidRequest(f"{param} must be a finite amount in USD", param=param)
    if abs(value) > MAX_USD:
        raise InvalidRequest(f"{param} must be at most {MAX_USD} USD", param=param)
    if value < 0 and not negative:
        raise InvalidRequest(f"{param} must not be negative", param=param)
    if value == 0 and not zero:
        raise InvalidRequest(f"{param} must not be zero", param=param)
    try:
        return usd_to_micros(value)
    except ValueError:
        raise InvalidRequest(
            f"{param} must not be finer than a micro-dollar (6 decimal places)", param=param
        ) from None


def usd(micros: int | None) -> str | None:
    """Money as the API shows it: a decimal string of USD with six places."""
    return None if micros is None else str(micros_to_usd(micros))


async def create_account(
    store: SqlStore,
    principal: Principal,
    *,
    name: str,
    credits_micros: int = 0,
    unlimited: bool = False,
    now: int | None = None,
) -> AccountRecord:
    """A new active account, with ``credits_micros`` granted (recorded as its first grant)."""
    require_admin(principal, "create accounts")
    name = clean_name(name)
    if credits_micros < 0:
        raise InvalidRequest("credits_usd must not be negative", param="credits_usd")
    now = int(time.time()) if now is None else now
    record = AccountRecord(
        id=new_account_id(),
        name=name,
        created_at=now,
        granted_micros=credits_micros,
        unlimited=unlimited,
    )
    grant = None
    if credits_micros:
        grant = GrantRecord(
            id=new_grant_id(),
            account_id=record.id,
            amount_micros=credits_micros,
            source="grant",
            actor=principal.actor,
            created_at=now,
            note="initial credits",
        )
    detail = {"name": name, "credits_micros": credits_micros, "unlimited": unlimited}
    entry = audit.entry(
        principal, "account.create", "account", record.id, account_id=record.id, detail=detail
    )
    return await admin_sql.insert_account(store, record, grant, entry)


def new_grant_id() -> str:
    return "grant_" + secrets.token_hex(8)


async def get_account(store: SqlStore, principal: Principal, account_id: str) -> AccountRecord:
    check_visible(principal, account_id)
    account = await admin_sql.get_account(store, account_id)
    if account is None:
        raise NotFound("No account with that id")
    return account


async def list_accounts(
    store: SqlStore, principal: Principal, *, q: str | None, after: Page, limit: int
) -> tuple[list[AccountRecord], bool]:
    """Accounts newest first (a member sees its own), and whether more follow."""
    if q is not None and len(q) > MAX_NAME:
        raise InvalidRequest(f"q is longer than {MAX_NAME} characters", param="q")
    only = None if principal.role == "admin" else principal.account_id or "-"
    rows = await admin_sql.list_accounts(store, q=q, only=only, after=after, limit=limit)
    return rows[:limit], len(rows) > limit


def _account_changes(principal: Principal, changes: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field, value in changes.items():
        if principal.role != "admin" and field not in MEMBER_ACCOUNT_FIELDS:
            raise PermissionDenied(f"Only an admin may change an account's {field}")
        if field == "name":
            values["name"] = clean_name(value)
        elif field == "status":
            if value not in STATUSES:
                raise InvalidRequest("status must be 'active' or 'suspended'", param="status")
            values["status"] = value
        elif field in ("rpm", "tpm", "max_concurrency"):
            if value is not None and not 1 <= value <= 10**9:
                raise InvalidRequest(f"{field} must be between 1 and 10^9 (or null)", param=field)
            values[field] = value
        elif field == "low_balance_micros":
            if value is not None and value < 0:
                raise InvalidRequest("low_balance_usd must not be negative", param=field)
            # the alert's state is left as it is: the detector re-arms an account whose
            # balance is back above its threshold (resetting it here let anyone who may set
            # the threshold send the operator an alert at will)
            values[field] = value
        else:
            raise InvalidRequest(f"{field} cannot be changed", param=field)
    return values


async def update_account(
    store: SqlStore, principal: Principal, account_id: str, changes: dict[str, Any]
) -> AccountRecord:
    """Change an account: ``name``, ``status``, ``rpm``, ``tpm``, ``max_concurrency``,
    ``low_balance_micros`` (only the fields given)."""
    check_visible(principal, account_id)
    await check_writable(store, principal, account_id)
    values = _account_changes(principal, changes)
    entry = audit.entry(
        principal, "account.update", "account", account_id, account_id=account_id, detail=values
    )
    if not values:
        return await get_account(store, principal, account_id)
    account = await admin_sql.update_account(store, account_id, values, entry)
    if account is None:
        raise NotFound("No account with that id")
    return account
