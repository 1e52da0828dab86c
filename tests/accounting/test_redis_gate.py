"""The Redis gate's decisions, against a real Redis (each test under its own key prefix)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from relaygate.accounting.gate import Unaffordable
from relaygate.accounting.redis_batch import Args, Script
from relaygate.accounting.redis_gate import RedisGate
from relaygate.accounting.redis_upkeep import Unreported
from relaygate.accounts import keys
from relaygate.accounts.principal import Principal
from relaygate.errors import RateLimited
from relaygate.metrics import Metrics
from relaygate.settings import Settings
from relaygate.store.periods import period_start
from relaygate.store.records import KeyRecord, LedgerRow
from relaygate.store.sql import SqlStore
from relaygate.tasks import cancel_and_wait
from tests.support.services import REDIS_URL, need


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite:///{tmp_path / 'gate.db'}")
    await store.upgrade()
    yield store
    await store.close()


def make_gate(
    store: SqlStore, prefix: str | None = None, url: str = REDIS_URL, **settings: object
) -> RedisGate:
    need("Redis", 6379)
    prefix = prefix or f"rgunit-{uuid.uuid4().hex[:8]}"
    config = Settings(redis_url=url, redis_key_prefix=prefix, **settings)  # type: ignore[arg-type]
    return RedisGate(config, Metrics(), store)


async def crash(gate: RedisGate) -> None:
    """What ``kill -9`` leaves: no more renewals, nothing released, the owner lease unrenewed."""
    await gate.upkeep.stop()
    await cancel_and_wait(list(gate._tasks))  # nothing of a killed process runs on
    await gate.client.aclose()


async def new_key(store: SqlStore, granted: int, **limits: int) -> KeyRecord:
    record = KeyRecord(
        id=f"key_{uuid.uuid4().hex[:8]}",
        name="",
        key_hash=uuid.uuid4().hex,
        prefix="sk-x",
        created_at=int(time.time()),
        granted_micros=granted,
        **limits,
    )  # type: ignore[arg-type]
    return await store.create_key(record)


def row(key: KeyRecord, request_id: str, cost: int) -> LedgerRow:
    return LedgerRow(
        request_id=request_id,
        key_id=key.id,
        model="m",
        upstream="u",
        upstream_model="m",
        created_at=0,
        status="ok",
        cost_micros=cost,
        latency_ms=1,
        stream=False,
    )


async def test_reserve_settle_and_write_keep_the_balance_exact(store: SqlStore) -> None:
    gate = make_gate(store)
    key = await new_key(store, granted=1000)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=10, amount=600, request_id="r1")
        with pytest.raises(Unaffordable) as refused:
            await gate.admit(key, tokens=10, amount=600, request_id="r2")
        assert refused.value.available == 400
        assert await gate.settle(hold, cost=250, tokens=30) == 250
        balance = await gate.balance(key)
        assert (balance.granted, balance.used) == (1000, 250)  # pending counts as used
        await store.write_ledger([row(key, "r1", 250)])
        await gate.ledger_written([row(key, "r1", 250)])
        balance = await gate.balance(key)
        assert balance.used == 250  # moved from pending to used, not counted twice
    finally:
        await gate.close()


async def test_an_over_reporting_upstream_cannot_take_the_balance_below_zero(
    store: SqlStore,
) -> None:
    gate = make_gate(store)
    key = await new_key(store, granted=1000)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=1, amount=300, request_id="r1")
        assert await gate.settle(hold, cost=5000, tokens=1) == 1000
        assert (await gate.balance(key)).used == 1000
    finally:
        await gate.close()


async def test_a_request_held_past_its_bound_loses_its_reservation(store: SqlStore) -> None:
    # reservation_ttl_seconds bounds how long one request's lease is renewed
    gate = make_gate(store, reservation_ttl_seconds=0.5, lease_seconds=2.0)
    key = await new_key(store, granted=1000)
    try:
        await gate.admit(key, tokens=1, amount=1000, request_id="never-settled")
        with pytest.raises(Unaffordable):
            await gate.admit(key, tokens=1, amount=1000, request_id="r2")
        deadline = time.monotonic() + 30
        while True:  # polls the gate itself: the reservation must lapse, whenever it does
            try:
                await gate.admit(key, tokens=1, amount=1000, request_id="r3")
                break
            except Unaffordable:
                assert time.monotonic() < deadline, "the reservation never expired"
                await asyncio.sleep(0.05)
    finally:
        await gate.close()


async def test_cancel_gives_back_the_slot_and_the_money(store: SqlStore) -> None:
    gate = make_gate(store)
    key = await new_key(store, granted=1000, rpm=1)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=1, amount=1000, request_id="r1")
        await gate.cancel(hold)
        await gate.admit(key, tokens=1, amount=1000, request_id="r2")  # both back
        with pytest.raises(RateLimited):
            await gate.admit(key, tokens=1, amount=1, request_id="r3")
    finally:
        await gate.close()


async def test_grants_apply_in_revision_order(store: SqlStore) -> None:
    gate = make_gate(store)
    key = await new_key(store, granted=100)
    try:
        await gate.admit(key, tokens=1, amount=1, request_id="seed")  # seeds the account
        older = await store.get_account(key.account_id)
        assert await store.add_credits(key.id, 900) is not None
        newer = await store.get_account(key.account_id)
        assert newer is not None
        assert older is not None
        await gate._account_changed(newer)
        await gate._account_changed(older)  # a late, older view must not undo the grant
        assert (await gate.balance(key)).granted == 1000
    finally:
        await gate.close()


async def test_concurrent_first_requests_seed_a_key_once(store: SqlStore) -> None:
    gate = make_gate(store)
    key = await new_key(store, granted=10_000)
    gate.records = {key.id: key}.get
    reads: list[str] = []
    get_key = store.get_key

    async def counting_get_key(key_id: str) -> KeyRecord | None:
        reads.append(key_id)
        await asyncio.sleep(0.05)  # a slow store: every admit sees "seed" before it answers
        return await get_key(key_id)

    store.get_key = counting_get_key  # type: ignore[method-assign]
    try:
        holds = await asyncio.gather(
            *(gate.admit(key, tokens=1, amount=100, request_id=f"r{i}") for i in range(50))
        )
        assert len(holds) == 50
        # one read; a second only if a reply was read after that seeding had finished
        assert len(reads) <= 2, len(reads)
        with pytest.raises(Unaffordable) as refused:  # all 50 reservations counted
            await gate.admit(key, tokens=1, amount=5001, request_id="over")
        assert refused.value.available == 5000
    finally:
        store.get_key = get_key  # type: ignore[method-assign]
        await gate.close()


async def test_a_resent_admit_settle_or_cancel_counts_once(store: SqlStore) -> None:
    # A call that timed out may have run in Redis; sent again, it must not count twice.
    gate = make_gate(store)
    key = await new_key(store, granted=1000, rpm=4)
    gate.records = {key.id: key}.get
    try:
        first = await gate.admit(key, tokens=1, amount=600, request_id="r1")
        await gate.admit(key, tokens=1, amount=600, request_id="r1")  # no second reservation
        second = await gate.admit(key, tokens=1, amount=400, request_id="r2")  # nor a slot
        await gate.cancel(second)
        await gate.cancel(second)  # gives back r2's rate slot once
        assert await gate.settle(first, cost=250, tokens=1) == 250
        assert await gate.settle(first, cost=250, tokens=1) == 250  # charged once
        assert (await gate.balance(key)).used == 250
        for request_id in ("r3", "r4"):  # slots 2 and 3 of 4 (r1 holds one, r2 gave its back)
            await gate.admit(key, tokens=1, amount=1, request_id=request_id)
        await gate.admit(key, tokens=1, amount=1, request_id="r5")
        with pytest.raises(RateLimited):
            await gate.admit(key, tokens=1, amount=1, request_id="r6")
    finally:
        await gate.close()


async def redis_ms(gate: RedisGate) -> float:
    seconds, micros = await gate.client.time()
    return seconds * 1000 + micros / 1000


async def admitted_when_free(gate: RedisGate, key: KeyRecord, deadline: float) -> None:
    """Poll ``admit`` until it takes the key's slot."""
    while True:
        try:
            await gate.admit(key, tokens=1, amount=1, request_id=uuid.uuid4().hex)
            return
        except RateLimited:
            assert time.monotonic() < deadline, "the slot was never freed"
            await asyncio.sleep(0.05)


