"""Accounts on three replicas sharing PostgreSQL and Redis: one balance and every key's cap hold
across them, and a suspension or a revocation reaches every replica."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
import yaml

from relaygate.accounting.prices import Price
from relaygate.providers.base import TokenUsage
from relaygate.settings import Pricing
from relaygate.store.sql import SqlStore
from tests.accounting.test_accounts import body, fire, size
from tests.scale.conftest import Replicas
from tests.support.accounts import Issued, in_store, open_account
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.timeout(300)

CHAT = "/v1/chat/completions"
PRICE = Price.from_settings(
    Pricing(input=Decimal("1.75"), cached_input=Decimal("0.175"), output=Decimal("14"))
)


def announce(gateway: GatewayProcess, changed_id: str) -> None:
    """What the CLI and the admin API do after a change: tell every replica through Redis."""
    config: dict[str, Any] = yaml.safe_load(gateway.config_path.read_text())
    client = redis.Redis.from_url(config["redis_url"])
    try:
        client.publish(f"{config['redis_key_prefix']}:keys", changed_id)
    finally:
        client.close()


def known(gateways: list[GatewayProcess], keys: list[Issued]) -> None:
    for gateway in gateways:
        for issued in keys:
            gateway.wait_until(
                lambda g=gateway, k=issued.key: g.get("/v1/credits", k)[0] == 200,
                message="the key known to every replica",
            )


async def test_five_keys_of_one_account_on_three_replicas(
    replicas: Replicas, upstream: FakeOpenAI, shared_pg: str
) -> None:
    upstream.default = Behavior(prompt_tokens=13, completion_tokens=20)
    payload = body()
    worst = PRICE.worst_case(size(payload), 20)
    cost = PRICE.cost(TokenUsage(prompt_tokens=13, completion_tokens=20))
    cap = 14 * worst
    account, keys = await open_account(
        shared_pg, 50 * worst, 5, key={"spend_limit_micros": cap, "spend_limit_period": "month"}
    )
    gateways = replicas(3)
    known(gateways, keys)
    results = await fire([g.url for g in gateways], keys, 200, payload)
    ok = [answer for status, answer in results if status == 200]
    assert len(ok) + sum(1 for status, _ in results if status == 402) == 200, results
    assert len(ok) >= 50
    assert len(upstream.received) == len(ok)

    async def books(store: SqlStore) -> tuple[int, int, dict[str, tuple[int, int]]]:
        found = await store.get_account(account.id)
        assert found is not None
        rows = [r for r in await store.ledger_rows() if r.account_id == account.id]
        by_key = {}
        for issued in keys:
            record = await store.get_key(issued.id)
            assert record is not None
            mine = sum(r.cost_micros for r in rows if r.key_id == issued.id)
            by_key[issued.id] = (record.period_used_micros, mine)
        return found.used_micros, len(rows), by_key

    deadline = time.monotonic() + 60
    while (await in_store(shared_pg, books))[1] != len(ok):  # polls the store, as wait_until
        assert time.monotonic() < deadline, "the ledger rows were not all written"
        await asyncio.sleep(0.05)
    used, _, by_key = await in_store(shared_pg, books)
    assert used == len(ok) * cost <= 50 * worst
    for period_used, mine in by_key.values():
        assert period_used == mine <= cap
    for gateway in gateways:  # every replica reports the same balance
        answer = gateway.credits(keys[0].key)
        assert Decimal(str(answer["used_credits"])) == Decimal(used).scaleb(-6)
        assert Decimal(str(answer["remaining_credits"])) >= 0


async def test_a_suspension_and_a_revocation_reach_every_replica(
    replicas: Replicas, shared_pg: str
) -> None:
    account, keys = await open_account(shared_pg, 10**9, 2)
    _, (other,) = await open_account(shared_pg, 10**9, 1)
    gateways = replicas(3)
    known(gateways, [*keys, other])
    await in_store(shared_pg, lambda s: s.update_account(account.id, status="suspended"))
    announce(gateways[0], account.id)
    for gateway in gateways:
        for issued in keys:
            gateway.wait_until(
                lambda g=gateway, k=issued.key: g.post(CHAT, body(), k)[0] == 403,
                message=f"the suspension applied on {gateway.url}",
            )
        _, _, answer = gateway.post(CHAT, body(), keys[0].key)
        assert answer["error"]["type"] == "permission_error", answer
        assert gateway.post(CHAT, body(), other.key)[0] == 200  # another account: untouched
    gateways[1].cli("keys", "revoke", other.id)  # the CLI publishes the change itself
    for gateway in gateways:
        gateway.wait_until(
            lambda g=gateway: g.post(CHAT, body(), other.key)[0] == 401,
            message=f"the revocation applied on {gateway.url}",
        )
    await in_store(shared_pg, lambda s: s.update_account(account.id, status="active"))
    announce(gateways[2], account.id)
    for gateway in gateways:
        gateway.wait_until(
            lambda g=gateway: g.post(CHAT, body(), keys[1].key)[0] == 200,
            message="the account active again",
        )
