"""``POST /v1/messages`` with the official ``anthropic`` SDK against a running relaygate.

In front of a fake Anthropic upstream the body passes through (checked against the SDK's
``MessageCreateParams`` by the fake); in front of the fake OpenAI upstream it is translated (the
upstream's body checked against the ``openai`` SDK's ``CompletionCreateParams``). Both render
Anthropic's answers and streams, and bill through the same ledger (``api = "messages"``).
"""

from __future__ import annotations

import asyncio
import json
import typing
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pydantic
import pytest
from openai.types.chat import completion_create_params

from relaygate.accounting.prices import Price
from relaygate.errors import (
    ApiError,
    InsufficientQuota,
    RateLimited,
    RequestTooLarge,
    ServerBusy,
    ServiceUnavailable,
    UpstreamUnreachable,
)
from relaygate.protocol.anthropic_messages.errors import ANTHROPIC_ERRORS
from relaygate.providers.base import TokenUsage
from relaygate.settings import Pricing
from tests.conftest import catalog
from tests.providers import fake_anthropic
from tests.providers.fake_anthropic import COUNTED_TOKENS, FakeAnthropic, Reply, ToolUse
from tests.providers.support import PNG
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, credits_of, ledger

CLAUDE = "claude-sonnet-4-6"
UPSTREAM_CLAUDE = "claude-sonnet-4-6-20260115"
OPEN_CLAUDE = "claude-open"
"""The same upstream, with some priced parts allowed (``allow_fields``)."""
PRICING = {
    "input": "3",
    "cached_input": "0.3",
    "output": "15",
    "cache_write": "3.75",
    "cache_write_1h": "6",
}
CLAUDE_PRICE = Price.from_settings(Pricing(**{k: Decimal(v) for k, v in PRICING.items()}))
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
}
_OPENAI_BODY = pydantic.TypeAdapter(completion_create_params.CompletionCreateParamsBase)


def openai_problems(body: dict[str, Any]) -> list[str]:
    """What the openai SDK's request types find wrong with a translated body."""
    known = set(typing.get_type_hints(completion_create_params.CompletionCreateParamsBase))
    problems = [f"unknown field {name!r}" for name in set(body) - known - {"stream"}]
    try:
        _OPENAI_BODY.validate_python(body)
    except pydantic.ValidationError as exc:
        problems.append(str(exc))
    return problems


@pytest.fixture
def claude() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(
    tmp_path: Path, upstream: FakeOpenAI, claude: FakeAnthropic
) -> Iterator[GatewayProcess]:
    config = catalog(upstream.base_url, disconnect_drain_seconds=30)
    config["models"][CLAUDE] = {
        "pricing": PRICING,
        "max_output_tokens": 64000,
        "vision": True,
        "upstreams": [
            {
                "provider": "anthropic",
                "name": "claude-upstream",
                "base_url": claude.base_url,
                "api_key": fake_anthropic.API_KEY,
                "model": UPSTREAM_CLAUDE,
            }
        ],
    }
    config["models"][OPEN_CLAUDE] = {
        **config["models"][CLAUDE],
        "allow_fields": ["web_search", "mcp_servers", "document_url"],
    }
    config["models"][OPEN_CLAUDE]["upstreams"] = [
        {
            **config["models"][CLAUDE]["upstreams"][0],
            "options": {"version": "2023-06-01", "betas": ["extended-cache-ttl-2025-04-11"]},
        }
    ]
    gateway = GatewayProcess(tmp_path, config).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def key(gateway: GatewayProcess) -> dict[str, Any]:
    return gateway.create_key("--credits", "10")


def sdk(gateway: GatewayProcess, key: dict[str, Any]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key["key"], max_retries=0)


def rows_of(gateway: GatewayProcess, key: dict[str, Any], count: int) -> list[dict[str, Any]]:
    gateway.wait_until(lambda: len(ledger(gateway, key["id"])) == count, message="ledger rows")
    return ledger(gateway, key["id"])


# --- pass-through to an Anthropic upstream ---------------------------------------------------


CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Berlin?"},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBCgIYAhIM1gbc"},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "get_weather",
                "input": {"location": "Berlin"},
            },
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01",
                "content": "12 C, cloudy",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "And tomorrow?"},
        ],
    },
]
SYSTEM = [
    {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
]


def test_a_message_passes_through_with_only_the_model_rewritten(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    claude.default = Reply(
        text="Sunny.",
        thinking="Tomorrow looks fine.",
        input_tokens=100,
        output_tokens=20,
        cache_read=1000,
        cache_write=500,
        cache_write_1h=200,
    )
    message = sdk(gateway, key).messages.create(
        model=CLAUDE,
        max_tokens=2048,
        system=SYSTEM,
        messages=CONVERSATION,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[WEATHER],  # type: ignore[list-item]
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].signature == "sig=="  # type: ignore[union-attr]
    assert message.usage.input_tokens == 100  # Anthropic's convention: without cache tokens
    assert message.usage.cache_read_input_tokens == 1000
    assert message.usage.cache_creation_input_tokens == 500
    (sent,) = claude.received
    assert claude.problems == []
    assert sent.body["model"] == UPSTREAM_CLAUDE
    assert sent.body["system"] == SYSTEM  # cache_control with its ttl
    assert sent.body["messages"] == CONVERSATION  # thinking signature, tool_result cache_control
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent.body["tools"] == [WEATHER]
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent.headers["x-api-key"] == fake_anthropic.API_KEY  # never the client's key
    (row,) = rows_of(gateway, key, 1)
    assert (row["api"], row["status"], row["upstream_model"]) == ("messages", "ok", UPSTREAM_CLAUDE)
    assert (row["prompt_tokens"], row["cached_tokens"], row["cache_write_tokens"]) == (
        1600,
        1000,
        500,
    )
    # input 100 x $3, reads 1000 x $0.30, writes 300 x $3.75 (5 min) + 200 x $6 (1 h), 20 x $15
    assert row["cost_micros"] == 300 + 300 + 1125 + 1200 + 300
    expected = TokenUsage(
        prompt_tokens=1600,
        completion_tokens=20,
        cached_tokens=1000,
        cache_write_tokens=300,
        cache_write_1h_tokens=200,
    )
    assert CLAUDE_PRICE.cost(expected) == row["cost_micros"]


def test_a_stream_passes_through_with_its_signatures_and_is_billed_its_usage(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    claude.default = Reply(
        text="It will rain tomorrow.",
        thinking="Check the forecast.",
        tool=ToolUse(),
        stop_reason="tool_use",
        input_tokens=40,
        output_tokens=33,
        chunks=4,
    )
    with sdk(gateway, key).messages.stream(
        model=CLAUDE,
        max_tokens=4096,
        messages=CONVERSATION,
        tools=[WEATHER],  # type: ignore[arg-type,list-item]
        thinking={"type": "enabled", "budget_tokens": 2048},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "It will rain tomorrow."
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature == "sig=="  # type: ignore[union-attr]
    assert final.content[0].thinking == "Check the forecast."  # type: ignore[union-attr]
    assert final.content[2].input == {"location": "Berlin", "unit": "c"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    assert final.model == UPSTREAM_CLAUDE  # relayed as it came
    assert claude.problems == []
    assert claude.received[-1].body["stream"] is True
    (row,) = rows_of(gateway, key, 1)
    assert (row["api"], row["stream"], row["status"]) == ("messages", 1, "ok")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (40, 33)
    assert row["cost_micros"] == CLAUDE_PRICE.cost(
        TokenUsage(prompt_tokens=40, completion_tokens=33)
    )


def test_count_tokens_passes_through_to_anthropic_and_is_estimated_elsewhere(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic, upstream: FakeOpenAI
) -> None:
    client = sdk(gateway, key)
    counted = client.messages.count_tokens(model=CLAUDE, messages=CONVERSATION, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    assert counted.input_tokens == COUNTED_TOKENS
    assert claude.received[-1].path == "/v1/messages/count_tokens"
    assert claude.received[-1].body["model"] == UPSTREAM_CLAUDE
    assert claude.problems == []
    raw = client.messages.with_raw_response.count_tokens(
        model="gpt-5.2", messages=[{"role": "user", "content": "Hello there, how are you?"}]
    )
    assert raw.headers["x-relaygate-token-count"] == "estimate"
    assert json.loads(raw.text())["estimated"] is True
    assert raw.parse().input_tokens > 0
    assert upstream.received == []  # an estimate: no upstream call
    assert ledger(gateway, key["id"]) == []  # neither billed nor logged


# --- translated for an OpenAI-compatible upstream --------------------------------------------


def test_a_message_to_an_openai_upstream_is_translated_both_ways(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeOpenAI
) -> None:
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
    }
    upstream.default = Behavior(
        reasoning="Paris next.",
        tool_call=call,
        finish_reason="tool_calls",
        prompt_tokens=50,
        cached_tokens=10,
        completion_tokens=7,
    )
    messages = [
        {"role": "system", "content": "Answer in Celsius."},  # as recent Claude Code sends it
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ],
        },
        *CONVERSATION[1:],
    ]
    message = sdk(gateway, key).messages.create(
        model="gpt-5.2",
        max_tokens=1000,
        system="Be brief.",
        messages=messages,  # type: ignore[arg-type]
        tools=[WEATHER],
        tool_choice={"type": "any"},  # type: ignore[list-item]
        thinking={"type": "enabled", "budget_tokens": 10000},
        stop_sequences=["END"],
        metadata={"user_id": "user-7"},
    )
    assert [block.type for block in message.content] == ["thinking", "tool_use"]
    assert message.content[0].thinking == "Paris next."  # type: ignore[union-attr]
    use = message.content[1]
    assert (use.id, use.name, use.input) == ("call_9", "get_weather", {"location": "Paris"})  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert message.id.startswith("msg_")
    assert message.model == "gpt-5.2"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (40, 10)
    assert message.usage.output_tokens == 7
    sent = upstream.received[-1].body
    assert openai_problems(sent) == []
    assert [m["role"] for m in sent["messages"]] == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
        "user",
    ]
    assert sent["messages"][0]["content"] == "Be brief."
    assert sent["messages"][2]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    assert sent["messages"][3]["tool_calls"][0]["function"]["arguments"] == '{"location":"Berlin"}'
    assert sent["messages"][4] == {
        "role": "tool",
        "tool_call_id": "toolu_01",
        "content": "12 C, cloudy",
    }
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert (sent["tool_choice"], sent["reasoning_effort"]) == ("required", "medium")
    assert (sent["max_completion_tokens"], sent["stop"], sent["user"]) == (1000, ["END"], "user-7")
    (row,) = rows_of(gateway, key, 1)
    assert (row["api"], row["prompt_tokens"], row["cached_tokens"]) == ("messages", 50, 10)


def test_a_translated_stream_follows_anthropics_event_sequence(
    gateway: GatewayProcess, key: dict[str, Any], upstream: FakeOpenAI
) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
    }
    upstream.default = Behavior(
        text="Looking it up.",
        chunks=3,
        reasoning="Need weather.",
        tool_call=call,
        finish_reason="tool_calls",
        prompt_tokens=21,
        completion_tokens=9,
    )
    client = sdk(gateway, key)
    events = list(
        client.messages.create(
            model="gpt-5.2",
            max_tokens=500,
            stream=True,
            tools=[WEATHER],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    blocks = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert blocks == ["thinking", "text", "tool_use"]
    assert kinds.count("content_block_stop") == 3
    # each block is started, filled and stopped before the next starts
    opened = [e.index for e in events if e.type == "content_block_start"]
    stopped = [e.index for e in events if e.type == "content_block_stop"]
    assert opened == stopped == [0, 1, 2]
    delta = events[-2]
    assert delta.delta.stop_reason == "tool_use"  # type: ignore[union-attr]
    assert (delta.usage.input_tokens, delta.usage.output_tokens) == (21, 9)  # type: ignore[union-attr]
    with client.messages.stream(
        model="gpt-5.2",
        max_tokens=500,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[1].text == "Looking it up."  # type: ignore[union-attr]
    assert final.content[2].input == {"location": "Oslo"}  # type: ignore[union-attr]
    rows = rows_of(gateway, key, 2)
    assert {(r["api"], r["stream"], r["status"]) for r in rows} == {("messages", 1, "ok")}


# --- errors, in Anthropic's shape ------------------------------------------------------------


def post(
    gateway: GatewayProcess, body: Any, headers: dict[str, str], path: str = "/v1/messages"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(gateway.url + path, data=data, method="POST")
    for name, value in {"content-type": "application/json", **headers}.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


COUNT = "/v1/messages/count_tokens"
GOOD = {"model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        pytest.param(b"{not json", 400, "invalid_request_error", id="bad-json"),
        pytest.param(
            {**GOOD, "max_tokens": None}, 400, "invalid_request_error", id="no-max-tokens"
        ),
        pytest.param(
            {k: v for k, v in GOOD.items() if k != "max_tokens"},
            400,
            "invalid_request_error",
            id="max-tokens-missing",
        ),
        pytest.param({**GOOD, "messages": []}, 400, "invalid_request_error", id="no-messages"),
        pytest.param({**GOOD, "temperature": 1.5}, 400, "invalid_request_error", id="temperature"),
        pytest.param({**GOOD, "max_tokens": 10**6}, 400, "invalid_request_error", id="too-long"),
        pytest.param(
            {
                **GOOD,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "http://127.0.0.1/x.png"},
                            }
                        ],
                    }
                ],
            },
            400,
            "invalid_request_error",
            id="ssrf-image",
        ),
        pytest.param(
            {
                **GOOD,
                "model": "gpt-5.2",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                            }
                        ],
                    }
                ],
            },
            400,
            "invalid_request_error",
            id="untranslatable",
        ),
        pytest.param(
            {
                **GOOD,
                "model": "text-only",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": PNG,
                                },
                            }
                        ],
                    }
                ],
            },
            400,
            "invalid_request_error",
            id="no-vision",
        ),
        pytest.param({**GOOD, "model": "claude-nope"}, 404, "not_found_error", id="unknown-model"),
    ],
)
def test_bad_input_gets_an_anthropic_error_and_changes_nothing(
    gateway: GatewayProcess,
    key: dict[str, Any],
    claude: FakeAnthropic,
    upstream: FakeOpenAI,
    body: Any,
    status: int,
    kind: str,
) -> None:
    before = credits_of(gateway, key["key"])
    got, _, answer = post(gateway, body, {"x-api-key": key["key"]})
    assert (got, answer["type"], answer["error"]["type"]) == (status, "error", kind), answer
    assert set(answer) == {"type", "error"}
    assert answer["error"]["message"]
    assert claude.received == []
    assert upstream.received == []
    assert credits_of(gateway, key["key"]) == before
    assert ledger(gateway, key["id"]) == []


