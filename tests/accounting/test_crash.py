"""``kill -9`` under load forgets no charge: every request that reached the upstream ends as
exactly one ledger row, each answer a client received is an ``ok`` row, and the keys are
charged what the rows say (SQLite; PostgreSQL + Redis with two workers)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest

from relaygate.store.records import LedgerRow
from relaygate.store.sql import SqlStore
from tests.conftest import catalog
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, http
from tests.support.services import REDIS_URL, create_database, drop_database, need

pytestmark = pytest.mark.timeout(120)

CHAT = "/v1/chat/completions"
KILLS = 3


def _body(n: int) -> dict[str, Any]:
    return {"model": "gpt-5.2", "max_tokens": 20, "stream": n % 2 == 1,
            "messages": [{"role": "user", "content": f"hi {n}"}]}


def _answer_id(raw: bytes) -> str | None:
    """The id of a complete answer (a body, or a stream that reached ``[DONE]``)."""
    if raw.startswith(b"{"):
        return str(json.loads(raw)["id"])
    if b"data: [DONE]" not in raw:
        return None
    first = next(line for line in raw.split(b"\n") if line.startswith(b"data: {"))
    return str(json.loads(first[6:])["id"])


class Load:
    """Sequential requests from a few threads until stopped; remembers every complete answer."""

    def __init__(self, gateway: GatewayProcess, key: str, threads: int = 6) -> None:
        self.gateway, self.key = gateway, key
        self.answered: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, n: int) -> None:
        while not self.stopping.is_set():
            n += len(self.threads)
            try:
                status, _, raw = http("POST", self.gateway.url + CHAT, _body(n), key=self.key)
            except (OSError, ValueError, HTTPException):  # cut by the kill
                continue
            answer = _answer_id(raw) if status == 200 else None
            if answer is not None:
                with self.lock:
                    self.answered.append(answer)

    def count(self) -> int:
        with self.lock:
            return len(self.answered)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)


def _kill_9(gateway: GatewayProcess) -> None:
    """SIGKILL the server and its workers at once, as a crash (or the OOM killer) would."""
    assert gateway.process is not None
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    gateway.process.kill()
    gateway.process.wait()
    gateway._log.close()


def _store_state(url: str, key_id: str) -> tuple[list[LedgerRow], int]:
    async def read() -> tuple[list[LedgerRow], int]:
        store = SqlStore(url)
        try:
            record = await store.get_key(key_id)
            assert record is not None
            return await store.ledger_rows(key_id), record.used_micros
        finally:
            await store.close()

    return asyncio.run(read())


def _crash_three_times(
    tmp_path: Path, upstream: FakeOpenAI, config: dict[str, Any], args: tuple[str, ...] = ()
) -> None:
    # Streams take a while (in flight at the kill); rows wait long enough in memory that an
    # unjournaled process would lose some.
    upstream.default = Behavior(text="abcdefgh", chunks=4, chunk_delay=0.02)
    gateway = GatewayProcess(tmp_path, catalog(upstream.base_url, ledger_flush_seconds=1.0,
                                               **config), args=args)
    answered: list[str] = []
    gateway.start()
    key = gateway.create_key("--credits", "100")
    try:
        for round_ in range(KILLS):
            if round_:
                gateway.start()
            with Load(gateway, key["key"]) as load:
                target = load.count() + 40
                gateway.wait_until(lambda t=target: load.count() >= t, timeout=30,
                                   message="answers under load")
                _kill_9(gateway)
            answered += load.answered
        gateway.start()  # replays the journals of the killed processes before serving
    finally:
        gateway.stop()
    url = config.get("database_url") or f"sqlite:///{tmp_path / 'relaygate.db'}"
    rows, used = _store_state(url, key["id"])
    ids = [row.request_id for row in rows]
    assert len(ids) == len(set(ids))
    ok = {row.request_id for row in rows if row.status == "ok"}
    missing = set(answered) - ok
    assert not missing, f"{len(missing)} answered requests have no ok row"
    # every request that reached the upstream has its row (those cut by a kill: interrupted)
    assert len(upstream.received) <= len(rows)
    assert upstream.completed <= len(rows)
    assert len(ok) <= len(upstream.received)
    statuses = {row.status for row in rows}
    assert statuses <= {"ok", "interrupted"}, statuses
    assert all(row.cost_micros > 0 for row in rows)
    assert used == sum(row.cost_micros for row in rows)
    journal = tmp_path / "relaygate-journal"
    assert not journal.exists() or [p.name for p in journal.glob("*.journal")] == []


def test_kill_9_under_load_on_sqlite_forgets_no_charge(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    _crash_three_times(tmp_path, upstream, {})


@pytest.fixture
def postgres() -> Iterator[str]:
    url, name = create_database()
    yield url
    drop_database(name)


def test_kill_9_under_load_with_two_workers_on_postgres_and_redis_forgets_no_charge(
    tmp_path: Path, upstream: FakeOpenAI, postgres: str
) -> None:
    need("Redis", 6379)
    config = {"database_url": postgres, "redis_url": REDIS_URL,
              "redis_key_prefix": f"rgtest-{uuid.uuid4().hex[:8]}"}
    _crash_three_times(tmp_path, upstream, config, args=("--workers", "2"))
