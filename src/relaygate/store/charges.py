"""What a ledger batch charges: each key (its lifetime use and its spend cap's current period)
and each account, added in the batch's transaction by :meth:`SqlStore.write_ledger`."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from operator import itemgetter

from sqlalchemy.ext.asyncio import AsyncConnection

from relaygate.store.periods import period_starts
from relaygate.store.schema import accounts, api_keys

_PERIODS = ("day", "week", "month")


class Spend:
    """What a ledger batch adds: to each key (lifetime, and its current spend-cap period), and
    to each account."""

    def __init__(self, now: float) -> None:
        self.starts = period_starts(now)
        self._period_ms = [self.starts[period] * 1000 for period in _PERIODS]
        self._day_ms = self._period_ms[0]
        """This day's start: a row from then on is in this week and this month too."""
        self.keys: dict[str, list[int]] = {}
        """Each key's sums: lifetime, then this day's, this week's and this month's."""
        self.accounts: dict[str, int] = defaultdict(int)
        self.unknown_account: dict[str, int] = defaultdict(int)
        """Costs of rows that name no account (a replayed admission whose key the store does
        not hold: ``SqlStore.write_ledger`` gives the others their key's): charged by key."""

    def add(self, key_id: str, account_id: str | None, cost: int, created_ms: int) -> None:
        sums = self.keys.get(key_id)
        if sums is None:
            sums = self.keys[key_id] = [0, 0, 0, 0]
        if created_ms >= self._day_ms:  # the common case: this day, week and month
            sums[0] += cost
            sums[1] += cost
            sums[2] += cost
            sums[3] += cost
        else:
            sums[0] += cost
            for i, start_ms in enumerate(self._period_ms, 1):
                if created_ms >= start_ms:  # a row of an earlier period: not here
                    sums[i] += cost
        if account_id:
            self.accounts[account_id] += cost
        else:
            self.unknown_account[key_id] += cost

    async def apply(self, conn: AsyncConnection, dialect: str) -> None:
        """Charge the keys, then their accounts, each in id order: two replicas' batches lock
        the same rows in the same order, so they wait for each other instead of deadlocking.

        Driver-level SQL, one ``executemany`` a statement: a compiled Core UPDATE (three nested
        CASEs for the key) cost the event loop a millisecond and more per ledger batch."""
        starts = self.starts
        keys = [
            (total, starts["day"], day, starts["week"], week, starts["month"], month, key_id)
            for key_id, (total, day, week, month) in sorted(self.keys.items())
            if total or day or week or month
        ]
        if keys:
            await conn.exec_driver_sql(_charge_keys_sql(dialect), keys)
        if self.accounts:
            await conn.exec_driver_sql(
                _charge_accounts_sql(dialect, by_key=False),
                sorted(
                    ((m, account_id) for account_id, m in self.accounts.items()),
                    key=itemgetter(1),
                ),
            )
        if self.unknown_account:
            await conn.exec_driver_sql(
                _charge_accounts_sql(dialect, by_key=True),
                [(m, key_id) for key_id, m in sorted(self.unknown_account.items())],
            )


def _placeholders(dialect: str, count: int) -> list[str]:
    """The driver's numbered placeholders (``?n`` for sqlite3, ``$n`` for asyncpg): a
    parameter used twice is passed once."""
    mark = "?" if dialect == "sqlite" else "$"
    return [f"{mark}{n}" for n in range(1, count + 1)]


@cache
def _charge_keys_sql(dialect: str) -> str:
    """Add to a key's lifetime use and to its spend-cap period's, starting the period afresh
    when the key's ``period_start`` is an earlier one (the cap resets on the period).

    Parameters, in order: the batch's total, then (period start, the period's part) for day,
    week and month, then the key id."""
    *numbers, k = _placeholders(dialect, 8)
    p = [f"CAST({n} AS BIGINT)" for n in numbers]
    table = api_keys.name
    period_used = " ".join(
        f"WHEN '{period}' THEN CASE WHEN period_start = {p[1 + 2 * i]}"
        f" THEN period_used_micros + {p[2 + 2 * i]} ELSE {p[2 + 2 * i]} END"
        for i, period in enumerate(_PERIODS)
    )
    period_start = " ".join(
        f"WHEN '{period}' THEN {p[1 + 2 * i]}" for i, period in enumerate(_PERIODS)
    )
    return (
        f"UPDATE {table} SET used_micros = used_micros + {p[0]},"  # noqa: S608
        f" period_used_micros = CASE spend_limit_period {period_used}"
        f" ELSE period_used_micros + {p[0]} END,"
        f" period_start = CASE spend_limit_period {period_start} ELSE period_start END"
        f" WHERE id = {k}"
    )


@cache
def _charge_accounts_sql(dialect: str, by_key: bool) -> str:
    """Add to an account's ``used_micros``: parameters the amount, then the account id (or,
    ``by_key``, the id of a key whose account it is)."""
    amount, name = _placeholders(dialect, 2)
    owner = f"(SELECT account_id FROM {api_keys.name} WHERE id = {name})"  # noqa: S608
    where = owner if by_key else name
    return (
        f"UPDATE {accounts.name} SET used_micros = used_micros"  # noqa: S608
        f" + CAST({amount} AS BIGINT) WHERE id = {where}"
    )