async def test_a_dead_processes_slot_and_reservation_lapse_within_a_lease(
    store: SqlStore,
) -> None:
    prefix = f"rgunit-{uuid.uuid4().hex[:8]}"
    dead = make_gate(store, prefix, lease_seconds=2.0)
    alive = make_gate(store, prefix, lease_seconds=2.0)
    key = await new_key(store, granted=1000, max_concurrency=1)
    try:
        await dead.admit(key, tokens=1, amount=1000, request_id="in-flight")
        await crash(dead)
        with pytest.raises(RateLimited):
            await alive.admit(key, tokens=1, amount=1, request_id="r1")
        # a lease, not reservation_ttl_seconds (an hour): well within the deadline
        await admitted_when_free(alive, key, time.monotonic() + 30)
        (balance_reserved,) = await alive.client.hmget(
            alive.keys_of(key.account_id, "acct")[0], ["reserved"]
        )
        assert int(balance_reserved) == 1  # the dead request's 1000 are free again
    finally:
        await alive.close()


async def test_a_live_request_keeps_its_slot_past_its_first_lease(store: SqlStore) -> None:
    gate = make_gate(store, lease_seconds=0.6)
    key = await new_key(store, granted=1000, max_concurrency=1)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=1, amount=10, request_id="long")
        conc = gate.key_keys(key.account_id, key.id, "conc")[0]
        first_expiry = await gate.client.zscore(conc, "long")
        assert first_expiry is not None
        deadline = time.monotonic() + 30
        while await redis_ms(gate) < first_expiry + 600:  # past its first lease, and more
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        with pytest.raises(RateLimited):  # renewed: still held
            await gate.admit(key, tokens=1, amount=1, request_id="other")
        await gate.settle(hold, cost=1, tokens=1)
        await gate.admit(key, tokens=1, amount=1, request_id="next")
    finally:
        await gate.close()


