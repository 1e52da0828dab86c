"""Low-balance alerts in the store: claiming crossings, and the delivery records.

Every decision is one SQL statement, so it holds across replicas sharing the database:

- a crossing is claimed by flipping ``accounts.low_balance_alerted`` from false to true
  (``UPDATE ... WHERE NOT low_balance_alerted ... RETURNING``): one replica wins it, and its
  delivery record is written in the same transaction;
- a due delivery is claimed for one attempt by moving its ``next_attempt_at`` a lease ahead
  (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) AND next_attempt_at <= now``):
  one replica sends it, and if that replica dies mid-send the lease runs out and another does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, ScalarSelect, false, or_, select, true, update

from relaygate.store.schema import accounts, alert_deliveries
from relaygate.store.sql import SqlStore


@dataclass(frozen=True, slots=True)
class Crossing:
    """An account found below its low-balance threshold, as the claim read it."""

    account_id: str
    name: str
    granted_micros: int
    used_micros: int
    threshold_micros: int

    @property
    def balance_micros(self) -> int:
        return self.granted_micros - self.used_micros


@dataclass(frozen=True, slots=True)
class AlertDelivery:
    """One alert and the state of its delivery (see ``schema.alert_deliveries``)."""

    id: str
    account_id: str
    threshold_micros: int
    balance_micros: int
    payload: str
    created_at: int
    """Unix milliseconds, like every time in this record."""
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: int | None = None
    next_attempt_at: int | None = None

    @property
    def state(self) -> str:
        """``delivered``, ``pending`` (an attempt is due or under way) or ``failed``."""
        if self.delivered_at is not None:
            return "delivered"
        return "pending" if self.next_attempt_at is not None else "failed"


EventBuilder = Callable[[Crossing, int], tuple[str, str]]
"""``(crossing, now_ms) -> (event_id, payload)``: the alert a claimed crossing becomes."""


def _delivery(row: Row[Any]) -> AlertDelivery:
    return AlertDelivery(**row._mapping)


available = accounts.c.granted_micros - accounts.c.used_micros
"""An account's balance in SQL."""


def _locked(*conditions: ColumnElement[bool]) -> ScalarSelect[Any]:
    """The ids of the accounts meeting ``conditions`` that no other transaction holds.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED``: replicas claiming at once never wait on each
    other's rows (nor deadlock, locking them in different orders), and an account a ledger
    write holds is looked at again at the next check. The conditions are repeated in the
    ``UPDATE``, which checks them on the row it locked. SQLite has one writer at a time."""
    return (
        select(accounts.c.id).where(*conditions).with_for_update(skip_locked=True).scalar_subquery()
    )


async def claim_crossings(store: SqlStore, now_ms: int, build: EventBuilder) -> list[AlertDelivery]:
    """Mark every armed account now below its threshold as alerted, and record one alert for
    each, in one transaction. Concurrent callers (replicas) never claim the same crossing: the
    row lock (PostgreSQL, see :func:`_locked`) or the database lock (SQLite ``BEGIN
    IMMEDIATE``) lets one flip ``low_balance_alerted``, and the other's condition no longer
    holds."""
    a = accounts.c
    crossed = (
        a.low_balance_micros.is_not(None),
        a.low_balance_alerted == false(),
        a.unlimited == false(),
        a.low_balance_micros > available,
    )
    claim = (
        update(accounts)
        .where(a.id.in_(_locked(*crossed)), *crossed)
        .values(low_balance_alerted=True)
        .returning(a.id, a.name, a.granted_micros, a.used_micros, a.low_balance_micros)
    )
    created: list[AlertDelivery] = []
    async with store.engine.begin() as conn:
        for account_id, name, granted, used, threshold in (await conn.execute(claim)).all():
            crossing = Crossing(account_id, name, int(granted), int(used), int(threshold))
            event_id, payload = build(crossing, now_ms)
            created.append(
                AlertDelivery(
                    id=event_id,
                    account_id=account_id,
                    threshold_micros=crossing.threshold_micros,
                    balance_micros=crossing.balance_micros,
                    payload=payload,
                    created_at=now_ms,
                    next_attempt_at=now_ms,
                )
            )
        if created:
            rows = [
                {
                    "id": d.id,
                    "account_id": d.account_id,
                    "threshold_micros": d.threshold_micros,
                    "balance_micros": d.balance_micros,
                    "payload": d.payload,
                    "created_at": d.created_at,
                    "attempts": 0,
                    "next_attempt_at": d.next_attempt_at,
                }
                for d in created
            ]
            await conn.execute(alert_deliveries.insert(), rows)
    return created


