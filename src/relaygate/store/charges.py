"""What a ledger batch charges: each key (its lifetime use and its spend cap's current period)
and each account, added in the batch's transaction by :meth:`SqlStore.write_ledger`."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import BigInteger, bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from relaygate.store.periods import period_starts
from relaygate.store.schema import accounts, api_keys


class Spend:
    """What a ledger batch adds: to each key (lifetime, and its current spend-cap period), and
    to each account."""

    def __init__(self, now: float) -> None:
        self.starts = period_starts(now)
        self.keys: dict[str, dict[str, int]] = {}
        self.accounts: dict[str, int] = defaultdict(int)
        self.unknown_account: dict[str, int] = defaultdict(int)
        """Costs of rows that name no account (journalled admissions): charged to the key's."""

    def add(self, key_id: str, account_id: str | None, cost: int, created_ms: int) -> None:
        sums = self.keys.get(key_id)
        if sums is None:
            sums = self.keys[key_id] = dict.fromkeys(("total", "day", "week", "month"), 0)
        sums["total"] += cost
        for period in ("day", "week", "month"):
            if created_ms >= self.starts[period] * 1000:  # a row of an earlier period: not here
                sums[period] += cost
        if account_id:
            self.accounts[account_id] += cost
        else:
            self.unknown_account[key_id] += cost

    async def apply(self, conn: AsyncConnection) -> None:
        """Charge the keys, then their accounts, each in id order: two replicas' batches lock
        the same rows in the same order, so they wait for each other instead of deadlocking."""
        keys = [
            {"k": key_id, **{f"m_{p}": m for p, m in sums.items()}}
            for key_id, sums in sorted(self.keys.items())
            if any(sums.values())
        ]
        if keys:
            await conn.execute(_charge_keys(self.starts), keys)
        if self.accounts:
            a = accounts.c
            await conn.execute(
                update(accounts)
                .where(a.id == bindparam("a"))
                .values(used_micros=a.used_micros + _micros("m")),
                [{"a": account_id, "m": m} for account_id, m in sorted(self.accounts.items())],
            )
        if self.unknown_account:
            owner = select(api_keys.c.account_id).where(api_keys.c.id == bindparam("k"))
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == owner.scalar_subquery())
                .values(used_micros=accounts.c.used_micros + _micros("m")),
                [{"k": key_id, "m": m} for key_id, m in sorted(self.unknown_account.items())],
            )


def _micros(name: str) -> Any:
    return bindparam(name, type_=BigInteger)


def _charge_keys(starts: dict[str, int]) -> Any:
    """Add to a key's lifetime use and to its spend-cap period's, starting the period afresh
    when the key's ``period_start`` is an earlier one (the cap resets on the period)."""
    k = api_keys.c
    period_used: Any = k.period_used_micros + _micros("m_total")
    period_start: Any = k.period_start
    for period in ("day", "week", "month"):
        start, spent = starts[period], _micros(f"m_{period}")
        in_period = case((k.period_start == start, k.period_used_micros + spent), else_=spent)
        period_used = case((k.spend_limit_period == period, in_period), else_=period_used)
        period_start = case((k.spend_limit_period == period, start), else_=period_start)
    return (
        update(api_keys)
        .where(k.id == bindparam("k"))
        .values(
            used_micros=k.used_micros + _micros("m_total"),
            period_used_micros=period_used,
            period_start=period_start,
        )
    )
