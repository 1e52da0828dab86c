"""Accounts own the money on one gateway process (the in-process gate): keys of one account
share its balance, each within its own spend cap; suspension; the 402's billing page; the
output limit clamped to what the key can spend; the ledger's cost parts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from decimal import Decimal
from typing import Any

import aiohttp

from relaygate.accounting.admission import NO_BILLING_PAGE
from relaygate.accounting.prices import Price, micros_to_usd
from relaygate.providers.base import TokenUsage
from relaygate.settings import Pricing
from relaygate.store.periods import period_start
from relaygate.store.sql import SqlStore
from tests.conftest import catalog
from tests.support.accounts import Issued, in_store, open_account
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, credits_of

CHAT = "/v1/chat/completions"
PRICE = Price.from_settings(
    Pricing(input=Decimal("1.75"), cached_input=Decimal("0.175"), output=Decimal("14"))
)
DEARER = Price.from_settings(Pricing(input=Decimal("5"), output=Decimal("30")))
COST = PRICE.cost(TokenUsage(prompt_tokens=13, completion_tokens=20))
"""What the fake upstream's default answer costs."""


def body(max_tokens: int | None = 20, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    return {**payload, **extra}


def size(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload).encode())  # what aiohttp and http() send


def database(gateway: GatewayProcess) -> str:
    return f"sqlite:///{gateway.directory / 'relaygate.db'}"


def rows(gateway: GatewayProcess, where: str, *args: object) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(gateway.directory / "relaygate.db", timeout=10)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM ledger WHERE {where}", args)]


def known(gateway: GatewayProcess, keys: list[Issued]) -> None:
    for issued in keys:
        gateway.wait_until(
            lambda k=issued.key: gateway.get("/v1/credits", k)[0] == 200,
            message="the key known to the gateway",
        )


async def fire(
    urls: list[str], keys: list[Issued], count: int, payload: dict[str, Any]
) -> list[tuple[int, Any]]:
    """``count`` requests at once, round-robin over ``keys`` (and ``urls``)."""
    connector = aiohttp.TCPConnector(limit=count)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> tuple[int, Any]:
            headers = {"authorization": f"Bearer {keys[i % len(keys)].key}"}
            url = urls[i % len(urls)] + CHAT
            async with session.post(url, json=payload, headers=headers) as response:
                return response.status, await response.json()

        return await asyncio.gather(*(one(i) for i in range(count)))


async def spent_by_key(url: str, keys: list[Issued]) -> dict[str, tuple[int, int]]:
    """Each key's (lifetime use, period use) in the store."""

    async def read(store: SqlStore) -> dict[str, tuple[int, int]]:
        found = {}
        for issued in keys:
            record = await store.get_key(issued.id)
            assert record is not None
            found[issued.id] = (record.used_micros, record.period_used_micros)
        return found

    result: dict[str, tuple[int, int]] = await in_store(url, read)
    return result


async def account_used(url: str, account_id: str) -> int:
    async def read(store: SqlStore) -> int:
        account = await store.get_account(account_id)
        assert account is not None
        return account.used_micros

    result: int = await in_store(url, read)
    return result


