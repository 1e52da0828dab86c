"""The admin API's rate limit: per principal and per client address, a minute at a time, in
this process or (with Redis) across replicas; over HTTP, a 429 in the admin API's error shape
with Retry-After."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as redis

from relaygate.admin.ratelimit import WINDOW_SECONDS, AdminRateLimit
from relaygate.errors import RateLimited
from tests.admin.test_sign_in_http import call, cli, start
from tests.support.gateway import GatewayProcess
from tests.support.services import REDIS_URL, need

MINUTE = 1_800_000_000 // WINDOW_SECONDS * WINDOW_SECONDS  # a minute's first second


async def test_each_principal_and_address_counts_on_its_own() -> None:
    limit = AdminRateLimit(3)
    for _ in range(3):
        await limit.principal("admin_token:atk_a", now=MINUTE + 10)
        await limit.address("10.0.0.1", now=MINUTE + 10)
    with pytest.raises(RateLimited) as refused:
        await limit.principal("admin_token:atk_a", now=MINUTE + 15)
    assert refused.value.retry_after == WINDOW_SECONDS - 15  # the rest of the minute
    assert "3 a minute per credential" in str(refused.value)
    with pytest.raises(RateLimited, match="per client address"):
        await limit.address("10.0.0.1", now=MINUTE + 15)
    await limit.principal("user:usr_b", now=MINUTE + 15)  # another principal
    await limit.address("10.0.0.2", now=MINUTE + 15)  # another address
    # an IPv6 address counts by its /64
    for host in range(3):
        await limit.address(f"2001:db8::{host + 1}", now=MINUTE + 20)
    with pytest.raises(RateLimited):
        await limit.address("2001:db8::ff", now=MINUTE + 20)
    # the next minute starts afresh
    await limit.principal("admin_token:atk_a", now=MINUTE + WINDOW_SECONDS)
    await limit.address("10.0.0.1", now=MINUTE + WINDOW_SECONDS)


async def test_zero_turns_it_off() -> None:
    limit = AdminRateLimit(0)
    for _ in range(1000):
        await limit.principal("admin_token:atk_a", now=MINUTE)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[redis.Redis]:
    need("Redis", 6379)
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        yield connection
    finally:
        await connection.aclose()


async def test_replicas_share_the_count_through_redis(client: redis.Redis) -> None:
    prefix = f"rgtest-{uuid.uuid4().hex[:8]}"
    replicas = [AdminRateLimit(4, client, prefix) for _ in range(2)]
    for i in range(4):
        await replicas[i % 2].principal("admin_token:atk_a", now=MINUTE + 1)
    for replica in replicas:  # 4 across both: each replica refuses the 5th
        with pytest.raises(RateLimited):
            await replica.principal("admin_token:atk_a", now=MINUTE + 2)
    keys = [key async for key in client.scan_iter(f"{prefix}:adminrl:*")]
    assert keys
    assert 0 < await client.ttl(keys[0]) <= 2 * WINDOW_SECONDS  # counts expire
    await client.delete(*keys)


async def test_redis_down_counts_in_this_process() -> None:
    gone = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    try:
        limit = AdminRateLimit(2, gone)
        await limit.principal("admin_token:atk_a", now=MINUTE)
        await limit.principal("admin_token:atk_a", now=MINUTE)
        with pytest.raises(RateLimited):
            await limit.principal("admin_token:atk_a", now=MINUTE)
    finally:
        await gone.aclose()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway = start(tmp_path_factory.mktemp("ratelimit-gw"), admin_rate_limit_per_minute=8,
                    max_keys_per_account=2)
    try:
        yield gateway
    finally:
        gateway.stop()


def test_keys_past_max_keys_per_account_are_409(limited: GatewayProcess) -> None:
    token = cli(limited, "admin-token", "create", "--name", "keys")["token"]
    auth = {"Authorization": f"Bearer {token}"}
    account = call(limited, "POST", "/accounts", {"name": "Acme"}, **auth)[2]["id"]
    for _ in range(2):
        assert call(limited, "POST", f"/accounts/{account}/keys", {"name": "k"}, **auth)[0] == 201
    status, _, body = call(limited, "POST", f"/accounts/{account}/keys", {"name": "k"}, **auth)
    assert status == 409, body
    assert set(body) == {"error"}
    assert "max_keys_per_account = 2" in body["error"]["message"]
    assert len(call(limited, "GET", f"/accounts/{account}/keys", **auth)[2]["data"]) == 2


def test_past_the_limit_the_admin_api_answers_429_with_retry_after(
    limited: GatewayProcess,
) -> None:
    token = cli(limited, "admin-token", "create", "--name", "flood")["token"]
    statuses = []
    # 17 requests take less than a minute, so they span at most two of the limit's minutes:
    # more than 2 x 8, whatever the clock, so at least one is refused
    for _ in range(17):
        status, headers, body = call(limited, "GET", "/accounts",
                                     Authorization=f"Bearer {token}")
        statuses.append(status)
        if status == 429:
            assert set(body) == {"error"}
            assert body["error"]["type"] == "rate_limit_error"
            assert 1 <= int(headers["retry-after"]) <= WINDOW_SECONDS
    assert 429 in statuses
    assert statuses[0] == 200
