"""Three replicas on one PostgreSQL and one Redis keep every limit and balance exact."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from relaygate.accounting.prices import Price, micros_to_usd
from relaygate.providers.base import TokenUsage
from relaygate.settings import Pricing
from relaygate.store.sql import SqlStore
from tests.scale.conftest import Replicas
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess
from tests.support.rates import burst_allowance, timed

# processes, databases and Redis servers start and stop here: slower than a unit test
pytestmark = pytest.mark.timeout(300)

CHAT = "/v1/chat/completions"
PRICE = Price.from_settings(Pricing(input=Decimal("1.75"), cached_input=Decimal("0.175"),
                                    output=Decimal("14")))


def body(max_tokens: int = 20) -> dict[str, Any]:
    return {"model": "gpt-5.2", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hello"}]}


def wait_known(gateways: list[GatewayProcess], key: str) -> None:
    for gateway in gateways:
        gateway.wait_until(lambda g=gateway: g.get("/v1/credits", key)[0] == 200,
                           message=f"key known to {gateway.url}")


async def spread(
    gateways: list[GatewayProcess], key: str, count: int, payload: dict[str, Any]
) -> list[tuple[int, dict[str, str], Any]]:
    """``count`` concurrent requests, round-robin over the replicas."""
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> tuple[int, dict[str, str], Any]:
            url = gateways[i % len(gateways)].url + CHAT
            headers = {"authorization": f"Bearer {key}"}
            async with session.post(url, json=payload, headers=headers) as response:
                return response.status, dict(response.headers), await response.json()

        return await asyncio.gather(*(one(i) for i in range(count)))


async def test_rpm_is_global_across_three_replicas(replicas: Replicas) -> None:
    gateways = replicas(3)
    key = gateways[0].create_key("--credits", "100", "--rpm", "10")
    wait_known(gateways, key["key"])
    results, elapsed = await timed(spread(gateways, key["key"], 30, body()))
    statuses = [status for status, _, _ in results]
    assert 10 <= statuses.count(200) <= burst_allowance(10, elapsed), statuses
    assert statuses.count(429) == 30 - statuses.count(200)
    for status, headers, answer in results:
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
            assert answer["error"]["type"] == "rate_limit_error"


async def test_balance_never_below_zero_across_replicas(
    replicas: Replicas, upstream: FakeOpenAI, shared_pg: str
) -> None:
    upstream.default = Behavior(prompt_tokens=13, completion_tokens=20)
    gateways = replicas(3)
    size = len(json.dumps(body()).encode())
    worst = PRICE.worst_case(size, 20)
    credits = micros_to_usd(50 * worst)
    key = gateways[0].create_key("--credits", str(credits))
    wait_known(gateways, key["key"])
    results = await spread(gateways, key["key"], 200, body())
    ok = [answer for status, _, answer in results if status == 200]
    others = [(status, answer) for status, _, answer in results if status not in (200, 402)]
    assert not others, others[:3]
    assert ok
    expected_used = sum(
        PRICE.cost(TokenUsage(prompt_tokens=a["usage"]["prompt_tokens"],
                              completion_tokens=a["usage"]["completion_tokens"]))
        for a in ok
    )
    store = SqlStore(shared_pg)
    try:
        def ledger_complete() -> bool:
            rows = asyncio.run_coroutine_threadsafe(store.ledger_rows(key["id"]), loop).result()
            return len(rows) == len(ok)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(gateways[0].wait_until, ledger_complete)
        rows = await store.ledger_rows(key["id"])
        record = await store.get_key(key["id"])
    finally:
        await store.close()
    assert sum(row.cost_micros for row in rows) == expected_used
    assert record is not None
    assert record.used_micros == expected_used
    assert record.granted_micros - record.used_micros >= 0
    for gateway in gateways:
        credits_view = gateway.credits(key["key"])
        assert Decimal(str(credits_view["used_credits"])) == micros_to_usd(expected_used)
        assert credits_view["remaining_credits"] >= 0


async def test_revocation_and_credits_reach_every_replica(replicas: Replicas) -> None:
    gateways = replicas(3, key_refresh_seconds=30)  # only the Redis notification can do it
    key = gateways[0].create_key("--credits", "0.000001")
    wait_known(gateways, key["key"])
    gateways[0].cli("credits", "add", key["id"], "5")
    for gateway in gateways:
        gateway.wait_until(
            lambda g=gateway: g.credits(key["key"])["remaining_credits"] > 4,
            message="credits visible on every replica",
        )
    gateways[1].cli("keys", "revoke", key["id"])
    for gateway in gateways:
        gateway.wait_until(lambda g=gateway: g.get("/v1/credits", key["key"])[0] == 401,
                           message="revocation on every replica")


async def test_two_workers_share_limits(replicas: Replicas) -> None:
    (gateway,) = replicas(1, args=("--workers", "2"))
    # the key exists before the workers start, so both have it loaded: one that had not yet
    # picked it up would answer 401, which says nothing about shared limits
    gateway.stop()
    key = json.loads(gateway.cli("keys", "create", "--json", "--credits", "100",
                                 "--rpm", "10").stdout)
    gateway.start()
    results, elapsed = await timed(spread([gateway], key["key"], 30, body()))
    statuses = [status for status, _, _ in results]
    assert 10 <= statuses.count(200) <= burst_allowance(10, elapsed), statuses
    assert statuses.count(429) == 30 - statuses.count(200)
