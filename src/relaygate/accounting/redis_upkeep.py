"""The Redis gate's background upkeep: lease renewal and the reconciliation of pending charges.

- **Leases.** A request's reservation and concurrency slot are leases of ``lease_seconds``.
  :class:`Leases` knows this process's live requests and renews all of them every third of a
  lease, with one pipelined call (one :data:`~relaygate.accounting.redis_lua.RENEW` per
  account and API key), together with this process's own owner lease. A request older than
  ``reservation_ttl_seconds`` is no longer renewed. A process killed mid-request stops renewing:
  its reservations and slots lapse within one lease.
- **Reports.** Rows the ledger wrote are reported to Redis with their account's
  ``used_micros`` (and its capped keys' ``period_used_micros``) read after the write
  (:data:`~relaygate.accounting.redis_lua.WRITTEN`). A report that cannot reach Redis is
  kept (:class:`Unreported`) and sent again every third of a lease until Redis takes it, so
  that a charge settled and written while Redis was unreachable still reaches the account's
  balance there.
- **Pending charges.** A settled charge is pending in Redis until its ledger row is reported
  written. One whose report never came (its process died before writing it or reporting it) is
  reconciled once it is ``pending_reconcile_seconds`` old: it goes, with ``used`` read from the
  store, if the row is in the store; it is dropped if not and the process that owed it no longer
  holds its owner lease (a journal replaying the row later counts it when it is written). Only
  the accounts in the deployment's ``pendaccts`` set, those with pending charges, are examined.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from relaygate.accounting import redis_lua
from relaygate.accounting.redis_batch import Args, Batcher, Script
from relaygate.tasks import cancel_and_wait

if TYPE_CHECKING:
    from relaygate.accounting.redis_gate import RedisGate

_CHUNK = 200
"""Accounts examined per pipelined call when looking for old pending charges."""
_STALE_LIMIT = 500
"""Old pending charges taken per account per pass."""
_REPORT_CHUNK = 500
"""Request ids per WRITTEN call."""
_UNREPORTED_LIMIT = 100_000
"""Request ids of unreported rows kept in memory. Past it only their keys are kept: the report
still brings their ``used`` up to the store's, and reconciliation clears their pending charges
(their rows are in the store, and in the journal until then)."""


class Unreported:
    """Rows in the store whose report to Redis failed: request ids by account (bounded)."""

    def __init__(self, limit: int = _UNREPORTED_LIMIT) -> None:
        self.limit = limit
        self.by_key: dict[str, set[str]] = {}
        self.count = 0

    def __len__(self) -> int:
        return len(self.by_key)

    def add(self, by_key: Mapping[str, Iterable[str]]) -> None:
        for key_id, request_ids in by_key.items():
            held = self.by_key.setdefault(key_id, set())
            for request_id in request_ids:
                if self.count >= self.limit:
                    break
                if request_id not in held:
                    held.add(request_id)
                    self.count += 1

    def take(self) -> dict[str, set[str]]:
        taken, self.by_key, self.count = self.by_key, {}, 0
        return taken


Holder = tuple[str, str]
"""``(account_id, key_id)``: whose leases a request holds."""


class Leases:
    """This process's live requests, by account and API key, and when each started
    (monotonic)."""

    def __init__(self) -> None:
        self.live: dict[Holder, dict[str, float]] = defaultdict(dict)

    def add(self, holder: Holder, request_id: str) -> float:
        started = time.monotonic()
        self.live[holder][request_id] = started
        return started

    def remove(self, holder: Holder, request_id: str) -> None:
        holds = self.live.get(holder)
        if holds is not None:
            holds.pop(request_id, None)
            if not holds:
                del self.live[holder]

    def renewable(self, max_age: float) -> list[tuple[Holder, list[str]]]:
        """The live requests to renew; those older than ``max_age`` are let go."""
        cutoff = time.monotonic() - max_age
        batches = []
        for holder, holds in list(self.live.items()):
            for request_id in [rid for rid, started in holds.items() if started < cutoff]:
                del holds[request_id]
            if holds:
                batches.append((holder, list(holds)))
            else:
                del self.live[holder]
        return batches


class Upkeep:
    """Runs :meth:`renew` and :meth:`report_again` every third of a lease and :meth:`reconcile`
    every ``pending_reconcile_seconds``, each in its own task."""

    def __init__(self, gate: RedisGate, reconcile_seconds: float) -> None:
        self.gate = gate
        self.reconcile_seconds = reconcile_seconds
        self.leases = Leases()
        self.unreported = Unreported()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        third = self.gate.lease_ms / 3000
        self._tasks = [
            loop.create_task(self._every(third, self.renew), name="leases"),
            loop.create_task(self._every(third, self.report_again), name="reports"),
            loop.create_task(
                self._every(self.reconcile_seconds, self.reconcile, first=False), name="reconcile"
            ),
        ]

    async def _every(self, seconds: float, job: Callable[[], Any], first: bool = True) -> None:
        if not first:
            await asyncio.sleep(seconds)
        while True:
            try:
                done = await job()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.gate.outage.failed(exc, job.__name__)
            except Exception as exc:
                self.gate.store_outage.failed(exc, job.__name__)
            else:
                if done is not False:  # False: nothing was asked (Redis may still be down)
                    self.gate.outage.ok()
                    if job != self.renew:
                        self.gate.store_outage.ok()
            await asyncio.sleep(seconds)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def renew(self) -> None:
        """Renew this process's owner lease and every live request's lease: one round trip."""
        gate = self.gate
        scripts = gate.scripts
        calls: list[tuple[Script, Args, Args]] = [
            (scripts.owner, [gate.owner_key], [gate.lease_ms])
        ]
        for (account_id, key_id), request_ids in self.leases.renewable(gate.max_hold_seconds):
            keys = [
                *gate.keys_of(account_id, "resexp", "conc"),
                *gate.key_keys(account_id, key_id, "conc"),
            ]
            calls.append((scripts.renew, keys, [gate.lease_ms, *request_ids]))
        await scripts.run(calls)

    async def report(self, by_account: Mapping[str, Collection[str]]) -> None:
        """Report rows newly in the store (request ids by account) to Redis, with each
        account's ``used_micros`` (and its capped keys' period use) read now, after they were
        committed. Raises if the store or Redis fails; sending it again is harmless."""
        gate = self.gate
        used, caps = await gate.store.spent(list(by_account))
        calls: list[tuple[Script, Args, Args]] = []
        for account_id, request_ids in by_account.items():
            if account_id not in used:
                continue  # no such account (any more): nothing to count
            ids = list(request_ids)
            books = _books(account_id, used[account_id], caps.get(account_id, []))
            keys = [*gate.keys_of(account_id, "acct", *_PEND), gate.pendaccts]
            for start in range(0, max(len(ids), 1), _REPORT_CHUNK):
                calls.append(
                    (gate.scripts.written, keys, [*books, *ids[start : start + _REPORT_CHUNK]])
                )
        await gate.scripts.run(calls)

    async def report_again(self) -> bool:
        """Send the reports that could not reach Redis (kept again if it still fails); False
        if there were none."""
        if not self.unreported:
            return False
        taken = self.unreported.take()
        try:
            await self.report(taken)
        except BaseException:
            self.unreported.add(taken)
            raise
        return True

    async def reconcile(self, account_ids: Iterable[str] | None = None) -> tuple[int, int]:
        """Reconcile old pending charges of ``account_ids`` (default: every account with
        pending charges); returns ``(moved to used, dropped)``."""
        gate = self.gate
        if account_ids is None:
            members = await gate.client.smembers(gate.pendaccts)
            ids = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
        else:
            ids = list(account_ids)
        moved = dropped = 0
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            age_ms = int(self.reconcile_seconds * 1000)
            calls: list[tuple[Script, Args, Args]] = [
                (
                    gate.scripts.stale,
                    [*gate.keys_of(account_id, "pendt", "pendo", "pend", "pendk"), gate.pendaccts],
                    [age_ms, _STALE_LIMIT, account_id],
                )
                for account_id in chunk
            ]
            found = {
                account_id: _pairs(result)
                for account_id, result in zip(chunk, await gate.scripts.run(calls), strict=True)
                if result
            }
            if found:
                m, d = await self._settle_stale(found)
                moved, dropped = moved + m, dropped + d
        return moved, dropped

    async def _settle_stale(self, found: dict[str, list[tuple[str, str]]]) -> tuple[int, int]:
        gate = self.gate
        owners = sorted({owner for pairs in found.values() for _, owner in pairs} - {""})
        alive = {gate.owner}
        if owners:
            pipe = gate.client.pipeline(transaction=False)
            for owner in owners:
                pipe.exists(gate.owner_key_of(owner))
            alive |= {o for o, n in zip(owners, await pipe.execute(), strict=True) if n}
        costs = await gate.store.ledger_costs([rid for pairs in found.values() for rid, _ in pairs])
        # read after the rows were looked up: it counts every row found
        used, caps = await gate.store.spent(list(found))
        calls: list[tuple[Script, Args, Args]] = []
        for account_id, pairs in found.items():
            args = _books(account_id, used.get(account_id, -1), caps.get(account_id, []))
            for rid, owner in pairs:
                if rid in costs:
                    args += [rid, 1]
                elif owner not in alive:
                    args += [rid, 0]
            keys = [*gate.keys_of(account_id, "acct", *_PEND), gate.pendaccts]
            calls.append((gate.scripts.reconcile, keys, args))
        results = await gate.scripts.run(calls)
        return sum(int(r[0]) for r in results), sum(int(r[1]) for r in results)


_PEND = ("pend", "pendt", "pendo", "pendk")


def _books(account_id: str, used: int, caps: list[tuple[str, int, int]]) -> list[str | int]:
    """The head of a WRITTEN or RECONCILE call: the account, its use, and its capped keys'."""
    args: list[str | int] = [account_id, used, len(caps)]
    for key_id, period_used, start in caps:
        args += [key_id, period_used, start]
    return args