async def test_five_keys_of_one_account_never_overdraw_it_nor_their_caps(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(prompt_tokens=13, completion_tokens=20)
    payload = body()
    worst = PRICE.worst_case(size(payload), 20)
    cap = 14 * worst  # five caps hold 70 requests' worst case; the balance 50
    url = database(gateway)
    account, keys = await open_account(
        url, 50 * worst, 5, key={"spend_limit_micros": cap, "spend_limit_period": "day"}
    )
    known(gateway, keys)
    results = await fire([gateway.url], keys, 200, payload)

    ok = [answer for status, answer in results if status == 200]
    refused = [answer for status, answer in results if status == 402]
    assert len(ok) + len(refused) == 200, sorted({status for status, _ in results})
    assert len(ok) >= 50
    assert all(a["error"]["type"] == "insufficient_quota_error" for a in refused)
    assert len(upstream.received) == len(ok)  # every 402 decided before any upstream call
    gateway.wait_until(
        lambda: len(rows(gateway, "account_id = ?", account.id)) == len(ok),
        message="the ledger flush",
    )
    ledger = rows(gateway, "account_id = ?", account.id)
    charged = sum(row["cost_micros"] for row in ledger)
    assert charged == len(ok) * COST
    assert await account_used(url, account.id) == charged <= 50 * worst
    for key_id, (used, period_used) in (await spent_by_key(url, keys)).items():
        mine = sum(row["cost_micros"] for row in ledger if row["key_id"] == key_id)
        assert used == period_used == mine <= cap
    credits = credits_of(gateway, keys[0].key)
    assert credits["used_credits"] == micros_to_usd(charged)
    assert credits["remaining_credits"] >= 0


async def test_a_capped_key_stops_at_its_cap_while_its_account_still_pays_for_others(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    payload = body()
    worst = PRICE.worst_case(size(payload), 20)
    cost = COST
    url = database(gateway)
    _, (capped, free) = await open_account(url, 1000 * worst, 2)
    known(gateway, [capped, free])
    await in_store(
        url,
        lambda s: s.update_key(capped.id, spend_limit_micros=3 * worst, spend_limit_period="total"),
    )
    gateway.wait_until(
        lambda: credits_of(gateway, capped.key)["remaining_credits"] == micros_to_usd(3 * worst),
        message="the cap known",
    )
    served = 0
    while True:
        status, _, answer = gateway.post(CHAT, payload, capped.key)
        if status != 200:
            break
        served += 1
        assert served < 10
    assert status == 402, answer
    assert answer["error"]["type"] == "insufficient_quota_error"
    assert "spend cap" in answer["error"]["message"]
    assert served * cost <= 3 * worst < served * cost + worst  # refused for the cap alone
    assert len(upstream.received) == served
    # the account still has money: its other key is served
    assert gateway.post(CHAT, payload, free.key)[0] == 200
    left = credits_of(gateway, capped.key)["remaining_credits"]
    assert left == micros_to_usd(3 * worst - served * cost)
    assert credits_of(gateway, free.key)["remaining_credits"] > left


async def test_a_days_cap_starts_afresh_on_the_next_day(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    today = period_start("day", time.time())
    url = database(gateway)
    spent_up = {"spend_limit_micros": 5000, "spend_limit_period": "day", "period_used_micros": 5000}
    _, (yesterday,) = await open_account(
        url, 10**8, 1, key={**spent_up, "period_start": today - 86_400}
    )
    _, (this_day,) = await open_account(url, 10**8, 1, key={**spent_up, "period_start": today})
    known(gateway, [yesterday, this_day])
    assert gateway.post(CHAT, body(), this_day.key)[0] == 402
    status, _, answer = gateway.post(CHAT, body(), yesterday.key)
    assert status == 200, answer  # yesterday's spending does not count today
    gateway.wait_until(lambda: len(rows(gateway, "key_id = ?", yesterday.id)) == 1)

    async def key_period(store: SqlStore) -> tuple[int, int]:
        record = await store.get_key(yesterday.id)
        assert record is not None
        return record.period_used_micros, record.period_start

    assert await in_store(url, key_period) == (COST, today)


async def test_a_suspended_accounts_keys_answer_403_until_it_is_active_again(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    url = database(gateway)
    account, keys = await open_account(url, 10**8, 2)
    known(gateway, keys)
    await in_store(url, lambda s: s.update_account(account.id, status="suspended"))
    for issued in keys:
        gateway.wait_until(
            lambda k=issued.key: gateway.post(CHAT, body(), k)[0] == 403,
            message="the suspension applied",
        )
    served = len(upstream.received)  # those served before the change applied
    status, _, answer = gateway.post(CHAT, body(), keys[1].key)
    assert status == 403
    assert answer["error"]["type"] == "permission_error"
    assert "suspended" in answer["error"]["message"]
    assert len(upstream.received) == served  # decided before any upstream call
    await in_store(url, lambda s: s.update_account(account.id, status="active"))
    gateway.wait_until(
        lambda: gateway.post(CHAT, body(), keys[0].key)[0] == 200,
        message="the reactivation applied",
    )


def test_the_402_sends_the_caller_to_the_billing_url(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    default = make_gateway()  # the console is on: its billing page
    key = default.create_key("--credits", "0")["key"]
    answer = default.post(CHAT, body(), key)[2]
    assert answer["error"]["fallback_suggestion"] == default.url + "/console/billing"
    without_console = make_gateway(console=False)
    key = without_console.create_key("--credits", "0")["key"]
    answer = without_console.post(CHAT, body(), key)[2]
    assert answer["error"]["fallback_suggestion"] == NO_BILLING_PAGE
    page = "https://billing.example.com/top-up"
    configured = make_gateway(billing_url=page)
    key = configured.create_key("--credits", "0")["key"]
    status, _, answer = configured.post(CHAT, body(), key)
    assert status == 402
    assert answer["error"]["fallback_suggestion"] == page


def _affordable(price: Price, micros: int, payload: dict[str, Any]) -> int:
    return price.affordable_output_tokens(micros, size(payload))


async def test_no_output_limit_and_a_small_balance_sends_the_limit_it_affords(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    # $1 cannot cover gpt-5.2's 128000 output tokens ($1.792), but can ~71000 of them
    key = gateway.create_key("--credits", "1")["key"]
    for stream in (False, True):
        payload = body(None, stream=stream)
        before = credits_of(gateway, key)["remaining_credits"]
        status, _, answer = gateway.post(CHAT, payload, key)
        assert status == 200, answer
        sent = upstream.received[-1].body
        affordable = _affordable(PRICE, int(before * 1_000_000), payload)
        assert 0 < affordable < 128_000
        assert sent["max_completion_tokens"] == affordable
        assert "max_tokens" not in sent
    # a limit the caller set is never raised nor clamped: it gets 402 as before
    status, _, answer = gateway.post(CHAT, body(100_000), key)
    assert status == 402, answer


def test_a_balance_below_the_clamp_minimum_still_gets_402(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    # $0.003 affords ~200 output tokens of gpt-5.2: fewer than clamp_min_output_tokens (256)
    key = gateway.create_key("--credits", "0.003")["key"]
    status, _, answer = gateway.post(CHAT, body(None), key)
    assert status == 402, answer
    assert upstream.received == []


def test_the_clamp_covers_the_dearest_fallback(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    models = catalog(upstream.base_url)["models"]
    models["gpt-5.2"]["fallbacks"] = ["gpt-5.5"]
    gateway = make_gateway(models=models)
    key = gateway.create_key("--credits", "1")["key"]
    payload = body(None)
    status, _, answer = gateway.post(CHAT, payload, key)
    assert status == 200, answer
    # gpt-5.5's output costs $30/M: the limit is what $1 affords there
    assert upstream.received[-1].body["max_completion_tokens"] == _affordable(
        DEARER, 1_000_000, payload
    )


async def test_ledger_rows_carry_the_account_and_the_cost_parts(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(
        prompt_tokens=1000, cached_tokens=400, completion_tokens=300, reasoning_tokens=120
    )
    created = gateway.create_key("--credits", "5")
    assert gateway.post(CHAT, body(), created["key"])[0] == 200
    gateway.wait_until(lambda: len(rows(gateway, "key_id = ?", created["id"])) == 1)
    (row,) = rows(gateway, "key_id = ?", created["id"])
    assert row["account_id"] == created["account_id"]
    parts = (
        row["input_cost_micros"],
        row["cached_cost_micros"],
        row["output_cost_micros"],
        row["reasoning_cost_micros"],
    )
    # 600 uncached at $1.75/M, 400 cached at $0.175/M, 180 output and 120 reasoning at $14/M
    assert parts == (1050, 70, 2520, 1680)
    assert sum(parts) == row["cost_micros"]


async def test_an_accounts_rate_limit_holds_over_all_its_keys(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    url = database(gateway)
    account, keys = await open_account(url, 10**9, 3, account={"rpm": 3})
    known(gateway, keys)  # (three /v1/credits calls: not counted, only admissions are)
    statuses = [gateway.post(CHAT, body(), keys[n % 3].key)[0] for n in range(6)]
    assert statuses.count(200) == 3, statuses
    status, headers, answer = gateway.post(CHAT, body(), keys[2].key)
    assert status == 429
    assert "this key's account allows 3 requests per minute" in answer["error"]["message"]
    assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1
    assert len(upstream.received) == 3
    assert account.rpm == 3
