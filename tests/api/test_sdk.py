"""The official OpenAI SDK against a running relaygate, as users call it."""

from __future__ import annotations

import re

import openai
import pytest

from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess

ID = re.compile(r"^chatcmpl-\d{14}\d{9}[A-Za-z0-9]{8}$")


@pytest.fixture
def key(gateway: GatewayProcess) -> str:
    return str(gateway.create_key("--credits", "10")["key"])


def test_sync_completion_has_the_contract_shape(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(
        text="Hi there", prompt_tokens=13, completion_tokens=1891, reasoning_tokens=1480,
        cached_tokens=3,
    )
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-5.2", messages=[{"role": "user", "content": "Please introduce yourself"}]
    )
    assert ID.match(answer.id)
    assert answer.object == "chat.completion"
    assert answer.model == "gpt-5.2"
    assert answer.choices[0].message.content == "Hi there"
    assert answer.choices[0].finish_reason == "stop"
    usage = answer.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (13, 1891, 1904)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 1480
    extra = answer.model_dump()["usage"]
    assert extra["prompt_tokens_details"]["text_tokens"] == 13
    assert extra["completion_tokens_details"]["text_tokens"] == 1891 - 1480
    assert extra["input_tokens"] == 13
    assert extra["output_tokens"] == 1891
    assert extra["input_tokens_details"] is None
    # the upstream got its own model name, never the client's key
    sent = upstream.received[-1]
    assert sent.body["model"] == "gpt-5.2-upstream"
    assert sent.headers["Authorization"] == "Bearer sk-upstream-SECRET-0123456789"


async def test_async_completion(gateway: GatewayProcess, key: str) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    answer = await client.chat.completions.create(
        model="gpt-5.5", messages=[{"role": "user", "content": "hello"}], temperature=0.7
    )
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    await client.close()


def test_stream_shares_one_id_and_ends_with_usage(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(text="abcdefghij", chunks=5, completion_tokens=5)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.2",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert ID.match(chunks[0].id)
    assert all(c.model == "gpt-5.2" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "abcdefghij"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    # relaygate asked the upstream for usage although it always needs it
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}


def test_stream_without_include_usage_sends_no_usage_chunk(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.2", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    # ...but the upstream was still asked for usage, so the request is billed exactly
    assert upstream.received[-1].body["stream_options"]["include_usage"] is True


async def test_async_stream_reasoning_and_tool_calls(
    gateway: GatewayProcess, key: str, upstream: FakeOpenAI
) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}
    upstream.default = Behavior(text="ok", reasoning="thinking...", tool_call=call,
                                finish_reason="tool_calls")
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-5.2", messages=[{"role": "user", "content": "x"}], stream=True,
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    )
    reasoning, names, finish = "", [], None
    async for chunk in stream:
        for choice in chunk.choices:
            reasoning += choice.delta.model_dump().get("reasoning_content") or ""
            for tc in choice.delta.tool_calls or []:
                names.append(tc.function.name if tc.function else None)
            finish = choice.finish_reason or finish
    assert reasoning == "thinking..."
    assert names == ["lookup"]
    assert finish == "tool_calls"
    assert upstream.received[-1].body["tools"][0]["function"]["name"] == "lookup"
    await client.close()


def test_non_streaming_tool_call(gateway: GatewayProcess, key: str, upstream: FakeOpenAI) -> None:
    call = {"id": "call_9", "type": "function",
            "function": {"name": "lookup", "arguments": "{}"}}
    upstream.default = Behavior(tool_call=call, finish_reason="tool_calls")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-5.2", messages=[{"role": "user", "content": "x"}]
    )
    message = answer.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    assert message.tool_calls[0].id == "call_9"
    assert answer.choices[0].finish_reason == "tool_calls"


def test_models_lists_what_the_key_may_use(gateway: GatewayProcess) -> None:
    limited = gateway.create_key("--models", "gpt-5.2,relaygate-simulator")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=limited["key"], max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["gpt-5.2", "relaygate-simulator"]


def test_simulator_streams_with_no_upstream_account(gateway: GatewayProcess, key: str) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="relaygate-simulator", messages=[{"role": "user", "content": "hi"}],
            stream=True, stream_options={"include_usage": True}, max_tokens=5,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
