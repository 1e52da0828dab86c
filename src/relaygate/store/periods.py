"""Spend-cap periods: the UTC calendar period a moment falls in.

A key's spend cap covers ``total`` (its lifetime: one period that never ends, starting at 0),
or the UTC ``day``, ``week`` (from Monday 00:00) or ``month`` (from the 1st, 00:00) the moment
falls in, as OpenRouter's key limits reset. The store, the in-process gate and the Redis gate
all name a period by its start in unix seconds, from :func:`period_start`.
"""

from __future__ import annotations

from datetime import UTC, datetime

PERIODS = ("total", "day", "week", "month")
_DAY = 86_400


def period_start(period: str | None, now: float) -> int:
    """The start (unix seconds) of the period of kind ``period`` that ``now`` falls in;
    0 for ``total`` (or no period)."""
    if period == "day":
        return int(now) - int(now) % _DAY
    if period == "week":
        day = int(now) // _DAY
        return (day - (day + 3) % 7) * _DAY  # 1970-01-01 was a Thursday
    if period == "month":
        moment = datetime.fromtimestamp(int(now), UTC)
        return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())
    return 0


def period_starts(now: float) -> dict[str, int]:
    """The start of every kind of period at ``now`` (for one statement covering many keys)."""
    return {period: period_start(period, now) for period in PERIODS}