def _pairs(flat: Sequence[bytes]) -> list[tuple[str, str]]:
    """(request id, owner) of each ``(request id, owner, key id)`` triple STALE returns."""
    return [(flat[i].decode(), flat[i + 1].decode()) for i in range(0, len(flat), 3)]


class Scripts:
    """The Lua scripts (:mod:`relaygate.accounting.redis_lua`), called by ``EVALSHA``: the
    request path's batched per event-loop turn (:meth:`call`), the upkeep's in pipelines of
    their own (:meth:`run`)."""

    def __init__(self, client: Any, timeout: float) -> None:
        self.batch = Batcher(client, timeout)
        self.admit = Script(redis_lua.ADMIT)
        self.cancel = Script(redis_lua.CANCEL)
        self.settle = Script(redis_lua.SETTLE)
        self.written = Script(redis_lua.WRITTEN)
        self.sync = Script(redis_lua.SYNC)
        self.sync_cap = Script(redis_lua.SYNC_CAP)
        self.renew = Script(redis_lua.RENEW)
        self.owner = Script(redis_lua.OWNER)
        self.stale = Script(redis_lua.STALE)
        self.reconcile = Script(redis_lua.RECONCILE)

    def call(self, script: Script, keys: Args, args: Args) -> asyncio.Future[Any]:
        """One call, sent with the others of this event-loop turn."""
        return self.batch.call(script, keys, args)

    async def run(self, calls: Sequence[tuple[Script, Args, Args]]) -> list[Any]:
        """Calls sent now in one pipeline; raises the first call's error."""
        if not calls:
            return []
        replies = await self.batch.run(calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
