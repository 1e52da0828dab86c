"""Outages log their first failure, a periodic count, and their end: not a line per failure."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaygate.keys.cache import KeyCache
from relaygate.store.sql import SqlStore
from tests.conftest import catalog
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess
from tests.support.services import PrivateRedis, free_port

pytestmark = pytest.mark.timeout(300)

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-5.2", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


def logged_since(gateway: GatewayProcess, offset: int) -> list[str]:
    """The log records written after ``offset`` (a traceback belongs to its record), but the
    request log's (a line per request, outage or not)."""
    return [
        line
        for line in gateway.logs()[offset:].splitlines()
        if RECORD.match(line) and " relaygate.access: " not in line
    ]


def test_redis_down_logs_a_bounded_number_of_lines(
    tmp_path: Path, upstream: FakeOpenAI, private_redis: PrivateRedis
) -> None:
    gateway = GatewayProcess(tmp_path, catalog(upstream.base_url, redis_url=private_redis.url,
                                               redis_timeout_seconds=0.5)).start()
    try:
        key = gateway.create_key("--credits", "5", "--rpm", "100000")
        assert gateway.post(CHAT, BODY, key["key"])[0] == 200
        offset = len(gateway.logs())
        private_redis.stop()
        statuses = [gateway.post(CHAT, BODY, key["key"])[0] for _ in range(100)]
        assert set(statuses) == {503}, statuses
        during = logged_since(gateway, offset)
        # the first failure in detail (with its traceback), and nothing more for a minute
        assert 1 <= len(during) <= 3, "\n".join(during)
        private_redis.start()
        gateway.wait_until(lambda: gateway.post(CHAT, BODY, key["key"])[0] == 200, timeout=30,
                           message="served again once Redis is back")
        gateway.wait_until(lambda: any(" is back after " in line
                                       for line in logged_since(gateway, offset)),
                           message="the recovery line")
        recovered = [line for line in logged_since(gateway, offset) if " is back after " in line]
        assert len(recovered) == 1, recovered
    finally:
        gateway.stop()


async def test_the_key_refresh_loop_logs_a_store_outage_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = SqlStore(f"sqlite:///{tmp_path / 'keys.db'}")
    await good.upgrade()
    # nothing listens there: every refresh fails at once
    down = SqlStore(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    cache = KeyCache(down, refresh_seconds=0.01)
    attempts = 0
    changes_since = down.changes_since

    async def counted(revision: int) -> tuple[int, list[object], list[object]]:
        nonlocal attempts
        attempts += 1
        return await changes_since(revision)  # type: ignore[return-value]

    down.changes_since = counted  # type: ignore[method-assign,assignment]
    caplog.set_level(logging.INFO, logger="relaygate.keys")
    cache.start()
    try:
        deadline = time.monotonic() + 60
        while attempts < 50:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        failing = [r for r in caplog.records if r.name == "relaygate.keys"]
        assert len(failing) <= 3, [r.getMessage() for r in failing]
        cache.store = good  # the store is back
        while len([r for r in caplog.records if r.name == "relaygate.keys"]) == len(failing):
            assert time.monotonic() < deadline, "no recovery line"
            await asyncio.sleep(0.01)
        after = [r.getMessage() for r in caplog.records if r.name == "relaygate.keys"]
        assert len(after) == len(failing) + 1, after
        assert "is back after" in after[-1], after
    finally:
        await cache.close()
        await down.close()
        await good.close()