async def test_retry_after_for_concurrency_tells_when_a_dead_slot_frees(
    store: SqlStore,
) -> None:
    prefix = f"rgunit-{uuid.uuid4().hex[:8]}"
    dead = make_gate(store, prefix, lease_seconds=4.0)
    alive = make_gate(store, prefix, lease_seconds=4.0)
    key = await new_key(store, granted=1000, max_concurrency=1)
    try:
        await dead.admit(key, tokens=1, amount=1, request_id="in-flight")
        await crash(dead)
        deadline = time.monotonic() + 30
        while True:  # once the lease has missed a renewal, Retry-After is its remaining time
            with pytest.raises(RateLimited) as refused:
                await alive.admit(key, tokens=1, amount=1, request_id=uuid.uuid4().hex)
            if refused.value.retry_after > 1:
                break
            assert time.monotonic() < deadline, "Retry-After never told the lease's end"
            await asyncio.sleep(0.05)
        assert refused.value.retry_after <= 4
        await asyncio.sleep(refused.value.retry_after)  # do as told: then it is admitted
        await alive.admit(key, tokens=1, amount=1, request_id="after")
    finally:
        await alive.close()


async def test_a_busy_keys_retry_after_is_its_mean_request_time(store: SqlStore) -> None:
    gate = make_gate(store, lease_seconds=30.0)
    key = await new_key(store, granted=1000, max_concurrency=1)
    gate.records = {key.id: key}.get
    try:
        await gate.admit(key, tokens=1, amount=1, request_id="live")
        with pytest.raises(RateLimited) as refused:
            await gate.admit(key, tokens=1, amount=1, request_id="other")
        # a live holder: not the lease's 30 s, an estimate of when its request ends
        assert refused.value.retry_after < 30
    finally:
        await gate.close()


