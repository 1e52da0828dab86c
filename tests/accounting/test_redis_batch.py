"""The Redis gate's calls batched per event-loop turn (:mod:`relaygate.accounting.redis_batch`):
one round trip for the calls of many requests, each with its own reply or error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError

from relaygate.accounting.redis_batch import Batcher, Script
from relaygate.errors import ServiceUnavailable
from relaygate.store.sql import SqlStore
from tests.accounting.test_redis_gate import make_gate, new_key, redis_used, row, store_used
from tests.support.services import REDIS_URL, PrivateRedis, need


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


async def test_concurrent_requests_share_one_round_trip(store: SqlStore) -> None:
    # no lease renewal nor reconciliation pass (their own pipelines) within the test
    gate = make_gate(store, lease_seconds=600, pending_reconcile_seconds=600)
    keys = [await new_key(store, granted=1000, rpm=100, max_concurrency=5) for _ in range(8)]
    gate.records = {key.id: key for key in keys}.get
    for key in keys:  # seeded first: an unseeded account's admission is sent twice
        await gate.admit(key, tokens=1, amount=1, request_id=f"seed-{key.id}")
    batch = gate.scripts.batch
    try:
        before = batch.round_trips, batch.calls
        holds = await asyncio.gather(
            *(gate.admit(key, tokens=1, amount=100, request_id=f"r-{key.id}") for key in keys)
        )
        assert (batch.round_trips - before[0], batch.calls - before[1]) == (1, 8)
        charged = await asyncio.gather(*(gate.settle(hold, cost=40, tokens=1) for hold in holds))
        assert charged == [40] * 8
        assert (batch.round_trips - before[0], batch.calls - before[1]) == (2, 16)
        for key in keys:
            balance = await gate.balance(key)
            assert (balance.granted, balance.used) == (1000, 40)  # the seed's hold is live
    finally:
        await gate.close()


async def test_a_report_of_many_rows_forgets_each_pending_charge_once(store: SqlStore) -> None:
    gate = make_gate(store)
    key = await new_key(store, granted=10_000)
    gate.records = {key.id: key}.get
    try:
        for n in range(5):
            hold = await gate.admit(key, tokens=1, amount=500, request_id=f"r{n}")
            await gate.settle(hold, cost=100 * (n + 1), tokens=1)
        fresh = await store.write_ledger([row(key, f"r{n}", 100 * (n + 1)) for n in range(5)])
        await gate.ledger_written([*fresh, *fresh[:2]])  # two rows named twice in one report
        acct = gate.keys_of(key.account_id or key.id, "acct")[0]
        (pending,) = await gate.client.hmget(acct, ["pending"])
        assert int(pending) == 0
        assert await gate.client.hlen(gate.keys_of(key.account_id or key.id, "pend")[0]) == 0
        assert await redis_used(gate, key) == await store_used(store, key) == 1500
        assert (await gate.balance(key)).used == 1500
    finally:
        await gate.close()


async def test_a_redis_that_lost_its_scripts_is_sent_them_again(
    store: SqlStore, private_redis: PrivateRedis
) -> None:
    gate = make_gate(store, url=private_redis.url)
    key = await new_key(store, granted=1000)
    gate.records = {key.id: key}.get
    try:
        hold = await gate.admit(key, tokens=1, amount=300, request_id="r1")
        await gate.client.script_flush()  # as after a restart: the scripts are gone
        assert await gate.settle(hold, cost=200, tokens=1) == 200  # NOSCRIPT: loaded, resent
        assert (await gate.balance(key)).used == 200
    finally:
        await gate.close()


async def test_one_call_failing_leaves_the_others_in_its_pipeline_answered() -> None:
    need("Redis", 6379)
    client = redis.Redis.from_url(REDIS_URL)
    batch = Batcher(client)
    prefix = f"batch-{uuid.uuid4().hex[:8]}"
    incr = Script("return redis.call('INCR', KEYS[1])")
    try:
        await client.hset(f"{prefix}:hash", "a", 1)  # INCR on a hash: WRONGTYPE
        await client.script_load(incr.source)
        calls = [
            batch.call(incr, [f"{prefix}:n"], []),
            batch.call(incr, [f"{prefix}:hash"], []),
            batch.call(incr, [f"{prefix}:n"], []),
        ]
        first, failed, third = await asyncio.gather(*calls, return_exceptions=True)
        assert (first, third) == (1, 2)
        assert isinstance(failed, ResponseError)
        assert batch.round_trips == 1  # the three in one pipeline
    finally:
        await batch.close()
        await client.delete(f"{prefix}:hash", f"{prefix}:n")
        await client.aclose()


async def test_a_redis_that_never_answers_fails_the_whole_batch_within_the_timeout(
    store: SqlStore,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):  # takes every call, answers none
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gate = make_gate(store, url=f"redis://127.0.0.1:{port}/0", redis_timeout_seconds=0.3)
    key = await new_key(store, granted=1000)
    gate.records = {key.id: key}.get
    try:
        async with asyncio.timeout(30):  # a hang fails here
            refused = await asyncio.gather(
                *(gate.admit(key, tokens=1, amount=100, request_id=f"r{n}") for n in range(3)),
                return_exceptions=True,
            )
        # credit admission fails closed, each request on its own
        assert [type(r) for r in refused] == [ServiceUnavailable] * 3
    finally:
        await gate.close()
        server.close()