def test_keys_work_in_either_header_and_a_bad_one_is_an_authentication_error(
    gateway: GatewayProcess, key: dict[str, Any]
) -> None:
    assert post(gateway, GOOD, {"authorization": f"Bearer {key['key']}"})[0] == 200
    assert post(gateway, GOOD, {"x-api-key": key["key"]})[0] == 200
    status, _, answer = post(gateway, GOOD, {"x-api-key": "sk-relay-wrong"})
    assert (status, answer["error"]["type"]) == (401, "authentication_error")
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="nope", max_retries=0).messages.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )


def test_a_key_without_credit_gets_a_billing_error_and_rate_limits_carry_retry_after(
    gateway: GatewayProcess, claude: FakeAnthropic
) -> None:
    poor = gateway.create_key("--credits", "0.000001")
    status, _, answer = post(gateway, GOOD, {"x-api-key": poor["key"]})
    assert (status, answer["error"]["type"]) == (402, "billing_error")
    with pytest.raises(anthropic.APIStatusError) as raised:
        anthropic.Anthropic(
            base_url=gateway.url, api_key=poor["key"], max_retries=0
        ).messages.create(model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 402
    slow = gateway.create_key("--credits", "10", "--rpm", "1")
    assert post(gateway, GOOD, {"x-api-key": slow["key"]})[0] == 200
    status, headers, answer = post(gateway, GOOD, {"x-api-key": slow["key"]})
    assert (status, answer["error"]["type"]) == (429, "rate_limit_error")
    assert int(headers["retry-after"]) >= 1
    assert len(claude.received) == 1


def test_an_upstream_error_mid_stream_is_relayed_once(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    claude.default = Reply(text="abcdef", chunks=3, error_mid_stream="overloaded_error")
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        sdk(gateway, key).messages.stream(
            model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "x"}]
        ) as s,
    ):
        "".join(s.text_stream)
    assert "overloaded" in str(raised.value)
    (row,) = rows_of(gateway, key, 1)
    assert (row["api"], row["status"]) == ("messages", "upstream_error")