async def test_pending_charges_reconcile_with_the_ledger(store: SqlStore) -> None:
    prefix = f"rgunit-{uuid.uuid4().hex[:8]}"
    dead = make_gate(store, prefix, lease_seconds=1.0, pending_reconcile_seconds=0.5)
    alive = make_gate(store, prefix, lease_seconds=1.0, pending_reconcile_seconds=0.5)
    key = await new_key(store, granted=10_000)
    dead.records = alive.records = {key.id: key}.get
    try:
        for rid, cost in (("written", 100), ("lost", 200), ("late", 400)):
            hold = await dead.admit(key, tokens=1, amount=500, request_id=rid)
            assert await dead.settle(hold, cost=cost, tokens=1) == cost
        # "written" reached the store, but its report never reached Redis; "lost" was never
        # written (no journal replays it yet); "late" is written after the reconciliation
        await store.write_ledger([row(key, "written", 100)])
        live = await alive.admit(key, tokens=1, amount=500, request_id="live")
        await alive.settle(live, cost=800, tokens=1)  # its owner lives: its row is coming
        await crash(dead)
        assert (await alive.balance(key)).used == 1500
        deadline = time.monotonic() + 30
        while (await alive.balance(key)).used != 900:  # written + live
            assert time.monotonic() < deadline, "pending charges were never reconciled"
            await asyncio.sleep(0.05)
        # the rows that come later count once each: late (replayed), written (a late report)
        await store.write_ledger([row(key, "late", 400), row(key, "live", 800)])
        await alive.ledger_written([row(key, "late", 400), row(key, "live", 800)])
        await alive.ledger_written([row(key, "written", 100)])
        stored = await store.get_key(key.id)
        assert stored is not None
        assert (await alive.balance(key)).used == stored.used_micros == 1300
    finally:
        await alive.close()


class Link:
    """A TCP relay to Redis that can be cut: a network outage, as the gate sees it."""

    def __init__(self) -> None:
        self.up = True
        self.relays: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.relays.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if not self.up:
                return
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", 6379)
            await asyncio.gather(copy(reader, upstream), copy(upstream_reader, writer))
        finally:
            writer.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
            self.relays.discard(task)

    def cut(self) -> None:
        """Close every connection, and the new ones at once, until ``up`` is set again."""
        self.up = False
        for task in list(self.relays):
            task.cancel()

    async def close(self) -> None:
        relays = list(self.relays)
        self.cut()
        await asyncio.gather(*relays, return_exceptions=True)
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        await asyncio.sleep(0)  # connections accepted before the close see ``up`` is false
        await asyncio.gather(*self.relays, return_exceptions=True)


async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.transport.abort()


async def redis_used(gate: RedisGate, key: KeyRecord) -> int:
    (used,) = await gate.client.hmget(gate.keys_of(key.account_id, "acct")[0], ["used"])
    return int(used)


async def store_used(store: SqlStore, key: KeyRecord) -> int:
    stored = await store.get_key(key.id)
    assert stored is not None
    return stored.used_micros


