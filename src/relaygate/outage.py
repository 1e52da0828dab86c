"""Logging an outage without flooding the log: the first failure in detail, then a count every
``interval`` seconds while it lasts, then one line when it ends.

One :class:`Outage` per dependency (Redis, the store), shared by every call site that talks to
it::

    redis_outage = Outage(log, "redis")
    try:
        await client.ping()
    except RedisError as exc:
        redis_outage.failed(exc, "admission")
    else:
        redis_outage.ok()

While Redis is down, 3,000 failed calls a second give three lines a minute at most: the first
(with its traceback), ``still failing: N failures in the last 60 s`` once a minute, and
``recovered`` at the first success. :meth:`Outage.ok` is an attribute test when nothing failed,
so it can sit on a hot path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    """The state of one dependency's outage, and its throttled log lines."""

    __slots__ = (
        "_clock",
        "_count",
        "_reported_at",
        "_since",
        "failing",
        "interval",
        "log",
        "total",
        "what",
    )

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        self.interval = interval
        self.failing = False
        self.total = 0
        """Failures in the current outage."""
        self._clock = clock
        self._count = 0
        self._since = self._reported_at = 0.0

    def failed(self, exc: BaseException | None = None, context: str = "") -> None:
        """One more failure: logged in detail if it starts an outage, else only counted."""
        now = self._clock()
        if not self.failing:
            self.failing = True
            self.total = self._count = 1
            self._since = self._reported_at = now
            where = f" ({context})" if context else ""
            self.log.error(
                "%s unreachable%s: %s; further failures are counted, not logged",
                self.what,
                where,
                _describe(exc),
                exc_info=exc,
            )
            return
        self.total += 1
        self._count += 1
        if now - self._reported_at >= self.interval:
            self.log.error(
                "%s still failing: %d failures in the last %.0f s",
                self.what,
                self._count,
                now - self._reported_at,
            )
            self._count = 0
            self._reported_at = now

    def ok(self) -> None:
        """A call succeeded: ends the outage (one line) if there was one."""
        if not self.failing:
            return
        self.failing = False
        self.log.warning(
            "%s is back after %.1f s (%d failures)",
            self.what,
            self._clock() - self._since,
            self.total,
        )


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "failed"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
