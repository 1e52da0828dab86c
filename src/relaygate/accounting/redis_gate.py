"""The admission gate on Redis: limits and balances shared by every replica and worker.

One Lua call admits (the key's and its account's concurrency, RPM and TPM, and the credit
reservation against the account's balance and the key's spend cap, all or nothing), one
settles, one records each ledger batch after the store committed it (see
:mod:`relaygate.accounting.redis_lua`). Balances are seeded from the store the first time an
account (and a capped key) is seen, kept in step with its grants by revision, and with its use
by each ledger report (which carries the account's ``used_micros`` and its capped keys'
``period_used_micros`` from the store: Redis keeps the highest it has seen). The calls of all
the requests ready in one turn of the event loop share one pipeline
(:mod:`relaygate.accounting.redis_batch`).

When Redis cannot be reached:

- credit admission fails closed: 503, no upstream call (unless the account is unlimited);
- rate limits fall back to this process's own limiter (per-replica limits, the key's own),
  and every such decision is counted in ``relaygate_limit_decisions_without_redis_total``;
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

from relaygate.accounting.gate import (
    ACCOUNT,
    Balance,
    Gate,
    Hold,
    Unaffordable,
    account_of,
)
from relaygate.accounting.redis_upkeep import Scripts, Upkeep
from relaygate.errors import RateLimited, ServiceUnavailable
from relaygate.limits.memory import MemoryLimiter
from relaygate.metrics import Metrics
from relaygate.outage import Outage
from relaygate.settings import Settings
from relaygate.store.periods import period_start
from relaygate.store.records import AccountRecord, KeyRecord, LedgerRow
from relaygate.store.sql import SqlStore
from relaygate.tasks import cancel_and_wait

log = logging.getLogger("relaygate.redis")

_LIMIT_NAMES = {
    "conc": "concurrent requests",
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
}

_ACCOUNT_KEYS = ("acct", "res", "resexp", "resk")
_PEND_KEYS = ("pend", "pendt", "pendo", "pendk")
_NAMES_KEPT = 20_000
"""Lists of Redis key names kept built (two per API key in use)."""


def _cap_start(key: KeyRecord | None) -> tuple[int, int]:
    """Whether the key has a spend cap, and its current period's start."""
    if key is None or key.spend_limit_micros is None:
        return 0, 0
    return 1, period_start(key.spend_limit_period, time.time())


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
        self.pendaccts = f"{self.prefix}:pendaccts"
        """The accounts with pending charges (a set): those reconciliation examines."""
        self.description = f"redis ({settings.redis_url.split('@')[-1]})"
        self.outage = Outage(log, self.description)
        self.store_outage = Outage(log, "store (pending-charge reconciliation)")
        self.owner = uuid.uuid4().hex[:16]
        """This process, as the owner of the ledger rows its pending charges wait for."""
        self.owner_key = self.owner_key_of(self.owner)
        self.scripts = Scripts(self.client, settings.redis_timeout_seconds)
        self.upkeep = Upkeep(self, settings.pending_reconcile_seconds)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seeding: dict[str, asyncio.Future[None]] = {}
        self._key_names: dict[tuple[str, str, str], list[str]] = {}
        self.records: Callable[[str], KeyRecord | None] = lambda key_id: None
        """Looks a key up in the key cache (set by the app)."""

    def keys_of(self, account_id: str, *names: str) -> list[str]:
        """An account's Redis keys (one hash tag: every script touches one slot)."""
        return [f"{self.prefix}:{{{account_id}}}:{name}" for name in names]

    def key_keys(self, account_id: str, key_id: str, *names: str) -> list[str]:
        """An API key's own Redis keys, under its account's hash tag."""
        return [f"{self.prefix}:{{{account_id}}}:k:{key_id}:{name}" for name in names]

    def _limit_keys(self, account_id: str, key_id: str) -> list[str]:
        """The keys of ADMIT and CANCEL."""
        keys = self._key_names.get((account_id, key_id, "limit"))
        if keys is None:
            keys = [
                *self.keys_of(account_id, *_ACCOUNT_KEYS),
                *self.key_keys(account_id, key_id, "conc", "rpm", "tpm"),
                *self.keys_of(account_id, "conc", "rpm", "tpm"),
            ]
            self._keep_names((account_id, key_id, "limit"), keys)
        return keys

    def _settle_keys(self, account_id: str, key_id: str) -> list[str]:
        """The keys of SETTLE."""
        keys = self._key_names.get((account_id, key_id, "settle"))
        if keys is None:
            keys = [
                *self.keys_of(account_id, *_ACCOUNT_KEYS),
                *self.key_keys(account_id, key_id, "conc", "tpm"),
                *self.keys_of(account_id, "conc", "tpm", *_PEND_KEYS),
                self.pendaccts,
            ]
            self._keep_names((account_id, key_id, "settle"), keys)
        return keys

    def _keep_names(self, which: tuple[str, str, str], keys: list[str]) -> None:
        """Key names are built once per API key (dropped all at once past ``_NAMES_KEPT``)."""
        if len(self._key_names) >= _NAMES_KEPT:
            self._key_names.clear()
        self._key_names[which] = keys

    def owner_key_of(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}"

    # --- admission ---------------------------------------------------------------------------

    async def admit(self, key: KeyRecord, tokens: int, amount: int, request_id: str) -> Hold:
        account_id = account_of(key)
        account = self.accounts(account_id)
        keys = self._limit_keys(account_id, key.id)
        capped, pstart = _cap_start(key)
        args: list[str | int] = [
            request_id,
            amount,
            tokens,
            key.rpm or 0,
            key.tpm or 0,
            key.max_concurrency or 0,
            self.lease_ms,
            key.id,
            capped,
            pstart,
            *_account_limits(account),
        ]
        self.upkeep.start()
        try:
            scripts = self.scripts
            verdict, value = await scripts.call(scripts.admit, keys, args)
            if verdict == b"seed":
                await self._seed(account_id, key)
                verdict, value = await scripts.call(scripts.admit, keys, args)
        except (RedisError, OSError) as exc:
            return self._admit_without_redis(key, tokens, amount, request_id, exc)
        self.outage.ok()
        if verdict == b"ok":
            started = self.upkeep.leases.add((account_id, key.id), request_id)
            return Hold(key.id, request_id, amount, tokens, started=started, account_id=account_id)
        if verdict == b"funds":
            raise Unaffordable(max(0, int(value)))
        if verdict == b"seed":  # gone from the store since the key cache read it
            raise ServiceUnavailable(
                "Service temporarily unavailable: this key's account changed; retry"
            )
        raise _refusal(verdict.decode(), key, account, int(value))

    def _admit_without_redis(
        self, key: KeyRecord, tokens: int, amount: int, request_id: str, exc: Exception
    ) -> Hold:
        self.metrics.redis_failures.labels("admit").inc()
        self.outage.failed(exc, "admission: credit admission refused, rate limits per process")
        account = self.accounts(account_of(key))
        unlimited = account.unlimited if account is not None else key.unlimited
        if not unlimited or key.spend_limit_micros is not None:  # a cap needs Redis too
            raise ServiceUnavailable(
                "Service temporarily unavailable: credit admission needs Redis, which cannot be"
                " reached"
            ) from None
        self.metrics.without_redis.inc()
        permit = self.local.acquire(key, tokens)
        return Hold(key.id, request_id, amount, tokens, permit=permit, account_id=account_of(key))

    async def _seed(self, account_id: str, key: KeyRecord) -> None:
        """Seed an account's balance (and the key's cap) from the store; concurrent first
        requests share one read."""
        running = self._seeding.get(key.id)
        if running is None:
            running = self._seeding[key.id] = asyncio.ensure_future(
                self._seed_once(account_id, key.id)
            )
            running.add_done_callback(lambda _: self._seeding.pop(key.id, None))
        await asyncio.shield(running)

    async def _seed_once(self, account_id: str, key_id: str) -> None:
        account = await self.store.get_account(account_id)
        if account is not None:
            await self._sync_account(account)
        record = await self.store.get_key(key_id)
        if record is None:
            return
        if account is None:  # a key from before accounts: its own balance
            await self.scripts.call(
                self.scripts.sync,
                self.keys_of(account_id, "acct"),
                [record.granted_micros, record.used_micros, int(record.unlimited), record.revision],
            )
        await self._sync_cap(record)

    async def _sync_account(self, record: AccountRecord) -> None:
        await self.scripts.call(
            self.scripts.sync,
            self.keys_of(record.id, "acct"),
            [record.granted_micros, record.used_micros, int(record.unlimited), record.revision],
        )

    async def _sync_cap(self, record: KeyRecord) -> None:
        if record.spend_limit_micros is None:
            return
        await self.scripts.call(
            self.scripts.sync_cap,
            self.keys_of(account_of(record), "acct"),
            [
                record.id,
                record.spend_limit_micros,
                record.period_used_micros,
                record.period_start,
                record.revision,
                record.spend_limit_period or "total",
            ],
        )

    async def cancel(self, hold: Hold) -> None:
        if hold.permit is not None:
            self.local.cancel(hold.permit)
            return
        self.upkeep.leases.remove((hold.account_id, hold.key_id), hold.request_id)
        key = await self._record(hold.key_id)
        account = self.accounts(hold.account_id)
        try:
            await self.scripts.call(
                self.scripts.cancel,
                self._limit_keys(hold.account_id, hold.key_id),
                [
                    hold.request_id,
                    hold.tokens,
                    key.rpm or 0 if key else 0,
                    key.tpm or 0 if key else 0,
                    account.rpm or 0 if account else 0,
                    account.tpm or 0 if account else 0,
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
        account_id = hold.account_id
        self.upkeep.leases.remove((account_id, hold.key_id), hold.request_id)
        key = await self._record(hold.key_id)
        account = self.accounts(account_id)
        ktpm = key.tpm or 0 if key else 0
        atpm = account.tpm or 0 if account else 0
        held_ms = int((time.monotonic() - hold.started) * 1000) if hold.started else 0
        capped, pstart = _cap_start(key)
        try:
            charged = await self.scripts.call(
                self.scripts.settle,
                self._settle_keys(account_id, hold.key_id),
                [
                    hold.request_id,
                    cost,
                    held_ms,
                    self.owner,
                    account_id,
                    hold.key_id,
                    capped,
                    pstart,
                    ktpm,
                    tokens - min(hold.tokens, ktpm) if ktpm else 0,
                    atpm,
                    tokens - min(hold.tokens, atpm) if atpm else 0,
                ],
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
        """The account's balance and the key's cap; pending charges older than a
        reconciliation period are reconciled with the ledger first, so that it agrees with
        the ledger."""
        self.upkeep.start()
        account_id = account_of(key)
        capped, pstart = _cap_start(key)
        try:
            values = await self._read_balance(account_id, key.id)
        except (RedisError, OSError) as exc:
            self.outage.failed(exc, "balance: answered from the store")
            values = [None]
        (
            seeded,
            granted,
            used,
            pending,
            unlimited,
            cap_seeded,
            limit,
            cap_used,
            cap_pending,
            start,
        ) = values + [None] * (10 - len(values))
        cap_remaining = None
        if seeded is None:
            account = await self.store.get_account(account_id)
            record = await self.store.get_key(key.id) or key
            if capped:
                cap_remaining = _store_cap_left(record, pstart)
            if account is None:
                return Balance(
                    record.granted_micros, record.used_micros, record.unlimited, cap_remaining
                )
            return Balance(
                account.granted_micros, account.used_micros, account.unlimited, cap_remaining
            )
        if capped:
            if cap_seeded is None:
                cap_remaining = _store_cap_left(key, pstart)
            elif int(start or 0) < pstart:  # the period rolled: nothing spent in this one yet
                cap_remaining = int(limit or 0)
            else:
                cap_remaining = int(limit or 0) - int(cap_used or 0) - int(cap_pending or 0)
        return Balance(
            int(granted or 0),
            int(used or 0) + int(pending or 0),
            unlimited == b"1",
            cap_remaining,
        )

    async def _read_balance(self, account_id: str, key_id: str) -> list[Any]:
        acct, pendt = self.keys_of(account_id, "acct", "pendt")
        c = f"c:{key_id}:"
        fields = ["seeded", "granted", "used", "pending", "unlimited"]
        fields += [c + "seeded", c + "limit", c + "used", c + "pending", c + "pstart"]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(acct, fields)
        pipe.zrange(pendt, 0, 0, withscores=True)
        pipe.time()
        values, oldest, (seconds, micros) = await pipe.execute()
        age_ms = seconds * 1000 + micros // 1000 - (oldest[0][1] if oldest else 1e18)
        if age_ms > self.upkeep.reconcile_seconds * 1000:
            try:
                await self.upkeep.reconcile([account_id])
            except (RedisError, OSError):
                raise
            except Exception as exc:  # the store failed: answer from Redis as it stands
                self.store_outage.failed(exc, "balance")
            else:
                self.store_outage.ok()
            values = await self.client.hmget(acct, fields)
        return list(values)

    def key_changed(self, record: KeyRecord) -> None:
        if record.spend_limit_micros is not None:
            self._in_background(self._sync_cap(record))

    def account_changed(self, record: AccountRecord) -> None:
        self._in_background(self._sync_account(record))

    def _in_background(self, sync: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(self._synced(sync))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _synced(self, sync: Awaitable[None]) -> None:
        try:
            await sync
        except (RedisError, OSError) as exc:
            self.metrics.redis_failures.labels("sync").inc()
            self.outage.failed(exc, "key sync")

    async def _key_changed(self, record: KeyRecord) -> None:
        """Sync a key (its cap) now (tests)."""
        await self._synced(self._sync_cap(record))

    async def _account_changed(self, record: AccountRecord) -> None:
        """Sync an account now (tests)."""
        await self._synced(self._sync_account(record))

    async def ledger_written(self, rows: Sequence[LedgerRow]) -> None:
        """Report rows newly in the store; a report that fails is sent again by the upkeep
        until Redis takes it (each is idempotent)."""
        by_account: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            account_id = row.account_id or await self._account_of_row(row)
            by_account[account_id].append(row.request_id)
        try:
            await self.upkeep.report(by_account)
        except Exception as exc:
            self.upkeep.unreported.add(by_account)
            self.upkeep.start()
            what = f"ledger bookkeeping: {len(rows)} rows reported again later"
            if isinstance(exc, (RedisError, OSError)):
                self.metrics.redis_failures.labels("written").inc()
                self.outage.failed(exc, what)
            else:
                self.store_outage.failed(exc, what)
        else:
            self.outage.ok()

    async def _account_of_row(self, row: LedgerRow) -> str:
        """The account of a row that names none (a replayed admission): its key's."""
        record = self.records(row.key_id)
        if record is None:
            try:
                record = await self.store.get_key(row.key_id)
            except Exception:  # reported under the key's id: used catches up on the next one
                record = None
        return account_of(record) if record is not None else row.key_id

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
        await self.scripts.batch.close()
        await cancel_and_wait(list(self._tasks))
        await self.client.aclose()


def _account_limits(account: AccountRecord | None) -> list[int]:
    if account is None:
        return [0, 0, 0]
    return [account.rpm or 0, account.tpm or 0, account.max_concurrency or 0]


def _refusal(
    verdict: str, key: KeyRecord, account: AccountRecord | None, wait_ms: int
) -> RateLimited:
    """The 429 of a limit the admission script refused on (``a...``: the account's)."""
    holder: KeyRecord | AccountRecord | None = key
    who = "key"
    if verdict.startswith("a"):
        holder, who, verdict = account, ACCOUNT, verdict[1:]
    limit = None
    if holder is not None:
        limit = {"conc": holder.max_concurrency, "rpm": holder.rpm, "tpm": holder.tpm}.get(verdict)
    return RateLimited(
        f"Rate limit exceeded: this {who} allows {limit} {_LIMIT_NAMES.get(verdict, verdict)}",
        retry_after=wait_ms / 1000,
    )


def _store_cap_left(record: KeyRecord, pstart: int) -> int:
    """What is left of a key's cap, as the store has it (the period may have rolled since)."""
    limit = record.spend_limit_micros or 0
    return limit - record.period_used_micros if record.period_start == pstart else limit
