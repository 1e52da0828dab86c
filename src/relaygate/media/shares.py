"""Each key's share of a worker's image fetches: how many at once, and how much time.

Every key shares one pool of fetch connections (``images.fetch_connections``). Without shares,
one key sending many slow URLs held the whole pool, and every other key's fetches waited for a
connection until they timed out. Two limits keep a key to its share:

* **Concurrency**: at most ``images.per_key_fetches`` fetches of one key run at once (a
  semaphore per key, always below the pool size, so other keys find free connections); further
  fetches of that key wait for one of its own to finish, within their ``fetch_timeout``.
* **Time**: each key has a budget of ``images.per_key_fetch_seconds`` seconds of fetching per
  minute (a token bucket refilled continuously, the time of concurrent fetches added up, slow
  and timed-out fetches included). A key that has spent it gets 429 ``rate_limit_error`` for
  requests that need a fetch, with a ``Retry-After`` of when the budget is positive again.
  A fetch is charged when it ends, so a key can overdraw by the fetches it has running (at
  most ``per_key_fetches`` times ``fetch_timeout``), and then waits that much longer. Images
  from the cache and ``data:`` URLs cost nothing.

The state is per worker, like the connection pool it shares out. A key's record lives while it
has fetches running or waiting, or time still to recover; idle records are dropped by a sweep
at most once a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from relaygate.errors import RateLimited

_WINDOW = 60.0
"""The budget is per minute."""


class _Share:
    __slots__ = ("semaphore", "spent", "updated", "users")

    def __init__(self, concurrent: int, now: float) -> None:
        self.semaphore = asyncio.Semaphore(concurrent)
        self.spent = 0.0
        """Fetch seconds spent and not yet refilled, as of ``updated``."""
        self.updated = now
        self.users = 0
        """Fetches running or waiting for a slot."""


class FetchShares:
    """The shares of one worker's keys (see the module docstring)."""

    def __init__(
        self,
        concurrent: int,
        seconds_per_minute: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrent = concurrent
        self.budget = seconds_per_minute
        self._refill = seconds_per_minute / _WINDOW
        self._clock = clock
        self._shares: dict[str, _Share] = {}
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._shares)

    def spent(self, key: str) -> float:
        """Fetch seconds ``key`` has spent that are not refilled yet."""
        share = self._shares.get(key)
        return 0.0 if share is None else self._settle(share, self._clock())

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold one of ``key``'s fetch slots while the body runs, and charge its duration.

        Raises :class:`RateLimited` (429) if the key's budget is spent, before waiting for a
        slot and again once it has one."""
        now = self._clock()
        self._sweep(now)
        share = self._shares.get(key)
        if share is None:
            share = self._shares[key] = _Share(self.concurrent, now)
        share.users += 1
        try:
            self._check(share, now)
            async with share.semaphore:
                started = self._clock()
                self._check(share, started)
                try:
                    yield
                finally:
                    ended = self._clock()
                    self._settle(share, ended)
                    share.spent += ended - started
        finally:
            share.users -= 1

    def _settle(self, share: _Share, now: float) -> float:
        """Refill ``share`` up to ``now``; the seconds still spent."""
        share.spent = max(0.0, share.spent - (now - share.updated) * self._refill)
        share.updated = now
        return share.spent

    def _check(self, share: _Share, now: float) -> None:
        over = self._settle(share, now) - self.budget
        if over > 0:
            raise RateLimited(
                "Rate limit reached for image fetches: this key has used its"
                f" {self.budget:g} seconds of image downloading per minute (slow image servers"
                " count for the time they take)",
                retry_after=over / self._refill,
            )

    def _sweep(self, now: float) -> None:
        if now - self._swept < _WINDOW:
            return
        self._swept = now
        idle = [
            key
            for key, share in self._shares.items()
            if share.users == 0 and self._settle(share, now) == 0.0
        ]
        for key in idle:
            del self._shares[key]


__all__ = ["FetchShares"]
