"""Streaming over raw SSE: keep-alives, upstream cuts, client disconnects, the usage chunk.

These read the bytes relaygate writes (aiohttp, no SDK) so that comments, error events and the
absence of ``[DONE]`` are visible exactly as a client receives them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from relaygate.accounting.estimate import prompt_token_guess
from relaygate.accounting.prices import Price
from relaygate.protocol.validate import decode_chat_request
from relaygate.providers.base import TokenUsage
from relaygate.settings import Pricing
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, credits_of, ledger

GPT52 = Price.from_settings(
    Pricing(input=Decimal("1.75"), cached_input=Decimal("0.175"), output=Decimal("14.0"))
)
KEEPALIVE = b": keep-alive"
DONE = b"data: [DONE]"


def stream_body(content: str = "stream please", **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-5.2",
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        **extra,
    }


def guess_of(body: dict[str, Any]) -> int:
    """The prompt estimate relaygate charges when the upstream reports no usage."""
    request, _ = decode_chat_request(json.dumps(body).encode())
    return prompt_token_guess(request)


def events_of(raw: bytes) -> list[bytes]:
    """The SSE events (comments included) of a whole stream, in order."""
    return [event for event in raw.replace(b"\r\n", b"\n").split(b"\n\n") if event.strip()]


def data_of(events: list[bytes]) -> list[bytes]:
    return [e for e in events if e.startswith(b"data:")]




def one_row(gateway: GatewayProcess, key_id: str) -> Callable[[], bool]:
    return lambda: len(ledger(gateway, key_id)) == 1


def usd(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


async def post_stream(gateway: GatewayProcess, key: str, body: dict[str, Any]) -> bytes:
    """POST a streaming request and read the whole response."""
    headers = {"authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(gateway.url + "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.headers["content-type"].startswith("text/event-stream")
        return await resp.read()


async def read_first_chunk_and_hang_up(
    gateway: GatewayProcess, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Read the first data chunk of a stream, then close the connection mid-stream."""
    headers = {"authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        resp = await session.post(
            gateway.url + "/v1/chat/completions", json=body, headers=headers
        )
        try:
            assert resp.status == 200, await resp.text()
            async for line in resp.content:
                if line.startswith(b"data:"):
                    first: dict[str, Any] = json.loads(line[5:])
                    break
            else:
                pytest.fail("the stream ended before its first chunk")
        finally:
            resp.close()  # drops the connection, not a clean end of the response
    return first


@pytest.fixture
def key(gateway: GatewayProcess) -> dict[str, Any]:
    return gateway.create_key("--credits", "10")


