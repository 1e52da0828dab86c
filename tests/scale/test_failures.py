"""Failure modes: Redis or PostgreSQL going away under load, and shutdown while the store is
down. Every upstream response must end as exactly one ledger row."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relaygate.store.sql import SqlStore
from tests.conftest import catalog
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess, http
from tests.support.services import PrivatePostgres, PrivateRedis

# processes, databases and Redis servers start and stop here: slower than a unit test
pytestmark = pytest.mark.timeout(300)

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-5.2", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().start()
    yield server
    server.stop()
    server.remove()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


class Load:
    """Sequential requests from a few threads until stopped; remembers every answer."""

    def __init__(self, gateways: list[GatewayProcess], key: str, threads: int = 3) -> None:
        self.gateways, self.key = gateways, key
        self.results: list[tuple[int, Any]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, n: int) -> None:
        i = n
        while not self.stopping.is_set():
            gateway = self.gateways[i % len(self.gateways)]
            i += 1
            try:
                status, _, raw = http("POST", gateway.url + CHAT, BODY, key=self.key, timeout=30)
            except OSError:
                continue
            with self.lock:
                self.results.append((status, json.loads(raw) if raw else None))

    def count(self, status: int) -> int:
        with self.lock:
            return sum(1 for s, _ in self.results if s == status)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)


def ledger(url: str, key_id: str) -> list[Any]:
    async def read() -> list[Any]:
        store = SqlStore(url)
        try:
            return await store.ledger_rows(key_id)
        finally:
            await store.close()

    return asyncio.run(read())


def start_replicas(
    tmp_path: Path, upstream: FakeOpenAI, n: int, **config: Any
) -> list[GatewayProcess]:
    gateways = []
    for i in range(n):
        directory = tmp_path / f"replica{i}"
        directory.mkdir(exist_ok=True)
        gateways.append(GatewayProcess(directory, catalog(upstream.base_url, **config)).start())
    return gateways


def test_redis_unreachable_fails_closed_for_credits(
    tmp_path: Path, upstream: FakeOpenAI, private_redis: PrivateRedis
) -> None:
    (gateway,) = start_replicas(tmp_path, upstream, 1, redis_url=private_redis.url)
    try:
        paying = gateway.create_key("--credits", "5", "--rpm", "1000")
        unlimited = gateway.create_key("--unlimited", "--rpm", "1000")
        assert gateway.post(CHAT, BODY, paying["key"])[0] == 200
        private_redis.stop()
        before = len(upstream.received)
        status, _, answer = gateway.post(CHAT, BODY, paying["key"])
        assert status == 503, answer
        assert answer["error"]["type"] == "service_unavailable_error"
        assert "Redis" in answer["error"]["message"]
        assert len(upstream.received) == before  # no upstream call
        # rate limits fall back to this replica's own limiter, and say so in the metrics
        assert gateway.post(CHAT, BODY, unlimited["key"])[0] == 200
        metrics = gateway.operator_get("/metrics")[2].decode()
        assert "relaygate_limit_decisions_without_redis_total 1.0" in metrics
    finally:
        gateway.stop()


def test_outages_under_load_lose_and_double_no_ledger_row(
    tmp_path: Path, upstream: FakeOpenAI, private_pg: PrivatePostgres,
    private_redis: PrivateRedis,
) -> None:
    gateways = start_replicas(tmp_path, upstream, 2, database_url=private_pg.url,
                              redis_url=private_redis.url, key_refresh_seconds=0.2)
    try:
        key = gateways[0].create_key("--credits", "50")
        for gateway in gateways[1:]:
            gateway.wait_until(lambda g=gateway: g.get("/v1/credits", key["key"])[0] == 200)
        with Load(gateways, key["key"]) as load:
            gateways[0].wait_until(lambda: load.count(200) >= 10, message="load started")
            private_pg.stop()
            served = load.count(200)
            gateways[0].wait_until(lambda: load.count(200) >= served + 20, timeout=30,
                                   message="requests served while PostgreSQL is down")
            private_pg.start()
            private_redis.stop()
            gateways[0].wait_until(lambda: load.count(503) >= 3, timeout=30,
                                   message="credit admission refused while Redis is down")
            private_redis.start()  # empty: balances are seeded again from PostgreSQL
            served = load.count(200)
            gateways[0].wait_until(lambda: load.count(200) >= served + 20, timeout=30,
                                   message="requests served after Redis came back")
    finally:
        for gateway in gateways:
            gateway.stop()
    answered = [answer["id"] for status, answer in load.results if status == 200]
    statuses = {status for status, _ in load.results}
    assert statuses <= {200, 503}, statuses
    rows = ledger(private_pg.url, key["id"])
    ok_rows = [row.request_id for row in rows if row.status == "ok"]
    assert sorted(ok_rows) == sorted(answered)
    assert len(set(ok_rows)) == len(ok_rows)
    assert upstream.completed == len(answered)


def test_shutdown_with_the_store_down_keeps_the_journal_and_replays_once(
    tmp_path: Path, upstream: FakeOpenAI, private_pg: PrivatePostgres
) -> None:
    (gateway,) = start_replicas(tmp_path, upstream, 1, database_url=private_pg.url)
    key = gateway.create_key("--credits", "5")
    ids = [gateway.post(CHAT, BODY, key["key"])[2]["id"]]
    private_pg.stop()
    for _ in range(3):
        status, _, answer = gateway.post(CHAT, BODY, key["key"])
        assert status == 200, answer
        ids.append(answer["id"])
    gateway.stop()  # SIGTERM: drains, cannot write, leaves the rows in its journal
    journal = gateway.directory / "relaygate-journal"
    left = set(journal.glob("*.journal"))
    assert left
    assert "rows kept in the journal" in gateway.logs(), gateway.logs()
    private_pg.start()
    gateway.start()  # writes the journaled rows before serving
    try:
        assert not left & set(journal.glob("*.journal"))  # replayed, then removed
        rows = ledger(private_pg.url, key["id"])
        assert sorted(row.request_id for row in rows) == sorted(ids)
        used = gateway.credits(key["key"])["used_credits"]
        assert used > 0
    finally:
        gateway.stop()
    # and a second start writes nothing twice
    assert len(ledger(private_pg.url, key["id"])) == len(ids)