async def rearm(store: SqlStore) -> list[str]:
    """Arm again the alerted accounts that are back at or above their threshold (a top-up),
    have no threshold any more, or became unlimited. Returns their ids."""
    a = accounts.c
    lifted = (
        a.low_balance_alerted == true(),
        or_(
            a.low_balance_micros.is_(None),
            a.unlimited == true(),
            a.low_balance_micros <= available,
        ),
    )
    statement = (
        update(accounts)
        .where(a.id.in_(_locked(*lifted)), *lifted)
        .values(low_balance_alerted=False)
        .returning(a.id)
    )
    async with store.engine.begin() as conn:
        return [account_id for (account_id,) in (await conn.execute(statement)).all()]


async def give_up_stale(store: SqlStore, now_ms: int, max_attempts: int) -> list[AlertDelivery]:
    """Give up the deliveries whose last attempt was claimed but never recorded (the process
    died mid-send) and that have no attempt left."""
    d = alert_deliveries.c
    statement = (
        update(alert_deliveries)
        .where(d.next_attempt_at <= now_ms, d.attempts >= max_attempts)
        .values(next_attempt_at=None)
        .returning(*alert_deliveries.columns)
    )
    async with store.engine.begin() as conn:
        return [_delivery(row) for row in (await conn.execute(statement)).all()]


async def claim_due(
    store: SqlStore, now_ms: int, *, lease_ms: int, max_attempts: int, limit: int
) -> list[AlertDelivery]:
    """Claim up to ``limit`` due deliveries for one more attempt each: their ``attempts`` grow
    by one and their next attempt moves ``lease_ms`` ahead, so no other replica sends them
    while this one does (and one does if this one never records the outcome)."""
    d = alert_deliveries.c
    due = (
        select(d.id)
        .where(d.next_attempt_at <= now_ms, d.attempts < max_attempts)
        .order_by(d.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(alert_deliveries)
        # repeated outside the subquery: PostgreSQL re-checks these on a row another
        # transaction changed meanwhile, so a delivery is never claimed twice at once
        .where(d.id.in_(due.scalar_subquery()), d.next_attempt_at <= now_ms)
        .where(d.attempts < max_attempts)
        .values(attempts=d.attempts + 1, next_attempt_at=now_ms + lease_ms)
        .returning(*alert_deliveries.columns)
    )
    async with store.engine.begin() as conn:
        return [_delivery(row) for row in (await conn.execute(statement)).all()]


async def record_attempt(
    store: SqlStore,
    delivery: AlertDelivery,
    *,
    status: int | None,
    error: str | None,
    delivered_at: int | None,
    next_attempt_at: int | None,
) -> bool:
    """Record the outcome of the attempt ``delivery`` was claimed for (its ``attempts`` is that
    attempt's number). A failure is recorded only if no later attempt was claimed meanwhile;
    a success always is. Returns whether it was recorded."""
    d = alert_deliveries.c
    statement = update(alert_deliveries).where(d.id == delivery.id, d.delivered_at.is_(None))
    if delivered_at is None:
        statement = statement.where(d.attempts == delivery.attempts)
    statement = statement.values(
        last_status=status,
        last_error=error[:200] if error is not None else None,
        delivered_at=delivered_at,
        next_attempt_at=next_attempt_at,
    )
    async with store.engine.begin() as conn:
        return (await conn.execute(statement)).rowcount == 1


async def deliveries(
    store: SqlStore, account_id: str | None = None, limit: int = 100
) -> list[AlertDelivery]:
    """The latest alerts, newest first (of one account, or of every account)."""
    d = alert_deliveries.c
    query = select(alert_deliveries).order_by(d.created_at.desc(), d.id).limit(limit)
    if account_id is not None:
        query = query.where(d.account_id == account_id)
    async with store.engine.begin() as conn:
        return [_delivery(row) for row in (await conn.execute(query)).all()]