async def test_a_report_sent_twice_counts_once(store: SqlStore) -> None:
    # redis-py resends a whole pipeline after a ConnectionError, also when Redis had run it and
    # only the reply was lost: the WRITTEN report runs twice
    gate = make_gate(store)
    key = await new_key(store, granted=1000)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=10, amount=500, request_id="r1")
        charged = await gate.settle(hold, cost=300, tokens=10)
        fresh = await store.write_ledger([row(key, "r1", charged)])
        await gate.ledger_written(fresh)
        await gate.ledger_written(fresh)
        assert await redis_used(gate, key) == await store_used(store, key) == 300
        assert (await gate.balance(key)).used == 300
    finally:
        await gate.close()


async def test_a_charge_settled_and_reported_during_an_outage_reaches_redis(
    store: SqlStore,
) -> None:
    link = Link()
    gate = make_gate(store, url=await link.start(), lease_seconds=1.0)
    key = await new_key(store, granted=1000)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=10, amount=900, request_id="r1")
        link.cut()  # Redis unreachable when the request settles and when its row is reported
        assert await gate.settle(hold, cost=900, tokens=10) == 900  # the full cost
        fresh = await store.write_ledger([row(key, "r1", 900)])
        await gate.ledger_written(fresh)
        with pytest.raises(RedisConnectionError):
            await gate.client.ping()
        link.up = True  # Redis answers again
        deadline = time.monotonic() + 30
        while await redis_used(gate, key) != 900:  # the report is sent again by the upkeep
            assert time.monotonic() < deadline, "the charge never reached Redis's balance"
            await asyncio.sleep(0.05)
        assert await store_used(store, key) == 900
        assert (await gate.balance(key)).used == 900
        with pytest.raises(Unaffordable):  # 900 more on a grant of 1000 with 900 spent
            await gate.admit(key, tokens=10, amount=900, request_id="r2")
    finally:
        await gate.close()
        await link.close()


async def test_a_row_the_seed_counted_is_not_counted_again_by_its_report(
    store: SqlStore,
) -> None:
    gate = make_gate(store)
    key = await new_key(store, granted=1000)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=1, amount=500, request_id="r1")
        await gate.settle(hold, cost=300, tokens=1)
        fresh = await store.write_ledger([row(key, "r1", 300)])  # committed, not yet reported
        # Redis restarts empty; the next request seeds the key from the store, which counts r1
        await gate.client.delete(*[k async for k in gate.client.scan_iter(f"{gate.prefix}:*")])
        second = await gate.admit(key, tokens=1, amount=100, request_id="r2")
        await gate.ledger_written(fresh)  # the late report of r1
        assert (await gate.balance(key)).used == 300
        # a charge settled after the seed still counts, pending and then written
        await gate.settle(second, cost=200, tokens=1)
        assert (await gate.balance(key)).used == 500
        fresh = await store.write_ledger([row(key, "r2", 200)])
        await gate.ledger_written(fresh)
        assert await redis_used(gate, key) == await store_used(store, key) == 500
        assert (await gate.balance(key)).used == 500
    finally:
        await gate.close()


async def test_reconciliation_examines_only_keys_with_pending_charges(store: SqlStore) -> None:
    gate = make_gate(store)
    keys = [await new_key(store, granted=1000) for _ in range(4)]
    gate.records = {key.id: key for key in keys}.get
    try:
        for n, key in enumerate(keys):
            hold = await gate.admit(key, tokens=1, amount=100, request_id=f"r{n}")
            await gate.settle(hold, cost=10, tokens=1)
        fresh = await store.write_ledger([row(key, f"r{n}", 10) for n, key in enumerate(keys)])
        await gate.ledger_written(fresh[1:])  # the first key's report is late
        examined: list[str] = []
        run = gate.scripts.run

        async def counting_run(calls: Sequence[tuple[Script, Args, Args]]) -> list[Any]:
            examined.extend(str(keys[0]) for script, keys, _ in calls if script is stale)
            return await run(calls)

        stale = gate.scripts.stale
        gate.scripts.run = counting_run  # type: ignore[method-assign]
        await gate.upkeep.reconcile()
        assert examined == gate.keys_of(keys[0].account_id, "pendt")
        await gate.ledger_written(fresh[:1])
        examined.clear()
        await gate.upkeep.reconcile()
        assert examined == []
    finally:
        await gate.close()