# --- the same money rules as chat completions ------------------------------------------------


async def test_concurrent_messages_never_overdraw_the_key(
    gateway: GatewayProcess, claude: FakeAnthropic
) -> None:
    # a 1-hour cache write is asked for: the prompt is reserved at the dearest price ($6/M)
    claude.default = Reply(
        text="ok", input_tokens=13, output_tokens=20, cache_write=10, cache_write_1h=10
    )
    body = json.dumps(
        {
            "model": CLAUDE,
            "max_tokens": 20,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": "How much?"}],
        }
    ).encode()
    worst = len(body) * 6 + 20 * 15  # micro-USD: $6/M is 6 micro-USD a token
    granted = 30 * worst
    key = gateway.create_key("--credits", str(Decimal(granted).scaleb(-6)))
    headers = {"x-api-key": key["key"], "content-type": "application/json"}

    async def one(session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
        async with session.post(gateway.url + "/v1/messages", data=body, headers=headers) as r:
            return r.status, await r.json()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        results = await asyncio.gather(*(one(session) for _ in range(100)))
    ok = [answer for status, answer in results if status == 200]
    refused = [answer for status, answer in results if status == 402]
    assert len(ok) + len(refused) == 100
    assert len(ok) >= 30  # each reservation fits 30 times at least
    assert all(a["error"]["type"] == "billing_error" for a in refused)
    each = CLAUDE_PRICE.cost(
        TokenUsage(prompt_tokens=23, completion_tokens=20, cache_write_1h_tokens=10)
    )
    credits = credits_of(gateway, key["key"])
    assert credits["used_credits"] == Decimal(each * len(ok)).scaleb(-6)
    assert 0 <= credits["remaining_credits"] == Decimal(granted - each * len(ok)).scaleb(-6)
    rows = rows_of(gateway, key, len(ok))
    assert sum(row["cost_micros"] for row in rows) == each * len(ok)


async def read_first_event_and_hang_up(gateway: GatewayProcess, key: str, body: Any) -> bytes:
    headers = {"x-api-key": key}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        response = await session.post(gateway.url + "/v1/messages", json=body, headers=headers)
        try:
            assert response.status == 200, await response.text()
            async for line in response.content:
                if line.startswith(b"data:") and b"content_block_delta" in line:
                    return line
            pytest.fail("the stream ended before its first delta")
        finally:
            response.close()  # drops the connection mid-stream


@pytest.mark.parametrize("model", [CLAUDE, "gpt-5.2"], ids=["pass-through", "translated"])
async def test_a_client_that_hangs_up_is_billed_the_upstreams_usage(
    gateway: GatewayProcess,
    key: dict[str, Any],
    claude: FakeAnthropic,
    upstream: FakeOpenAI,
    model: str,
) -> None:
    claude.default = Reply(
        text="x" * 40, chunks=40, delta_delay=0.1, input_tokens=11, output_tokens=57
    )
    upstream.default = Behavior(
        text="x" * 40, chunks=40, chunk_delay=0.1, prompt_tokens=11, completion_tokens=57
    )
    body = {
        "model": model,
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "Count."}],
    }
    await read_first_event_and_hang_up(gateway, key["key"], body)
    gateway.wait_until(lambda: len(ledger(gateway, key["id"])) == 1, timeout=15)
    (row,) = ledger(gateway, key["id"])
    assert (row["api"], row["status"]) == ("messages", "client_disconnected")
    # the upstream's own figures (it was read to its end), not the estimate
    assert (row["prompt_tokens"], row["completion_tokens"]) == (11, 57)
    assert credits_of(gateway, key["key"])["used_credits"] == Decimal(row["cost_micros"]).scaleb(-6)


