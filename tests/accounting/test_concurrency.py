"""THE invariant: concurrent requests never take a key's balance below zero, and every charge is
exactly the usage the upstream reported, once."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relaygate.accounting.admission import Admissions, Ticket
from relaygate.accounting.credits import MemoryCreditBook
from relaygate.accounting.gate import MemoryGate
from relaygate.accounting.ledger import LedgerWriter
from relaygate.accounting.prices import Price
from relaygate.errors import InsufficientQuota
from relaygate.protocol.validate import decode_chat_request
from relaygate.providers.base import TokenUsage
from relaygate.routing.catalog import CatalogModel
from relaygate.settings import ModelSettings, Pricing
from relaygate.store.records import KeyRecord
from relaygate.store.sql import SqlStore
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, credits_of, ledger

MICRO = Decimal("0.000001")
PRICES = {"input": Decimal("1.75"), "cached_input": Decimal("0.175"), "output": Decimal("14.0")}
MAX_TOKENS = 20


def worst_case_micros(body_size: int, max_tokens: int) -> int:
    """The reservation of a text-only request: every body byte a prompt token, plus max_tokens
    of output, in micro-USD rounded up (computed here from the USD prices, not by relaygate)."""
    usd = (body_size * PRICES["input"] + max_tokens * PRICES["output"]) / 1_000_000
    return int(usd.quantize(MICRO, rounding=ROUND_CEILING) / MICRO)


def cost_micros(usage: dict[str, Any]) -> int:
    """What a response's usage costs, in micro-USD rounded up."""
    prompt = usage["prompt_tokens"]
    cached = min((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0, prompt)
    usd = (
        (prompt - cached) * PRICES["input"]
        + cached * PRICES["cached_input"]
        + usage["completion_tokens"] * PRICES["output"]
    ) / 1_000_000
    return int(usd.quantize(MICRO, rounding=ROUND_CEILING) / MICRO)




# --- against a running gateway -----------------------------------------------------------------


async def test_200_concurrent_requests_never_overdraw_the_key(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(prompt_tokens=13, completion_tokens=MAX_TOKENS)
    body = json.dumps(
        {
            "model": "gpt-5.2",
            "messages": [{"role": "user", "content": "How much is this?"}],
            "max_tokens": MAX_TOKENS,
        }
    ).encode()
    worst = worst_case_micros(len(body), MAX_TOKENS)
    granted = 50 * worst
    key = gateway.create_key("--credits", str(Decimal(granted).scaleb(-6)))
    assert credits_of(gateway, key["key"])["remaining_credits"] == Decimal(granted).scaleb(-6)
    headers = {"authorization": f"Bearer {key['key']}", "content-type": "application/json"}

    async def one(session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
        async with session.post(
            gateway.url + "/v1/chat/completions", data=body, headers=headers
        ) as resp:
            answer: dict[str, Any] = await resp.json()
            return resp.status, answer

    connector = aiohttp.TCPConnector(limit=200)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(*(one(session) for _ in range(200)))

    statuses = [status for status, _ in results]
    successes = [answer for status, answer in results if status == 200]
    refused = [answer for status, answer in results if status == 402]
    assert len(successes) + len(refused) == 200, sorted(set(statuses))
    assert len(successes) >= 1
    # at least the first 50 reservations fit; the ones refused were refused for money
    assert len(successes) >= 50
    assert all(a["error"]["type"] == "insufficient_quota_error" for a in refused)

    charged = sum(cost_micros(answer["usage"]) for answer in successes)
    assert all(answer["usage"]["completion_tokens"] == MAX_TOKENS for answer in successes)
    credits = credits_of(gateway, key["key"])
    assert credits["remaining_credits"] >= 0
    assert credits["used_credits"] == Decimal(charged).scaleb(-6)
    assert credits["remaining_credits"] == Decimal(granted - charged).scaleb(-6)
    assert charged <= granted

    gateway.wait_until(
        lambda: len(ledger(gateway, key["id"])) >= len(successes),
        message="the ledger flush",
    )
    rows = ledger(gateway, key["id"])
    assert len(rows) == len(successes)
    assert {row["request_id"] for row in rows} == {answer["id"] for answer in successes}
    assert all(row["status"] == "ok" for row in rows)
    assert sum(row["cost_micros"] for row in rows) == charged
    # 402s were decided before any upstream call
    assert len(upstream.received) == len(successes)


# --- unit level: MemoryCreditBook + Admissions --------------------------------------------------


@pytest.fixture
async def ledger_writer(tmp_path: Path) -> AsyncIterator[LedgerWriter]:
    store = SqlStore(f"sqlite:///{tmp_path / 'unit.db'}")
    yield LedgerWriter(store, flush_seconds=60, batch_size=10_000)  # never started: rows stay
    await store.close()


def _model() -> CatalogModel:
    settings = ModelSettings(
        pricing=Pricing(
            input=PRICES["input"], cached_input=PRICES["cached_input"], output=PRICES["output"]
        ),
        max_output_tokens=128_000,
    )
    return CatalogModel("gpt-5.2", settings, Price.from_settings(settings.pricing), [])


def _key(granted: int) -> KeyRecord:
    return KeyRecord(
        id="key_unit", name="", key_hash="h", prefix="rg-", created_at=0, granted_micros=granted
    )


BODY = json.dumps(
    {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
).encode()


def _check(book: MemoryCreditBook, granted: int) -> None:
    account = book.balance("key_unit")
    assert account is not None
    assert account.reserved >= 0
    assert 0 <= account.used <= granted
    assert account.used + account.reserved <= granted
    assert account.available >= 0


async def test_admission_reserves_the_worst_case_until_the_money_runs_out(
    ledger_writer: LedgerWriter,
) -> None:
    gate = MemoryGate()
    book = gate.credits
    admissions = Admissions(gate, ledger_writer)
    request, _ = decode_chat_request(BODY)
    worst = worst_case_micros(len(BODY), 20)
    granted = 10 * worst + worst - 1  # ten and almost eleven
    key = _key(granted)
    book.load(key.id, granted, 0, False)
    model = _model()

    tickets: list[Ticket] = []
    refusals: list[str] = []
    for i in range(30):
        try:
            tickets.append(await admissions.admit(key, model, request, len(BODY), f"req-{i}"))
        except InsufficientQuota as exc:
            refusals.append(exc.message)
        _check(book, granted)
    assert len(tickets) == 10
    assert len(refusals) == 20
    assert all("can afford at most 19 output tokens" in message for message in refusals)
    account = book.balance(key.id)
    assert account is not None
    assert account.reserved == 10 * worst
    assert account.available == worst - 1

    # an upstream that reports far more than it was allowed: the balance still holds
    for ticket in tickets:
        charged = await admissions.settle(
            ticket, TokenUsage(prompt_tokens=10_000, completion_tokens=10_000), "ok", "u", "m"
        )
        assert charged <= worst + (worst - 1)
        _check(book, granted)
    assert account.reserved == 0
    assert account.used == granted
    assert book.shortfall_micros > 0
    assert admissions.uncharged_micros == book.shortfall_micros
    assert sum(row.cost_micros for row in ledger_writer.pending) == granted
    # settling again charges nothing and writes no second row
    assert await admissions.settle(tickets[0], TokenUsage(completion_tokens=5), "ok", "u", "m") == 0
    assert len(ledger_writer.pending) == 10


async def test_random_interleaving_never_goes_below_zero(ledger_writer: LedgerWriter) -> None:
    gate = MemoryGate()
    book = gate.credits
    admissions = Admissions(gate, ledger_writer)
    request, _ = decode_chat_request(BODY)
    worst = worst_case_micros(len(BODY), 20)
    granted = 25 * worst
    key = _key(granted)
    book.load(key.id, granted, 0, False)
    model = _model()
    rng = random.Random(20240601)

    open_tickets: list[Ticket] = []
    admitted = refused = 0
    for i in range(3000):
        if open_tickets and rng.random() < 0.45:
            ticket = open_tickets.pop(rng.randrange(len(open_tickets)))
            usage = TokenUsage(
                prompt_tokens=rng.randrange(0, 200),
                cached_tokens=rng.randrange(0, 50),
                completion_tokens=rng.randrange(0, 30),
            )
            await admissions.settle(
                ticket, usage, rng.choice(["ok", "client_disconnected"]), "u", "m"
            )
        else:
            try:
                open_tickets.append(
                    await admissions.admit(key, model, request, len(BODY), f"r{i}")
                )
                admitted += 1
            except InsufficientQuota:
                refused += 1
        _check(book, granted)
    for ticket in open_tickets:
        await admissions.settle(ticket, None, "cancelled", "u", "m")
        _check(book, granted)
    account = book.balance(key.id)
    assert account is not None
    assert admitted > 25
    assert refused > 0
    assert account.reserved == 0
    assert account.used == sum(row.cost_micros for row in ledger_writer.pending)
    assert len(ledger_writer.pending) == admitted
    assert len({row.request_id for row in ledger_writer.pending}) == admitted