def test_unreported_rows_are_bounded_and_keep_their_keys() -> None:
    unreported = Unreported(limit=3)
    unreported.add({"k1": ["a", "b", "a"], "k2": ["c", "d"]})
    unreported.add({"k3": ["e"]})
    # past the bound only the keys are kept: their report still brings ``used`` up to the store
    assert unreported.by_key == {"k1": {"a", "b"}, "k2": {"c"}, "k3": set()}
    assert len(unreported.take()) == 3
    assert len(unreported) == unreported.count == 0


# --- accounts and spend caps -----------------------------------------------------------------


async def capped_pair(
    store: SqlStore, granted: int, cap: int, **key: object
) -> tuple[KeyRecord, KeyRecord]:
    """Two keys of one account; the first with a spend cap of ``cap``."""
    first = await new_key(store, granted=granted)
    capped = await store.update_key(
        first.id, spend_limit_micros=cap, spend_limit_period=key.pop("period", "total"), **key
    )
    assert capped is not None
    second = await store.create_key(
        KeyRecord(
            id=f"key_{uuid.uuid4().hex[:8]}",
            name="",
            key_hash=uuid.uuid4().hex,
            prefix="sk-x",
            created_at=int(time.time()),
            account_id=first.account_id,
        )
    )
    return capped, second


async def test_the_account_balance_and_the_key_cap_are_reserved_together(
    store: SqlStore,
) -> None:
    gate = make_gate(store)
    capped, other = await capped_pair(store, granted=1000, cap=400)
    gate.records = {capped.id: capped, other.id: other}.get
    try:
        hold = await gate.admit(capped, tokens=1, amount=300, request_id="r1")
        with pytest.raises(Unaffordable) as refused:  # the cap binds: 100 left of it
            await gate.admit(capped, tokens=1, amount=200, request_id="r2")
        assert refused.value.available == 100
        # the account still has 700: its other key reserves them, and no more
        other_hold = await gate.admit(other, tokens=1, amount=700, request_id="r3")
        with pytest.raises(Unaffordable) as refused:
            await gate.admit(capped, tokens=1, amount=1, request_id="r4")
        assert refused.value.available == 0
        # an upstream that reports more than allowed: clamped to the room left, here the
        # account's (the other key holds 700 of its 1000)
        assert await gate.settle(hold, cost=500, tokens=1) == 300
        await gate.cancel(other_hold)
        hold = await gate.admit(capped, tokens=1, amount=100, request_id="r5")
        assert await gate.settle(hold, cost=500, tokens=1) == 100  # now the cap's room
        balance = await gate.balance(capped)
        assert (balance.used, balance.cap_remaining, balance.remaining) == (400, 0, 0)
        assert (await gate.balance(other)).remaining == 600
    finally:
        await gate.close()


async def test_a_cap_of_an_earlier_period_starts_afresh(store: SqlStore) -> None:
    today = period_start("day", time.time())
    gate = make_gate(store)
    stale, _ = await capped_pair(
        store,
        granted=10_000,
        cap=500,
        period="day",
        period_used_micros=500,
        period_start=today - 86_400,
    )
    spent, _ = await capped_pair(
        store, granted=10_000, cap=500, period="day", period_used_micros=500, period_start=today
    )
    gate.records = {stale.id: stale, spent.id: spent}.get
    try:
        with pytest.raises(Unaffordable):
            await gate.admit(spent, tokens=1, amount=1, request_id="r1")
        assert (await gate.balance(stale)).cap_remaining == 500
        hold = await gate.admit(stale, tokens=1, amount=500, request_id="r2")
        assert await gate.settle(hold, cost=120, tokens=1) == 120
        now_ms = int(time.time() * 1000)
        fresh = await store.write_ledger([replace(row(stale, "r2", 120), created_at=now_ms)])
        await gate.ledger_written(fresh)
        record = await store.get_key(stale.id)
        assert record is not None
        assert (record.period_used_micros, record.period_start) == (120, today)
        assert (await gate.balance(stale)).cap_remaining == 380
    finally:
        await gate.close()