def test_the_beta_route_of_the_sdk_is_served(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    message = sdk(gateway, key).beta.messages.create(
        model=CLAUDE,
        max_tokens=100,
        messages=[{"role": "user", "content": "Hi"}],
        betas=["context-management-2025-06-27"],
    )
    assert message.content[0].text == "Hello from the fake Claude."  # type: ignore[union-attr]
    assert claude.received[-1].headers["anthropic-beta"] == "context-management-2025-06-27"


@pytest.mark.parametrize(
    ("error", "status", "kind", "retry_after"),
    [
        pytest.param(InsufficientQuota("no money"), 402, "billing_error", None, id="402"),
        pytest.param(
            RateLimited("slow down", retry_after=7), 429, "rate_limit_error", "7", id="429"
        ),
        pytest.param(ServiceUnavailable("busy"), 529, "overloaded_error", "30", id="503-as-529"),
        pytest.param(ServerBusy("full", retry_after=2), 529, "overloaded_error", "2", id="busy"),
        pytest.param(UpstreamUnreachable("down"), 502, "api_error", None, id="502"),
        pytest.param(RequestTooLarge("big"), 413, "request_too_large", None, id="413"),
    ],
)
def test_errors_take_anthropics_status_and_type(
    error: ApiError, status: int, kind: str, retry_after: str | None
) -> None:
    got, body, headers = ANTHROPIC_ERRORS.response(error)
    answer = json.loads(body)
    assert (got, answer["type"], answer["error"]["type"]) == (status, "error", kind)
    assert answer["error"]["message"].startswith(error.message)
    assert dict(headers).get(b"retry-after") == (retry_after.encode() if retry_after else None)
    event = ANTHROPIC_ERRORS.sse(error)
    assert event.startswith(b"event: error\ndata: ")
    assert json.loads(event.split(b"data: ", 1)[1])["error"]["type"] == kind


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_simulator_answers_in_anthropics_shape(
    gateway: GatewayProcess, key: dict[str, Any], stream: bool
) -> None:
    client = sdk(gateway, key)
    request: dict[str, Any] = {
        "model": "relaygate-simulator",
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello simulator"}],
    }
    if stream:
        with client.messages.stream(**request) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**request)
    assert message.content[0].type == "text"
    assert message.content[0].text  # type: ignore[union-attr]
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0
    (row,) = rows_of(gateway, key, 1)
    assert (row["api"], row["model"], row["status"]) == ("messages", "relaygate-simulator", "ok")