async def test_keepalives_precede_the_first_chunk(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeOpenAI
) -> None:
    # the catalog's stream_keepalive_seconds is 0.05; the upstream waits 2 s to start
    upstream.default = Behavior(first_delay=2.0, text="abcdef", chunks=3)
    raw = await post_stream(gateway, key["key"], stream_body())
    events = events_of(raw)
    keepalives = [i for i, e in enumerate(events) if e.strip() == KEEPALIVE]
    data = [i for i, e in enumerate(events) if e.startswith(b"data:")]
    assert keepalives, raw
    assert data, raw
    assert keepalives[0] < data[0]
    # keep-alives are SSE comments only: every other event is data
    assert all(e.strip() == KEEPALIVE or e.startswith(b"data:") for e in events)
    assert events[-1].strip() == DONE
    chunks = [json.loads(events[i][5:]) for i in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "abcdef"


async def test_stream_cut_by_the_upstream_ends_with_an_error_event(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(text="abcdefghij", chunks=5, cut_after=2)
    body = stream_body()
    raw = await post_stream(gateway, key["key"], body)
    data = data_of(events_of(raw))
    assert all(e.strip() != DONE for e in data), raw
    assert data, raw
    last = json.loads(data[-1][5:])
    assert set(last) == {"error"}, last
    assert last["error"]["type"] == "upstream_error"
    assert last["error"]["code"] == 502
    assert "sk-upstream" not in raw.decode()
    # what arrived before the cut was relayed
    relayed = [json.loads(e[5:]) for e in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in relayed if c["choices"])
    assert text == "abcd"

    gateway.wait_until(one_row(gateway, key["id"]), message="the ledger row")
    (row,) = ledger(gateway, key["id"])
    assert row["status"] == "upstream_error"
    # no usage came: charged the prompt estimate plus the two tokens received
    assert row["prompt_tokens"] == guess_of(body)
    assert row["completion_tokens"] == 2
    expected = GPT52.cost(TokenUsage(prompt_tokens=guess_of(body), completion_tokens=2))
    assert expected > 0
    assert row["cost_micros"] == expected
    gateway.wait_until(
        lambda: credits_of(gateway, key["key"])["used_credits"] == usd(expected),
        message="the charge on the key",
    )


async def test_client_disconnect_is_billed_the_upstreams_usage(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    # a drain long enough for the upstream to finish (40 chunks, 0.1 s apart: the hang-up is
    # noticed well before the end, even on a slow machine)
    gateway = make_gateway(disconnect_drain_seconds=30)
    key = gateway.create_key("--credits", "10")
    upstream.default = Behavior(
        text="x" * 40, chunks=40, chunk_delay=0.1, prompt_tokens=11, completion_tokens=57
    )
    first = await read_first_chunk_and_hang_up(gateway, key["key"], stream_body())
    assert first["choices"][0]["delta"]["content"] == "x"

    gateway.wait_until(one_row(gateway, key["id"]), timeout=15, message="the ledger row")
    (row,) = ledger(gateway, key["id"])
    assert row["status"] == "client_disconnected"
    # the upstream's own figures, not the estimate (which would be 40 tokens received)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (11, 57)
    expected = GPT52.cost(TokenUsage(prompt_tokens=11, completion_tokens=57))
    assert row["cost_micros"] == expected
    credits = credits_of(gateway, key["key"])
    assert credits["used_credits"] == usd(row["cost_micros"])
    assert credits["remaining_credits"] == Decimal(10) - usd(row["cost_micros"])


async def test_client_disconnect_with_a_slow_upstream_charges_what_was_received(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway(disconnect_drain_seconds=0.3)
    key = gateway.create_key("--credits", "10")
    upstream.default = Behavior(
        text="y" * 40, chunks=40, chunk_delay=0.5, prompt_tokens=11, completion_tokens=57
    )
    body = stream_body()
    await read_first_chunk_and_hang_up(gateway, key["key"], body)

    gateway.wait_until(one_row(gateway, key["id"]), timeout=15, message="the ledger row")
    (row,) = ledger(gateway, key["id"])
    assert row["status"] == "client_disconnected"
    assert row["prompt_tokens"] == guess_of(body)
    assert 0 < row["completion_tokens"] < 40
    expected = GPT52.cost(
        TokenUsage(prompt_tokens=guess_of(body), completion_tokens=row["completion_tokens"])
    )
    assert row["cost_micros"] == expected
    assert credits_of(gateway, key["key"])["used_credits"] == usd(expected)
    # the upstream was abandoned, not read to its end
    assert upstream.completed == 0


async def test_include_usage_ends_with_a_usage_chunk_and_one_id(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(
        text="abcdefghij", chunks=5, prompt_tokens=21, completion_tokens=34, cached_tokens=5,
        reasoning_tokens=4,
    )
    raw = await post_stream(
        gateway, key["key"], stream_body(stream_options={"include_usage": True})
    )
    data = data_of(events_of(raw))
    assert data[-1].strip() == DONE
    chunks = [json.loads(e[5:]) for e in data[:-1]]
    assert len(chunks) >= 3
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1, ids
    assert next(iter(ids)).startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["model"] == "gpt-5.2" for c in chunks)
    final = chunks[-1]
    assert final["choices"] == []
    usage = final["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        21,
        34,
        55,
    )
    assert usage["prompt_tokens_details"]["cached_tokens"] == 5
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 4
    # only the last chunk carries usage; every other one has a choice
    assert all(c.get("usage") is None and c["choices"] for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_a_short_stream_dropped_by_its_client_is_a_disconnect(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeOpenAI
) -> None:
    """The client hangs up after the first chunk of a stream that ends (about 0.1 s) before the
    watch for disconnects starts (0.25 s): recorded as ``ok`` before, as a disconnect now."""
    upstream.default = Behavior(text="abcde", chunks=5, chunk_delay=0.02,
                                prompt_tokens=11, completion_tokens=5)
    await read_first_chunk_and_hang_up(gateway, key["key"], stream_body())
    gateway.wait_until(one_row(gateway, key["id"]), message="the ledger row")
    (row,) = ledger(gateway, key["id"])
    assert row["status"] == "client_disconnected"
    # the upstream finished: its own usage is what the key is charged
    assert (row["prompt_tokens"], row["completion_tokens"]) == (11, 5)
    assert row["cost_micros"] == GPT52.cost(TokenUsage(prompt_tokens=11, completion_tokens=5))
