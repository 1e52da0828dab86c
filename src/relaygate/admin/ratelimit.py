"""The admin API's rate limit: requests per minute per principal and per client address.

Fixed one-minute windows (the minute of the clock): each request adds one to its address's
count and, once it is authenticated, to its principal's; a count past
``admin_rate_limit_per_minute`` is a 429 with ``Retry-After`` (the rest of the minute), in the
admin API's error shape. A refused request still counts, so a client that keeps knocking stays
refused until the minute ends. The address is counted before anything is looked up, so a flood
of bad credentials costs no database read past the limit.

Where the counts live: in Redis when ``redis_url`` is set (one ``INCR`` and one ``EXPIRE`` in a
pipeline per subject; every replica and worker shares them), else in this process (each
process allows the limit: with N workers or replicas and no Redis, a client gets up to N times
it). The database is not used: a write per admin request would queue behind the ledger writer
on SQLite, which is what the lock-free session lookups avoid. If Redis fails, the count falls
back to this process's for that request (logged): an operator is not locked out of the admin
API by a Redis outage.

The sign-in throttle (:mod:`relaygate.accounts.throttle`) is separate and stricter: it counts
failed sign-ins per email and address over ``sign_in_window_seconds``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from relaygate.accounts.throttle import address_subject
from relaygate.errors import RateLimited

if TYPE_CHECKING:
    import redis.asyncio as redis

log = logging.getLogger("relaygate.admin")

WINDOW_SECONDS = 60
MESSAGE = "Too many admin API requests: at most {limit} a minute per {what}; try again later"


class AdminRateLimit:
    """Counts admin requests per subject and minute; :meth:`hit` raises when one is over."""

    def __init__(
        self, per_minute: int, client: redis.Redis | None = None, prefix: str = "relaygate"
    ) -> None:
        self.per_minute = per_minute
        self.client = client
        self.prefix = prefix
        self._window = -1
        self._counts: dict[str, int] = {}

    async def address(self, address: str | None, now: float | None = None) -> None:
        """Count a request from ``address`` (429 past the limit)."""
        await self.hit(address_subject(address), "client address", now)

    async def principal(self, actor: str, now: float | None = None) -> None:
        """Count a request of ``actor`` (``Principal.actor``; 429 past the limit)."""
        await self.hit("actor:" + actor, "credential", now)

    async def hit(self, subject: str, what: str, now: float | None = None) -> None:
        if self.per_minute <= 0:
            return
        moment = time.time() if now is None else now
        window = int(moment // WINDOW_SECONDS)
        count = await self._count(subject, window)
        if count > self.per_minute:
            raise RateLimited(
                MESSAGE.format(limit=self.per_minute, what=what),
                retry_after=(window + 1) * WINDOW_SECONDS - moment,
            )

    async def _count(self, subject: str, window: int) -> int:
        if self.client is not None:
            name = f"{self.prefix}:adminrl:{window}:{subject}"
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.incr(name)
                pipe.expire(name, 2 * WINDOW_SECONDS)
                count, _ = await pipe.execute()
                return int(count)
            except Exception as exc:  # counted here instead: Redis must not lock admins out
                log.warning("admin rate limit: Redis failed (%s), counted in this process", exc)
        return self._local(subject, window)

    def _local(self, subject: str, window: int) -> int:
        if window != self._window:  # a new minute: the old counts are over
            self._window, self._counts = window, {}
        count = self._counts.get(subject, 0) + 1
        self._counts[subject] = count
        return count