def test_count_tokens_is_refused_without_credit_and_counts_against_the_keys_rpm(
    gateway: GatewayProcess, claude: FakeAnthropic
) -> None:
    body = {"model": CLAUDE, "messages": [{"role": "user", "content": "Hello"}]}
    empty = gateway.create_key("--credits", "0")
    for _ in range(3):
        status, _, answer = post(gateway, body, {"x-api-key": empty["key"]}, COUNT)
        assert (status, answer["error"]["type"]) == (402, "billing_error")
    assert claude.received == []  # nothing reached the upstream on relaygate's credential
    slow = gateway.create_key("--credits", "10", "--rpm", "1")
    status, _, answer = post(gateway, body, {"x-api-key": slow["key"]}, COUNT)
    assert (status, answer) == (200, {"input_tokens": COUNTED_TOKENS})
    status, headers, answer = post(gateway, body, {"x-api-key": slow["key"]}, COUNT)
    assert (status, answer["error"]["type"]) == (429, "rate_limit_error")
    assert int(headers["retry-after"]) >= 1
    assert len(claude.received) == 1
    assert ledger(gateway, slow["id"]) == []  # counted against the RPM, never billed


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
PDF_URL = {
    "role": "user",
    "content": [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "text", "text": "Summarize"},
    ],
}