async def test_an_accounts_limits_hold_over_all_its_keys(store: SqlStore) -> None:
    gate = make_gate(store)
    capped, other = await capped_pair(store, granted=10_000, cap=10_000)
    account = await store.update_account(capped.account_id, rpm=2, max_concurrency=5)
    assert account is not None
    gate.records = {capped.id: capped, other.id: other}.get
    gate.accounts = {account.id: account}.get
    try:
        first = await gate.admit(capped, tokens=1, amount=1, request_id="r1")
        await gate.admit(other, tokens=1, amount=1, request_id="r2")
        with pytest.raises(RateLimited) as refused:
            await gate.admit(capped, tokens=1, amount=1, request_id="r3")
        assert "this key's account allows 2 requests per minute" in str(refused.value)
        await gate.cancel(first)  # gives the account's slot back too
        await gate.admit(other, tokens=1, amount=1, request_id="r4")
    finally:
        await gate.close()


async def test_the_upkeep_stops_when_a_redis_call_loses_its_cancel(store: SqlStore) -> None:
    # On Python 3.11, redis-py's sends run in asyncio.wait_for, which returns normally when the
    # cancel races the reply: the renewal loop then went back to sleep, and stop() (and with
    # it the gate's close, and the process's shutdown) waited forever, about 1 run in 40.
    gate = make_gate(store, lease_seconds=0.3)
    renewed = asyncio.Event()
    real_renew = gate.upkeep.renew

    async def renew_losing_its_cancel() -> None:
        try:
            await real_renew()
            renewed.set()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # what wait_for does when the reply came as the cancel arrived

    gate.upkeep.renew = renew_losing_its_cancel  # type: ignore[method-assign]
    gate.upkeep.start()
    try:
        await renewed.wait()
        async with asyncio.timeout(60):  # a hang fails here, not at pytest's timeout
            await gate.upkeep.stop()
        assert gate.upkeep._tasks == []
    finally:
        await gate.close()


# --- caps and credits changed while charges are in flight ----------------------------------

CLI = Principal(via="cli", id="cli", role="admin")
MONDAY_THE_FIRST = 1_801_468_800  # 2027-02-01T08:00:00Z: its day, week and month start alike


