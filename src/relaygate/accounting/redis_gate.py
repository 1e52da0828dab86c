"""The admission gate on Redis: limits and balances shared by every replica and worker.

One Lua call admits (concurrency, RPM, TPM and the credit reservation, all or nothing), one
settles, one records each ledger batch after the store committed it (see
:mod:`relaygate.accounting.redis_lua`). Balances are seeded from the store the first time a key
is seen and kept in step with its grants by revision.

When Redis cannot be reached:

- credit admission fails closed: 503, no upstream call (unless the key is unlimited);
- rate limits fall back to this process's own limiter (per-replica limits), and every such
  decision is counted in ``relaygate_limit_decisions_without_redis_total``;
- settlement still appends the ledger row with the full cost; the reservation expires in Redis
  after ``reservation_ttl_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from relaygate.accounting import redis_lua
from relaygate.accounting.gate import Balance, Gate, Hold, Unaffordable
from relaygate.errors import RateLimited, ServiceUnavailable
from relaygate.limits.memory import MemoryLimiter
from relaygate.metrics import Metrics
from relaygate.settings import Settings
from relaygate.store.records import KeyRecord, LedgerRow
from relaygate.store.sql import SqlStore

log = logging.getLogger("relaygate.redis")

_LIMIT_NAMES = {
    "conc": "concurrent requests",
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
}


class RedisGate(Gate):
    def __init__(self, settings: Settings, metrics: Metrics, store: SqlStore) -> None:
        assert settings.redis_url is not None
        self.client: redis.Redis = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
            health_check_interval=10,
            # Resend a call only when the connection failed (a pooled connection to a restarted
            # Redis): a timed-out script may have run, and running it twice would count twice.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self.prefix = settings.redis_key_prefix
        self.ttl_ms = int(settings.reservation_ttl_seconds * 1000)
        self.metrics = metrics
        self.store = store
        self.local = MemoryLimiter()
        self.channel = f"{self.prefix}:keys"
        self.description = f"redis ({settings.redis_url.split('@')[-1]})"
        self._admit = self.client.register_script(redis_lua.ADMIT)
        self._cancel = self.client.register_script(redis_lua.CANCEL)
        self._settle = self.client.register_script(redis_lua.SETTLE)
        self._written = self.client.register_script(redis_lua.WRITTEN)
        self._sync = self.client.register_script(redis_lua.SYNC)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seeding: dict[str, asyncio.Future[None]] = {}
        self.records: Callable[[str], KeyRecord | None] = lambda key_id: None
        """Looks a key up in the key cache (set by the app)."""

    def _keys(self, key_id: str, *names: str) -> list[str]:
        return [f"{self.prefix}:{{{key_id}}}:{name}" for name in names]

    # --- admission ---------------------------------------------------------------------------

    async def admit(self, key: KeyRecord, tokens: int, amount: int, request_id: str) -> Hold:
        keys = self._keys(key.id, "acct", "res", "resexp", "conc", "rpm", "tpm")
        args: list[str | int] = [
            request_id,
            amount,
            tokens,
            key.rpm or 0,
            key.tpm or 0,
            key.max_concurrency or 0,
            self.ttl_ms,
        ]
        try:
            verdict, value = await self._admit(keys=keys, args=args)
            if verdict == b"seed":
                await self._seed(key.id)
                verdict, value = await self._admit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            return self._admit_without_redis(key, tokens, amount, request_id, exc)
        if verdict == b"ok":
            return Hold(key.id, request_id, amount, tokens)
        if verdict == b"funds":
            raise Unaffordable(max(0, int(value)))
        name = verdict.decode()
        limit = {"conc": key.max_concurrency, "rpm": key.rpm, "tpm": key.tpm}.get(name)
        raise RateLimited(
            f"Rate limit exceeded: this key allows {limit} {_LIMIT_NAMES.get(name, name)}",
            retry_after=int(value) / 1000,
        )

    def _admit_without_redis(
        self, key: KeyRecord, tokens: int, amount: int, request_id: str, exc: Exception
    ) -> Hold:
        self.metrics.redis_failures.labels("admit").inc()
        if not key.unlimited:
            log.error("redis unreachable (%s): refusing credit admission", type(exc).__name__)
            raise ServiceUnavailable(
                "Service temporarily unavailable: credit admission needs Redis, which cannot be"
                " reached"
            ) from None
        self.metrics.without_redis.inc()
        permit = self.local.acquire(key, tokens)
        return Hold(key.id, request_id, amount, tokens, permit=permit)

    async def _seed(self, key_id: str) -> None:
        """Seed a key's balance from the store; concurrent first requests share one read."""
        running = self._seeding.get(key_id)
        if running is None:
            running = self._seeding[key_id] = asyncio.ensure_future(self._seed_once(key_id))
            running.add_done_callback(lambda _: self._seeding.pop(key_id, None))
        await asyncio.shield(running)

    async def _seed_once(self, key_id: str) -> None:
        record = await self.store.get_key(key_id)
        if record is not None:
            await self._sync_record(record)

    async def _sync_record(self, record: KeyRecord) -> None:
        await self._sync(
            keys=self._keys(record.id, "acct"),
            args=[
                record.granted_micros,
                record.used_micros,
                int(record.unlimited),
                record.revision,
            ],
        )

    async def cancel(self, hold: Hold) -> None:
        if hold.permit is not None:
            self.local.cancel(hold.permit)
            return
        key = await self._record(hold.key_id)
        try:
            await self._cancel(
                keys=self._keys(hold.key_id, "acct", "res", "resexp", "conc", "rpm", "tpm"),
                args=[
                    hold.request_id,
                    hold.tokens,
                    key.rpm or 0 if key else 0,
                    key.tpm or 0 if key else 0,
                ],
            )
        except (RedisError, OSError):
            self.metrics.redis_failures.labels("cancel").inc()
            log.warning("redis unreachable: reservation of %s left to expire", hold.request_id)

    async def settle(self, hold: Hold, cost: int, tokens: int) -> int:
        if hold.permit is not None:
            self.local.release(hold.permit, tokens)
            return cost
        key = await self._record(hold.key_id)
        tpm = key.tpm or 0 if key else 0
        delta = tokens - min(hold.tokens, tpm) if tpm else 0
        try:
            charged = await self._settle(
                keys=self._keys(hold.key_id, "acct", "res", "resexp", "conc", "tpm", "pend"),
                args=[hold.request_id, cost, delta, tpm],
            )
        except (RedisError, OSError):
            self.metrics.redis_failures.labels("settle").inc()
            raise
        return int(charged)

    async def _record(self, key_id: str) -> KeyRecord | None:
        return self.records(key_id)

    # --- balances and bookkeeping ------------------------------------------------------------

    async def balance(self, key: KeyRecord) -> Balance:
        try:
            seeded, granted, used, pending, unlimited = await self.client.hmget(
                self._keys(key.id, "acct")[0],
                ["seeded", "granted", "used", "pending", "unlimited"],
            )
        except (RedisError, OSError):
            seeded = None
        if seeded is None:
            record = await self.store.get_key(key.id) or key
            return Balance(record.granted_micros, record.used_micros, record.unlimited)
        return Balance(int(granted or 0), int(used or 0) + int(pending or 0), unlimited == b"1")

    def key_changed(self, record: KeyRecord) -> None:
        task = asyncio.get_running_loop().create_task(self._key_changed(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _key_changed(self, record: KeyRecord) -> None:
        try:
            await self._sync_record(record)
        except (RedisError, OSError):
            self.metrics.redis_failures.labels("sync").inc()

    async def ledger_written(self, rows: Sequence[LedgerRow]) -> None:
        by_key: dict[str, list[str | int]] = defaultdict(list)
        for row in rows:
            by_key[row.key_id] += [row.request_id, row.cost_micros]
        try:
            pipe = self.client.pipeline(transaction=False)
            for key_id, args in by_key.items():
                await self._written(keys=self._keys(key_id, "acct", "pend"), args=args, client=pipe)
            await pipe.execute()
        except (RedisError, OSError):
            self.metrics.redis_failures.labels("written").inc()
            log.warning("redis unreachable: %d ledger rows not moved from pending", len(rows))

    # --- key change notifications ------------------------------------------------------------

    async def publish_key_change(self, key_id: str) -> None:
        await self.client.publish(self.channel, key_id)

    def watch_key_changes(self, on_change: Callable[[], Awaitable[Any]]) -> None:
        """Call ``on_change`` whenever any replica or the CLI announces a key change."""
        task = asyncio.get_running_loop().create_task(self._watch(on_change), name="key-watch")
        self._tasks.add(task)

    async def _watch(self, on_change: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await on_change()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key-change subscription lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
