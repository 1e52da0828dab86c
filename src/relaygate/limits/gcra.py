"""The generic cell rate algorithm (GCRA): a smooth limit of ``limit`` units per ``period``.

The state is one number, the theoretical arrival time (``tat``). A request of ``cost`` units is
allowed when, after adding ``cost * interval``, ``tat`` stays within ``period`` of now: a key may
burst up to its whole limit and then continues at the steady rate; there is no window edge to
double up on, unlike a fixed window.
"""

from __future__ import annotations


class Gcra:
    __slots__ = ("interval", "limit", "period", "tat")

    def __init__(self, limit: int, period: float = 60.0) -> None:
        self.limit = limit
        self.period = period
        self.interval = period / limit
        self.tat = 0.0

    def peek(self, now: float, cost: int) -> tuple[bool, float, float]:
        """``(allowed, new_tat, retry_after)`` for ``cost`` units, without taking them.

        A cost above the limit is treated as the whole limit, so one large request passes on a
        full allowance and later requests pay off the rest.
        """
        cost = min(cost, self.limit)
        new_tat = max(self.tat, now) + cost * self.interval
        excess = new_tat - now - self.period
        if excess > 1e-9:
            return False, self.tat, excess
        return True, new_tat, 0.0

    def adjust(self, units: int) -> None:
        """Charge (positive) or refund (negative) units after the fact."""
        self.tat += units * self.interval
