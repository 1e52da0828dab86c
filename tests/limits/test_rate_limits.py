"""Per-key RPM, TPM and concurrency limits against a running gateway."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp

from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess
from tests.support.rates import burst_allowance, timed


def body(stream: bool = False, max_tokens: int = 20) -> dict[str, Any]:
    return {
        "model": "gpt-5.2",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def assert_rate_limited(status: int, headers: Any, answer: Any) -> None:
    assert status == 429, answer
    retry_after = headers.get("Retry-After") or headers.get("retry-after")
    assert retry_after is not None, headers
    assert retry_after.isdigit(), retry_after
    assert int(retry_after) >= 1, retry_after
    assert answer["error"]["type"] == "rate_limit_error"
    assert answer["error"]["code"] == 429


async def post_many(gateway: GatewayProcess, key: str, n: int) -> list[tuple[int, Any, Any]]:
    """``n`` requests at once: (status, headers, JSON body) for each."""
    headers = {"authorization": f"Bearer {key}"}

    async def one(session: aiohttp.ClientSession) -> tuple[int, Any, Any]:
        async with session.post(
            gateway.url + "/v1/chat/completions", json=body(), headers=headers
        ) as resp:
            return resp.status, resp.headers.copy(), await resp.json()

    connector = aiohttp.TCPConnector(limit=n)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return await asyncio.gather(*(one(session) for _ in range(n)))


async def test_rpm_allows_exactly_the_burst(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    key = gateway.create_key("--credits", "10", "--rpm", "10")
    results, elapsed = await timed(post_many(gateway, key["key"], 30))
    ok = [r for r in results if r[0] == 200]
    limited = [r for r in results if r[0] != 200]
    assert 10 <= len(ok) <= burst_allowance(10, elapsed), sorted(r[0] for r in results)
    assert len(limited) == 30 - len(ok)
    for status, headers, answer in limited:
        assert_rate_limited(status, headers, answer)
        assert "10 requests per minute" in answer["error"]["message"]
    # 429 is decided before any upstream call
    assert len(upstream.received) == len(ok)


async def test_concurrency_limit_refuses_a_third_open_request(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    key = gateway.create_key("--credits", "10", "--concurrency", "2")
    # the first two requests stay open until their upstream starts answering
    # (long enough for the third request to arrive meanwhile, even on a slow machine)
    upstream.script = [Behavior(first_delay=6.0, text="slow"), Behavior(first_delay=6.0)]
    headers = {"authorization": f"Bearer {key['key']}"}
    url = gateway.url + "/v1/chat/completions"
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # response headers of a stream arrive once it is admitted and its upstream accepted it
        first = await session.post(url, json=body(stream=True), headers=headers)
        second = await session.post(url, json=body(stream=True), headers=headers)
        try:
            assert (first.status, second.status) == (200, 200)
            async with session.post(url, json=body(), headers=headers) as third:
                refused = await third.json()
                assert_rate_limited(third.status, third.headers, refused)
                assert "2 concurrent requests" in refused["error"]["message"]
            assert len(upstream.received) == 2
            # both streams run to their end...
            for resp in (first, second):
                raw = await resp.read()
                assert raw.rstrip().endswith(b"data: [DONE]"), raw
        finally:
            first.close()
            second.close()
        # ...and free their slots: two more requests pass at once
        async with (
            session.post(url, json=body(), headers=headers) as again,
            session.post(url, json=body(stream=True), headers=headers) as stream_again,
        ):
            assert again.status == 200, await again.text()
            assert stream_again.status == 200
            await stream_again.read()


def test_tpm_counts_the_tokens_actually_used(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    # the prompt estimate of "hi" is about 7 tokens, which fits 20 tokens a minute twice; the
    # upstream reports 13 + 20 = 33 used, which spends the minute's allowance
    upstream.default = Behavior(prompt_tokens=13, completion_tokens=20)
    key = gateway.create_key("--credits", "10", "--tpm", "20")
    status, _, answer = gateway.post("/v1/chat/completions", body(), key["key"])
    assert status == 200, answer
    status, headers, answer = gateway.post("/v1/chat/completions", body(), key["key"])
    assert_rate_limited(status, headers, answer)
    assert "20 tokens per minute" in answer["error"]["message"]
    assert len(upstream.received) == 1


def remaining(gateway: GatewayProcess, key: str) -> Decimal:
    status, _, raw = gateway.get("/v1/credits", key)
    assert status == 200, raw
    value: Decimal = json.loads(raw, parse_float=Decimal, parse_int=Decimal)["remaining_credits"]
    return value


def test_a_402_does_not_use_the_rpm_allowance(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    # 100 micro-USD cannot cover the worst case of one request (about 450)
    key = gateway.create_key("--credits", "0.0001", "--rpm", "2")
    for _ in range(5):
        status, headers, answer = gateway.post("/v1/chat/completions", body(), key["key"])
        assert status == 402, answer
        assert answer["error"]["type"] == "insufficient_quota_error"
        assert "retry-after" not in {h.lower() for h in headers}
    assert upstream.received == []

    gateway.cli("credits", "add", key["id"], "5")
    gateway.wait_until(
        lambda: remaining(gateway, key["key"]) == Decimal("5.0001"),
        message="the added credits",
    )
    for _ in range(2):
        status, _, answer = gateway.post("/v1/chat/completions", body(), key["key"])
        assert status == 200, answer
    status, headers, answer = gateway.post("/v1/chat/completions", body(), key["key"])
    assert_rate_limited(status, headers, answer)
    assert len(upstream.received) == 2
