"""``kill -9`` of a replica with requests in flight: its concurrency slots and reservations are
leases that lapse within one lease, and its pending charges are reconciled with the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from decimal import Decimal

import pytest

from relaygate.accounting.prices import micros_to_usd
from relaygate.store.sql import SqlStore
from tests.scale.conftest import Replicas
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, credits_of, http

pytestmark = pytest.mark.timeout(300)

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-5.2", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
LEASE = 2.0


def ledger_micros(url: str, key_id: str) -> int:
    async def read() -> int:
        store = SqlStore(url)
        try:
            return sum(row.cost_micros for row in await store.ledger_rows(key_id))
        finally:
            await store.close()

    return asyncio.run(read())


def in_flight(gateway: GatewayProcess, key: str) -> None:
    def run() -> None:
        with contextlib.suppress(Exception):  # the replica is killed under it
            http("POST", gateway.url + CHAT, {**BODY, "stream": True}, key=key, timeout=60)

    threading.Thread(target=run, daemon=True).start()


def test_a_killed_replica_frees_its_slots_within_a_lease_and_its_charges_reconcile(
    replicas: Replicas, upstream: FakeOpenAI, shared_pg: str
) -> None:
    # a's ledger rows wait in its memory (a long flush), so its charges are pending when killed
    (doomed,) = replicas(1, lease_seconds=LEASE, pending_reconcile_seconds=1,
                         ledger_flush_seconds=120)
    (survivor,) = replicas(1, lease_seconds=LEASE, pending_reconcile_seconds=1)
    key = doomed.create_key("--credits", "5", "--concurrency", "2")
    survivor.wait_until(lambda: survivor.get("/v1/credits", key["key"])[0] == 200)
    for _ in range(3):
        assert doomed.post(CHAT, BODY, key["key"])[0] == 200
    charged = credits_of(survivor, key["key"])["used_credits"]
    assert charged > 0  # pending in Redis, not in the ledger
    upstream.script = [Behavior(first_delay=8), Behavior(first_delay=8)]
    for _ in range(2):
        in_flight(doomed, key["key"])
    doomed.wait_until(lambda: len(upstream.received) == 5, message="both requests upstream")
    status, headers, _ = survivor.post(CHAT, BODY, key["key"])
    assert status == 429, "the key's two slots are taken"
    assert doomed.process is not None
    doomed.process.kill()
    doomed.process.wait()
    killed = time.monotonic()

    # the slots come back within about a lease; every Retry-After on the way is true
    deadline = killed + 30
    while True:
        status, headers, answer = survivor.post(CHAT, BODY, key["key"])
        if status == 200:
            break
        assert status == 429, answer
        assert time.monotonic() < deadline, "the dead replica's slots were never freed"
        retry_after = int({k.lower(): v for k, v in headers.items()}["retry-after"])
        assert retry_after <= LEASE + 1
        if retry_after > 1:  # the leases missed their renewals: they end in retry_after
            time.sleep(retry_after)
            status, _, answer = survivor.post(CHAT, BODY, key["key"])
            assert status == 200, answer
            break
        time.sleep(0.05)
    print(f"slots free {time.monotonic() - killed:.2f} s after kill -9 (lease {LEASE} s)")

    # the dead replica's pending charges: its rows never reached the ledger (no journal here
    # replays them), so /v1/credits comes to agree with the ledger
    def agrees() -> bool:
        used: Decimal = credits_of(survivor, key["key"])["used_credits"]
        return used == Decimal(micros_to_usd(ledger_micros(shared_pg, key["id"])))

    survivor.wait_until(agrees, timeout=30, message="/v1/credits agreeing with the ledger")
    print(f"/v1/credits agrees with the ledger {time.monotonic() - killed:.2f} s after kill -9")