async def test_a_period_change_with_charges_pending_lets_nothing_past_the_cap(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A charge pending in Redis under the cap's old kind of period (day) must not come off the
    new kind's (week) count when its ledger row is written. On a Monday the day and the week
    start at the same second, so only the cap's epoch tells the two counts apart: without it,
    the written charge was taken off a count it was never in, and 600 more got past the cap."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: MONDAY_THE_FIRST + real() % 60)
    day = period_start("day", time.time())
    assert day == period_start("week", time.time())
    gate = make_gate(store)
    key, _ = await capped_pair(store, granted=10_000, cap=1000, period="day", period_start=day)
    current = {key.id: key}
    gate.records = current.get
    try:
        hold = await gate.admit(key, tokens=1, amount=600, request_id="r1")
        assert await gate.settle(hold, cost=600, tokens=1) == 600  # pending in Redis
        # the operator moves the cap to a week; the ledger holds nothing of r1 yet
        weekly = await keys.update_key(
            store, CLI, key.id, {"spend_limit_period": "week"}, now=int(time.time())
        )
        assert (weekly.period_used_micros, weekly.period_start) == (0, day)
        current[key.id] = weekly
        await gate._key_changed(weekly)
        # r1's row is written: the store counts it in the week, and Redis takes that count
        written = await store.write_ledger(
            [
                replace(
                    row(key, "r1", 600),
                    account_id=key.account_id,
                    created_at=int(time.time() * 1000),
                )
            ]
        )
        await gate.ledger_written(written)
        record = await store.get_key(key.id)
        assert record is not None
        assert (record.period_used_micros, record.period_start) == (600, day)
        assert (await gate.balance(weekly)).cap_remaining == 400
        with pytest.raises(Unaffordable) as refused:
            await gate.admit(weekly, tokens=1, amount=401, request_id="r2")
        assert refused.value.available == 400
        hold = await gate.admit(weekly, tokens=1, amount=400, request_id="r3")
        assert await gate.settle(hold, cost=400, tokens=1) == 400
        with pytest.raises(Unaffordable):
            await gate.admit(weekly, tokens=1, amount=1, request_id="r4")
    finally:
        await gate.close()


async def test_what_was_reserved_is_charged_when_credits_or_the_cap_shrink_meanwhile(
    store: SqlStore,
) -> None:
    """The Redis gate charges what it reserved for a request, also when the account's credits
    are taken back or the key's cap lowered while it runs (before the fix: nothing, or only
    what was left); a report beyond the reservation is still bounded by what is left."""
    gate = make_gate(store)
    key, _ = await capped_pair(store, granted=10_000, cap=8_000)
    current = {key.id: key}
    gate.records = current.get
    try:
        # credits taken back while a request runs
        hold = await gate.admit(key, tokens=1, amount=5_000, request_id="r1")
        account = await store.update_account(key.account_id, granted_micros=0)
        assert account is not None
        await gate._account_changed(account)
        assert await gate.settle(hold, cost=4_000, tokens=1) == 4_000  # not 0: reserved
        # credits back, then a request reserves 1,000 and the credits shrink again: a report
        # of 3,000 is charged its reservation, not more
        account = await store.update_account(key.account_id, granted_micros=10_000)
        assert account is not None
        await gate._account_changed(account)
        hold = await gate.admit(key, tokens=1, amount=1_000, request_id="r2")
        account = await store.update_account(key.account_id, granted_micros=4_000)
        assert account is not None
        await gate._account_changed(account)
        assert await gate.settle(hold, cost=3_000, tokens=1) == 1_000
        # the key's cap lowered while a request runs
        account = await store.update_account(key.account_id, granted_micros=100_000)
        assert account is not None
        await gate._account_changed(account)
        hold = await gate.admit(key, tokens=1, amount=2_000, request_id="r3")
        lowered = await store.update_key(key.id, spend_limit_micros=5_000)
        assert lowered is not None
        current[key.id] = lowered
        await gate._key_changed(lowered)
        assert await gate.settle(hold, cost=2_000, tokens=1) == 2_000  # not 0: reserved
        balance = await gate.balance(lowered)
        assert balance.used == 4_000 + 1_000 + 2_000
        # 7,000 charged against a cap lowered to 5,000: below it by what was in flight
        assert balance.cap_remaining == -2_000
        with pytest.raises(Unaffordable):
            await gate.admit(lowered, tokens=1, amount=1, request_id="r4")
    finally:
        await gate.close()


async def test_a_permit_that_reserves_nothing_counts_against_rpm_and_charges_nothing(
    store: SqlStore,
) -> None:
    """What ``count_tokens`` takes: ``amount=0`` passes a key with nothing left, counts against
    its RPM, and settles at no cost."""
    gate = make_gate(store)
    key = await new_key(store, granted=0, rpm=1)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=0, amount=0, request_id="c1")
        assert await gate.settle(hold, cost=0, tokens=0) == 0
        with pytest.raises(RateLimited):
            await gate.admit(key, tokens=0, amount=0, request_id="c2")
        balance = await gate.balance(key)
        assert (balance.granted, balance.used, balance.remaining) == (0, 0, 0)
    finally:
        await gate.close()