@pytest.mark.parametrize(
    ("extra", "named", "param"),
    [
        ({"tools": [WEATHER, WEB_SEARCH]}, "web_search_20250305", "tools[1]"),
        ({"mcp_servers": [{"type": "url", "url": "https://mcp.example"}]}, "mcp_servers", None),
        ({"container": "container_011"}, "container", None),
        ({"speed": "fast"}, "speed", None),
        ({"messages": [PDF_URL]}, "document_url", "messages[0].content[0].source"),
    ],
    ids=["server-tool", "mcp_servers", "container", "unknown-field", "document-url"],
)
@pytest.mark.parametrize("path", ["/v1/messages", COUNT], ids=["create", "count"])
def test_priced_parts_are_refused_unless_the_model_allows_them(
    gateway: GatewayProcess,
    key: dict[str, Any],
    claude: FakeAnthropic,
    extra: dict[str, Any],
    named: str,
    param: str | None,
    path: str,
) -> None:
    body = {**GOOD, **extra}
    status, _, answer = post(gateway, body, {"x-api-key": key["key"]}, path)
    assert (status, answer["type"], answer["error"]["type"]) == (
        400,
        "error",
        "invalid_request_error",
    )
    assert repr(named) in answer["error"]["message"]
    if param is not None:
        assert param in json.dumps(answer)
    assert claude.received == []
    assert ledger(gateway, key["id"]) == []
    if named in ("web_search_20250305", "document_url"):  # (the fake knows these)
        allowed = {**body, "model": OPEN_CLAUDE}
        assert post(gateway, allowed, {"x-api-key": key["key"]}, path)[0] == 200
        assert len(claude.received) == 1


def test_only_allowed_beta_values_reach_the_upstream(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    headers = {
        "x-api-key": key["key"],
        "anthropic-beta": "context-1m-2025-08-07, prompt-caching-2024-07-31",
    }
    assert post(gateway, GOOD, headers)[0] == 200
    assert (
        post(gateway, {k: v for k, v in GOOD.items() if k != "max_tokens"}, headers, COUNT)[0]
        == 200
    )
    assert [r.headers.get("anthropic-beta") for r in claude.received] == [
        "prompt-caching-2024-07-31"
    ] * 2


def test_a_stream_cut_short_is_billed_the_input_side_message_start_reported(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    claude.default = Reply(
        text="x" * 40, chunks=4, input_tokens=11, cache_read=500, cache_write=3000, cut=True
    )
    request = urllib.request.Request(
        gateway.url + "/v1/messages",
        data=json.dumps({**GOOD, "stream": True}).encode(),
        headers={"content-type": "application/json", "x-api-key": key["key"]},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert b"event: error" in response.read()  # it had started: it ends with an error
    (row,) = rows_of(gateway, key, 1)
    # message_start's figures (cache reads and writes), not the prompt estimate; the one
    # text delta received as output, by its bytes: 10 characters (3 tokens), and 7 bytes
    # more of the fake's spaced JSON around them (2)
    usage = TokenUsage(
        prompt_tokens=11 + 500 + 3000, completion_tokens=5, cached_tokens=500,
        cache_write_tokens=3000,
    )  # fmt: skip
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3511, 5)
    assert row["cost_micros"] == CLAUDE_PRICE.cost(usage)


def test_the_operators_version_and_betas_win_over_and_merge_with_the_clients(
    gateway: GatewayProcess, key: dict[str, Any], claude: FakeAnthropic
) -> None:
    headers = {
        "x-api-key": key["key"],
        "anthropic-version": "2026-10-21",
        "anthropic-beta": "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11",
    }
    assert post(gateway, {**GOOD, "model": OPEN_CLAUDE}, headers)[0] == 200
    assert post(gateway, GOOD, headers)[0] == 200  # no options: the client's version
    sent = [(r.headers["anthropic-version"], r.headers["anthropic-beta"]) for r in claude.received]
    assert sent == [
        ("2023-06-01", "extended-cache-ttl-2025-04-11,prompt-caching-2024-07-31"),
        ("2026-10-21", "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11"),
    ]
