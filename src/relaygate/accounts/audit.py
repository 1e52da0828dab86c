"""The audit log: every admin action, who made it, when and from where.

The business functions of this package write their entry in the same transaction as their
change (see :mod:`relaygate.store.admin_sql`); :func:`record` is for actions whose change
another module wrote (a sign-in, an alert sent).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from relaygate.accounts.principal import Principal
from relaygate.store import admin_sql
from relaygate.store.admin_sql import AuditEntry, Page
from relaygate.store.sql import SqlStore


def entry(
    principal: Principal,
    action: str,
    target_type: str,
    target_id: str,
    *,
    account_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """The audit entry of ``principal`` doing ``action`` to ``target_type`` ``target_id``."""
    return AuditEntry(
        at=int(time.time() * 1000),
        actor=principal.actor,
        address=principal.address,
        action=action,
        target_type=target_type,
        target_id=target_id,
        account_id=account_id,
        detail=detail or {},
    )


async def record(
    store: SqlStore,
    principal: Principal,
    action: str,
    target_type: str,
    target_id: str,
    detail: dict[str, Any],
    *,
    account_id: str | None = None,
) -> None:
    """Write one audit entry on its own."""
    await admin_sql.append_audit(
        store,
        entry(principal, action, target_type, target_id, account_id=account_id, detail=detail),
    )


async def read(
    store: SqlStore, principal: Principal, *, before: int | None, limit: int
) -> tuple[list[AuditEntry], bool]:
    """Entries newest first (a member reads its own account's), and whether more follow."""
    only = None if principal.role == "admin" else principal.account_id or "-"
    rows = await admin_sql.list_audit(store, account_id=only, before=before, limit=limit)
    if principal.role != "admin":
        rows = [_as_member_sees(row, principal) for row in rows]
    return rows[:limit], len(rows) > limit


def _as_member_sees(row: AuditEntry, principal: Principal) -> AuditEntry:
    """A member sees the operator's actions on its account without the operator's tokens,
    host or addresses (``operator``), and only its own address."""
    actor = row.actor if row.actor.startswith("user:") else "operator"
    address = row.address if row.actor == principal.actor else None
    return replace(row, actor=actor, address=address)


__all__ = ["AuditEntry", "Page", "entry", "read", "record"]
