"""The admission gate on Redis: limits and balances shared by every replica and worker.

One Lua call admits (concurrency, RPM, TPM and the credit reservation, all or nothing), one
settles, one records each ledger batch after the store committed it (see
:mod:`relaygate.accounting.redis_lua`). Balances are seeded from the store the first time a key
is seen, kept in step with its grants by revision, and with its use by each ledger report
(which carries the key's ``used_micros`` from the store: Redis keeps the highest it has seen).

When Redis cannot be reached:

- credit admission fails closed: 503, no upstream call (unless the key is unlimited);
- rate limits fall back to this process's own limiter (per-replica limits), and every such
  decision is counted in ``relaygate_limit_decisions_without_redis_total``;
- settlement still appends the ledger row with the full cost; the reservation's lease lapses
  within ``lease_seconds``; the row's report (with the key's ``used_micros`` from the store) is
  sent again until Redis takes it, so the charge reaches the balance in Redis all the same.

Failures are logged through one :class:`relaygate.outage.Outage`: the first in detail, then a
count a minute, then one line when Redis answers again.

Reservations and concurrency slots are leases renewed while their request lives, and pending
charges are reconciled with the ledger (:mod:`relaygate.accounting.redis_upkeep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from relaygate.accounting.gate import Balance, Gate, Hold, Unaffordable
from relaygate.accounting.redis_upkeep import Scripts, Upkeep
from relaygate.errors import RateLimited, ServiceUnavailable
from relaygate.limits.memory import MemoryLimiter
from relaygate.metrics import Metrics
from relaygate.outage import Outage
from relaygate.settings import Settings
from relaygate.store.records import KeyRecord, LedgerRow
from relaygate.store.sql import SqlStore

log = logging.getLogger("relaygate.redis")

_LIMIT_NAMES = {
    "conc": "concurrent requests",
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
}

_SETTLE_KEYS = ("acct", "res", "resexp", "conc", "tpm", "pend", "pendt", "pendo")


class RedisGate(Gate):
    def __init__(self, settings: Settings, metrics: Metrics, store: SqlStore) -> None:
        assert settings.redis_url is not None
        super().__init__()
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
        self.lease_ms = int(settings.lease_seconds * 1000)
        self.max_hold_seconds = settings.reservation_ttl_seconds
        self.metrics = metrics
        self.store = store
        self.local = MemoryLimiter()
        self.channel = f"{self.prefix}:keys"
        self.pendkeys = f"{self.prefix}:pendkeys"
        """The API keys with pending charges (a set): those reconciliation examines."""
        self.description = f"redis ({settings.redis_url.split('@')[-1]})"
        self.outage = Outage(log, self.description)
        self.store_outage = Outage(log, "store (pending-charge reconciliation)")
        self.owner = uuid.uuid4().hex[:16]
        """This process, as the owner of the ledger rows its pending charges wait for."""
        self.owner_key = self.owner_key_of(self.owner)
        self.scripts = Scripts(self.client)
        self.upkeep = Upkeep(self, settings.pending_reconcile_seconds)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seeding: dict[str, asyncio.Future[None]] = {}
        self.records: Callable[[str], KeyRecord | None] = lambda key_id: None
        """Looks a key up in the key cache (set by the app)."""

    def keys_of(self, key_id: str, *names: str) -> list[str]:
        return [f"{self.prefix}:{{{key_id}}}:{name}" for name in names]

    _keys = keys_of

    def owner_key_of(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}"

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
            self.lease_ms,
        ]
        self.upkeep.start()
        try:
            verdict, value = await self.scripts.admit(keys=keys, args=args)
            if verdict == b"seed":
                await self._seed(key.id)
                verdict, value = await self.scripts.admit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            return self._admit_without_redis(key, tokens, amount, request_id, exc)
        self.outage.ok()
        if verdict == b"ok":
            started = self.upkeep.leases.add(key.id, request_id)
            return Hold(key.id, request_id, amount, tokens, started=started)
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
        self.outage.failed(exc, "admission: credit admission refused, rate limits per process")
        if not key.unlimited:
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
        await self.scripts.sync(
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
        self.upkeep.leases.remove(hold.key_id, hold.request_id)
        key = await self._record(hold.key_id)
        try:
            await self.scripts.cancel(
                keys=self._keys(hold.key_id, "acct", "res", "resexp", "conc", "rpm", "tpm"),
                args=[
                    hold.request_id,
                    hold.tokens,
                    key.rpm or 0 if key else 0,
                    key.tpm or 0 if key else 0,
                ],
            )
        except (RedisError, OSError) as exc:
            self.metrics.redis_failures.labels("cancel").inc()
            self.outage.failed(exc, "cancel: the reservation's lease lapses by itself")
        else:
            self.outage.ok()

    async def settle(self, hold: Hold, cost: int, tokens: int) -> int:
        if hold.permit is not None:
            self.local.release(hold.permit, tokens)
            return cost
        self.upkeep.leases.remove(hold.key_id, hold.request_id)
        key = await self._record(hold.key_id)
        tpm = key.tpm or 0 if key else 0
        delta = tokens - min(hold.tokens, tpm) if tpm else 0
        held_ms = int((time.monotonic() - hold.started) * 1000) if hold.started else 0
        try:
            charged = await self.scripts.settle(
                keys=[*self._keys(hold.key_id, *_SETTLE_KEYS), self.pendkeys],
                args=[hold.request_id, cost, delta, tpm, held_ms, self.owner, hold.key_id],
            )
        except (RedisError, OSError) as exc:
            # The ledger row keeps the full cost, and its report (retried until Redis takes
            # it) brings it into Redis's balance; the reservation's lease lapses by itself.
            self.metrics.redis_failures.labels("settle").inc()
            self.outage.failed(exc, "settlement: ledger rows keep their full cost")
            return cost
        self.outage.ok()
        return int(charged)

    async def _record(self, key_id: str) -> KeyRecord | None:
        return self.records(key_id)

    # --- balances and bookkeeping ------------------------------------------------------------

    async def balance(self, key: KeyRecord) -> Balance:
        """The key's balance; pending charges older than a reconciliation period are
        reconciled with the ledger first, so that it agrees with the ledger."""
        self.upkeep.start()
        try:
            seeded, granted, used, pending, unlimited = await self._read_balance(key.id)
        except (RedisError, OSError) as exc:
            self.outage.failed(exc, "balance: answered from the store")
            seeded = None
        if seeded is None:
            record = await self.store.get_key(key.id) or key
            return Balance(record.granted_micros, record.used_micros, record.unlimited)
        return Balance(int(granted or 0), int(used or 0) + int(pending or 0), unlimited == b"1")

    async def _read_balance(self, key_id: str) -> list[Any]:
        acct, pendt = self._keys(key_id, "acct", "pendt")
        fields = ["seeded", "granted", "used", "pending", "unlimited"]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(acct, fields)
        pipe.zrange(pendt, 0, 0, withscores=True)
        pipe.time()
        values, oldest, (seconds, micros) = await pipe.execute()
        age_ms = seconds * 1000 + micros // 1000 - (oldest[0][1] if oldest else 1e18)
        if age_ms > self.upkeep.reconcile_seconds * 1000:
            try:
                await self.upkeep.reconcile([key_id])
            except (RedisError, OSError):
                raise
            except Exception as exc:  # the store failed: answer from Redis as it stands
                self.store_outage.failed(exc, "balance")
            else:
                self.store_outage.ok()
            values = await self.client.hmget(acct, fields)
        return list(values)

    def key_changed(self, record: KeyRecord) -> None:
        task = asyncio.get_running_loop().create_task(self._key_changed(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _key_changed(self, record: KeyRecord) -> None:
        try:
            await self._sync_record(record)
        except (RedisError, OSError) as exc:
            self.metrics.redis_failures.labels("sync").inc()
            self.outage.failed(exc, "key sync")

    async def ledger_written(self, rows: Sequence[LedgerRow]) -> None:
        """Report rows newly in the store; a report that fails is sent again by the upkeep
        until Redis takes it (each is idempotent)."""
        by_key: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            by_key[row.key_id].append(row.request_id)
        try:
            await self.upkeep.report(by_key)
        except Exception as exc:
            self.upkeep.unreported.add(by_key)
            self.upkeep.start()
            what = f"ledger bookkeeping: {len(rows)} rows reported again later"
            if isinstance(exc, (RedisError, OSError)):
                self.metrics.redis_failures.labels("written").inc()
                self.outage.failed(exc, what)
            else:
                self.store_outage.failed(exc, what)
        else:
            self.outage.ok()

    # --- key change notifications ------------------------------------------------------------

    async def publish_key_change(self, key_id: str) -> None:
        await self.client.publish(self.channel, key_id)

    def watch_key_changes(self, on_change: Callable[[], Awaitable[Any]]) -> None:
        """Call ``on_change`` whenever any replica or the CLI announces a key change."""
        task = asyncio.get_running_loop().create_task(self._watch(on_change), name="key-watch")
        self._tasks.add(task)
        self.upkeep.start()

    async def _watch(self, on_change: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.outage.ok()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            # a store failure here is the key cache's to report (its loop
                            # retries), not a lost subscription
                            with contextlib.suppress(Exception):
                                await on_change()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.outage.failed(exc, "key-change subscription, retried every second")
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        await self.upkeep.stop()
        try:
            await self.upkeep.report_again()
        except Exception as exc:
            # their rows are in the store: the next report on those keys, from any process,
            # brings ``used`` up to it, and reconciliation clears their pending charges
            log.warning(
                "%d keys' ledger reports could not reach Redis at shutdown (%s)",
                len(self.upkeep.unreported),
                type(exc).__name__,
            )
        # This process's rows are written (or spilled for the next start) by now: its pending
        # charges may be reconciled at once.
        with contextlib.suppress(RedisError, OSError):
            await self.client.delete(self.owner_key)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
