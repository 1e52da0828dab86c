"""Each provider by streaming/non-streaming by text/image/tool call/reasoning, through a real
``relaygate serve`` and the official OpenAI SDK: the OpenAI-shaped answer the client gets, and
the request body each vendor received (checked against its SDK's types by the fakes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from tests.providers import fake_anthropic, fake_gemini
from tests.providers.fake_anthropic import FakeAnthropic, ToolUse
from tests.providers.fake_azure import FakeAzure
from tests.providers.fake_gemini import FakeGemini
from tests.providers.support import PNG, WEATHER
from tests.support.fake_openai import Behavior
from tests.support.gateway import GatewayProcess

IMAGE_DATA = f"data:image/png;base64,{PNG}"
# http(s) image URLs are fetched and checked by relaygate (SSRF-safe, so never to a name that
# does not resolve here) and forwarded inline; their translation to each vendor's URL source is
# covered by the providers' own tests.
KINDS = ["text", "image", "tool", "reasoning"]
MODELS = {"anthropic": "claude", "gemini": "gemini", "azure": "azure-gpt"}


@dataclass
class Expect:
    """What the client must see."""

    text: str | None
    finish: str
    prompt_tokens: int
    completion_tokens: int
    reasoning: str | None = None
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    tool: tuple[str, dict[str, Any]] | None = None
    check_body: Callable[[dict[str, Any]], None] = field(default=lambda body: None)


@dataclass
class Answer:
    text: str | None
    reasoning: str | None
    tool_name: str | None
    tool_arguments: str
    finish: str | None
    usage: Any
    upstream: str


def request_for(kind: str, model: str, stream: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"},
    ]
    body: dict[str, Any] = {"model": model, "messages": messages, "max_completion_tokens": 30000}
    if kind == "image":
        messages[1]["content"] = [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": IMAGE_DATA}},
        ]
    elif kind == "tool":
        body["tools"] = [WEATHER]
        body["tool_choice"] = "auto"
    elif kind == "reasoning":
        body["reasoning_effort"] = "high"
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# --- what each vendor answers, and what it must have received ---------------------------------


def arrange_anthropic(fake: FakeAnthropic, kind: str) -> Expect:
    reply = fake_anthropic.Reply(
        text="Hello from the fake Claude.",
        input_tokens=20,
        output_tokens=9,
        cache_read=6,
        cache_write=4,
    )
    expect = Expect(reply.text, "stop", prompt_tokens=30, completion_tokens=9, cached_tokens=6)

    def body_has(body: dict[str, Any]) -> None:
        assert body["system"] == [{"type": "text", "text": "You are terse."}]
        assert body["max_tokens"] == 30000

    if kind == "image":

        def body_has_images(body: dict[str, Any]) -> None:
            body_has(body)
            sources = [b["source"] for b in body["messages"][0]["content"] if b["type"] == "image"]
            assert sources == [{"type": "base64", "media_type": "image/png", "data": PNG}]

        expect.check_body = body_has_images
    elif kind == "tool":
        reply.tool = ToolUse(id="toolu_7", name="get_weather", input={"location": "Oslo"})
        reply.stop_reason = "tool_use"
        expect.tool = ("get_weather", {"location": "Oslo"})
        expect.finish = "tool_calls"

        def body_has_tools(body: dict[str, Any]) -> None:
            body_has(body)
            assert body["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
            assert body["tool_choice"] == {"type": "auto"}

        expect.check_body = body_has_tools
    elif kind == "reasoning":
        reply.thinking = "Step one, step two."
        reply.thinking_tokens = 5
        expect.reasoning, expect.reasoning_tokens = reply.thinking, 5

        def body_has_thinking(body: dict[str, Any]) -> None:
            body_has(body)
            assert body["thinking"] == {"type": "enabled", "budget_tokens": 24576}

        expect.check_body = body_has_thinking
    else:
        expect.check_body = body_has
    fake.default = reply
    return expect


def arrange_gemini(fake: FakeGemini, kind: str) -> Expect:
    reply = fake_gemini.Reply(
        text="Hello from the fake Gemini.",
        prompt_tokens=40,
        candidates_tokens=8,
        cached_tokens=10,
    )
    expect = Expect(reply.text, "stop", prompt_tokens=40, completion_tokens=8, cached_tokens=10)

    def body_has(body: dict[str, Any]) -> None:
        assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
        assert body["generationConfig"]["maxOutputTokens"] == 30000

    if kind == "image":

        def body_has_images(body: dict[str, Any]) -> None:
            body_has(body)
            parts = body["contents"][0]["parts"]
            assert parts[1:] == [{"inlineData": {"mimeType": "image/png", "data": PNG}}]

        expect.check_body = body_has_images
    elif kind == "tool":
        reply.call = ("get_weather", {"location": "Oslo"})
        expect.tool = reply.call
        expect.finish = "tool_calls"

        def body_has_tools(body: dict[str, Any]) -> None:
            body_has(body)
            assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
            assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}

        expect.check_body = body_has_tools
    elif kind == "reasoning":
        reply.thoughts, reply.thoughts_tokens = "Thinking it over.", 12
        expect.reasoning, expect.reasoning_tokens = reply.thoughts, 12
        expect.completion_tokens = 20

        def body_has_thinking(body: dict[str, Any]) -> None:
            body_has(body)
            thinking = body["generationConfig"]["thinkingConfig"]
            assert thinking == {"includeThoughts": True, "thinkingBudget": 24576}

        expect.check_body = body_has_thinking
    else:
        expect.check_body = body_has
    fake.default = reply
    return expect


def arrange_azure(fake: FakeAzure, kind: str) -> Expect:
    behavior = Behavior(text="Hello from Azure.", prompt_tokens=11, completion_tokens=7)
    expect = Expect(behavior.text, "stop", prompt_tokens=11, completion_tokens=7)

    def body_has(body: dict[str, Any]) -> None:
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}
        if kind == "image":  # OpenAI's format: passed on as the client sent it
            assert body["messages"][1]["content"][1]["image_url"]["url"] == IMAGE_DATA
        if kind == "reasoning":
            assert body["reasoning_effort"] == "high"
        if kind == "tool":
            assert body["tools"] == [WEATHER]

    if kind == "tool":
        arguments = json.dumps({"location": "Oslo"})
        behavior.tool_call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
        behavior.finish_reason = "tool_calls"
        behavior.text, expect.text = "", None
        expect.tool = ("get_weather", {"location": "Oslo"})
        expect.finish = "tool_calls"
    elif kind == "reasoning":
        behavior.reasoning, behavior.reasoning_tokens = "Azure thinks.", 3
        expect.reasoning, expect.reasoning_tokens = "Azure thinks.", 3
    expect.check_body = body_has
    fake.default = behavior
    return expect


# --- calling relaygate --------------------------------------------------------------------------


def ask(client: openai.OpenAI, body: dict[str, Any]) -> Answer:
    raw = client.chat.completions.with_raw_response.create(**body)
    upstream = raw.headers.get("x-relaygate-upstream", "")
    if not body.get("stream"):
        answer = raw.parse()
        message = answer.choices[0].message
        calls = message.tool_calls or []
        function = calls[0].function if calls else None  # type: ignore[union-attr]
        return Answer(
            text=message.content,
            reasoning=message.model_dump().get("reasoning_content"),
            tool_name=function.name if function else None,
            tool_arguments=function.arguments if function else "",
            finish=answer.choices[0].finish_reason,
            usage=answer.usage,
            upstream=upstream,
        )
    text, reasoning, name, arguments, finish, usage = "", "", None, "", None, None
    for chunk in raw.parse():
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            reasoning += choice.delta.model_dump().get("reasoning_content") or ""
            for tool in choice.delta.tool_calls or []:
                if tool.function is not None:
                    name = name or tool.function.name
                    arguments += tool.function.arguments or ""
            finish = choice.finish_reason or finish
    return Answer(text or None, reasoning or None, name, arguments, finish, usage, upstream)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("vendor", list(MODELS))
def test_matrix(
    provider_gateway: GatewayProcess,
    gateway_key: str,
    anthropic_upstream: FakeAnthropic,
    gemini_upstream: FakeGemini,
    azure_upstream: FakeAzure,
    vendor: str,
    stream: bool,
    kind: str,
) -> None:
    if vendor == "anthropic":
        expect, received = arrange_anthropic(anthropic_upstream, kind), anthropic_upstream.received
    elif vendor == "gemini":
        expect, received = arrange_gemini(gemini_upstream, kind), gemini_upstream.received
    else:
        expect, received = arrange_azure(azure_upstream, kind), azure_upstream.received
    client = openai.OpenAI(
        base_url=provider_gateway.url + "/v1", api_key=gateway_key, max_retries=0
    )
    answer = ask(client, request_for(kind, MODELS[vendor], stream))

    assert answer.upstream == f"fake-{vendor}"
    assert answer.text == expect.text
    assert answer.reasoning == expect.reasoning
    assert answer.finish == expect.finish
    if expect.tool is None:
        assert answer.tool_name is None
    else:
        assert answer.tool_name == expect.tool[0]
        assert json.loads(answer.tool_arguments) == expect.tool[1]
    usage = answer.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        expect.prompt_tokens,
        expect.completion_tokens,
    )
    assert usage.completion_tokens_details.reasoning_tokens == expect.reasoning_tokens
    assert usage.prompt_tokens_details.cached_tokens == expect.cached_tokens
    assert len(received) == 1
    expect.check_body(received[0].body)


def test_upstream_keys_never_reach_the_client_or_the_log(
    provider_gateway: GatewayProcess, gateway_key: str, anthropic_upstream: FakeAnthropic
) -> None:
    anthropic_upstream.default = fake_anthropic.Reply(
        status=500, error_message=f"exploded with {fake_anthropic.API_KEY} RAW-BODY-1"
    )
    status, _, answer = provider_gateway.post(
        "/v1/chat/completions",
        {"model": "claude", "messages": [{"role": "user", "content": "x"}]},
        gateway_key,
    )
    assert status == 502
    assert answer["error"]["type"] == "upstream_error"
    assert fake_anthropic.API_KEY not in json.dumps(answer)
    logs = provider_gateway.logs()
    for secret in (fake_anthropic.API_KEY, fake_gemini.API_KEY):
        assert secret not in logs


@pytest.mark.parametrize("vendor", ["anthropic", "gemini"])
def test_a_stream_the_upstream_cuts_ends_with_an_error_event_not_done(
    provider_gateway: GatewayProcess,
    gateway_key: str,
    anthropic_upstream: FakeAnthropic,
    gemini_upstream: FakeGemini,
    vendor: str,
) -> None:
    if vendor == "anthropic":
        anthropic_upstream.default = fake_anthropic.Reply(error_mid_stream="overloaded_error")
    else:
        gemini_upstream.default = fake_gemini.Reply(error_mid_stream=True)
    body = {"model": MODELS[vendor], "stream": True, "messages": [{"role": "user", "content": "x"}]}
    status, _, raw = provider_gateway.post("/v1/chat/completions", body, gateway_key)
    assert status == 200
    events = [line for line in raw.splitlines() if line.startswith(b"data:")]
    assert b"content" in events[0]  # the text before the failure reached the client
    assert json.loads(events[-1][5:])["error"]["type"] == "upstream_error"
    assert b"[DONE]" not in raw
