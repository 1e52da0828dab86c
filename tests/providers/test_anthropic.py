"""The Anthropic provider: request translation (checked against the SDK's types), answers and
streams from the fake Messages API, stop reasons, usage, and every error path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relaygate.errors import (
    InvalidRequest,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamUnreachable,
)
from relaygate.providers.anthropic import AnthropicOptions, AnthropicProvider, build_body
from relaygate.providers.base import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers import fake_anthropic
from tests.providers.fake_anthropic import FakeAnthropic, Reply, ToolUse, request_problems
from tests.providers.support import PNG, WEATHER, call, collect, completion, drain
from tests.support.gateway import free_port


def body_for(extra: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude",
        "messages": [{"role": "user", "content": "Hello"}],
    }
    return {**base, **(extra or {}), **fields}


def translate(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    settings = AnthropicOptions(**options)
    translated = build_body(call(body, "claude-sonnet-4-5"), settings)
    assert request_problems(translated, settings.api_version) == []
    return translated


def provider(
    fake: FakeAnthropic, session: UpstreamClient, **settings: Any
) -> AnthropicProvider:
    config = {
        "provider": "anthropic",
        "name": "claude-upstream",
        "base_url": fake.base_url,
        "api_key": fake_anthropic.API_KEY,
        **settings,
    }
    return AnthropicProvider(UpstreamSettings(**config), session)


# --- request translation ----------------------------------------------------------------------


def test_a_whole_conversation_translates_to_messages_and_system() -> None:
    body = translate(
        body_for(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
                {"role": "user", "content": "Weather in Berlin and Paris?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"location": "Berlin"}',
                            },
                        },
                        {
                            "id": "toolu_2",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"location": "Paris"}',
                            },
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "12 C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "15 C"},
                {"role": "user", "content": "Thanks, and tomorrow?"},
            ],
            tools=[WEATHER],
        )
    )
    assert body["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Use metric."},
    ]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assistant = body["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "Checking."}
    assert assistant[1] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"location": "Berlin"},
    }
    # both tool results and the next user text are one user turn, results first
    results = body["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text"]
    assert results[1] == {"type": "tool_result", "tool_use_id": "toolu_2", "content": "15 C"}
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "auto"}


def test_images_become_base64_and_url_sources() -> None:
    content = [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    body = translate(body_for(messages=[{"role": "user", "content": content}]))
    blocks = body["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        pytest.param("data:image/png;base64", "no ','", id="no-comma"),
        pytest.param("data:image/png;base64,@@@", "not base64", id="not-base64"),
        pytest.param("data:image/bmp;base64,AAAA", "Unsupported image type", id="bmp"),
    ],
)
def test_unreadable_data_urls_are_a_400_naming_the_part(url: str, problem: str) -> None:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(InvalidRequest, match=problem) as caught:
        translate(body_for(messages=[{"role": "user", "content": content}]))
    assert caught.value.param == "messages[0].content[0]"


def test_sampling_fields_and_limits() -> None:
    body = translate(
        body_for(
            temperature=1.6,
            top_p=0.9,
            top_k=40,
            stop="END",
            max_completion_tokens=300,
            max_tokens=999,
            user="user-42",
        )
    )
    assert body["temperature"] == 1.0  # Anthropic's range ends at 1
    assert (body["top_p"], body["top_k"]) == (0.9, 40)
    assert body["stop_sequences"] == ["END"]
    assert body["max_tokens"] == 300  # max_completion_tokens wins
    assert body["metadata"] == {"user_id": "user-42"}
    assert "stream" not in body


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        pytest.param({}, True, id="2023-06-01"),
        pytest.param({"version": "2026-10-21"}, False, id="2026-10-21"),
        pytest.param({"sampling": False}, False, id="sampling-off"),
        pytest.param({"version": "2026-10-21", "sampling": True}, True, id="sampling-on"),
    ],
)
def test_sampling_fields_follow_the_api_version(options: dict[str, Any], sent: bool) -> None:
    body = build_body(
        call(body_for(temperature=0.5, top_p=0.9, top_k=3)), AnthropicOptions(**options)
    )
    assert ("temperature" in body, "top_p" in body, "top_k" in body) == (sent, sent, sent)


def test_max_tokens_defaults_to_the_option() -> None:
    assert translate(body_for())["max_tokens"] == 4096
    assert translate(body_for(), max_tokens=1000)["max_tokens"] == 1000
    assert translate(body_for(max_tokens=77))["max_tokens"] == 77


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        pytest.param("auto", None, {"type": "auto"}, id="auto"),
        pytest.param("none", None, {"type": "none"}, id="none"),
        pytest.param("required", None, {"type": "any"}, id="required"),
        pytest.param(
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
            id="named",
        ),
        pytest.param(
            "auto", False, {"type": "auto", "disable_parallel_tool_use": True}, id="no-parallel"
        ),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    extra: dict[str, Any] = {"tools": [WEATHER], "tool_choice": choice}
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    assert translate(body_for(extra))["tool_choice"] == expected


def test_non_function_tools_are_a_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate(body_for(tools=[{"type": "web_search"}]))
    assert caught.value.param == "tools[0]"


@pytest.mark.parametrize(
    ("effort", "max_tokens", "budget"),
    [
        pytest.param("low", 30000, 2048, id="low"),
        pytest.param("high", 30000, 24576, id="high"),
        pytest.param("high", 5000, 4999, id="below-max-tokens"),
        pytest.param("high", 1024, None, id="no-room"),
        pytest.param("none", 30000, None, id="none"),
    ],
)
def test_reasoning_effort_sets_a_thinking_budget(
    effort: str, max_tokens: int, budget: int | None
) -> None:
    body = translate(body_for(reasoning_effort=effort, max_completion_tokens=max_tokens))
    if budget is None:
        assert "thinking" not in body
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}


def test_no_thinking_right_after_a_tool_call_turn() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
    ]
    body = translate(body_for(messages=messages, reasoning_effort="high", tools=[WEATHER]))
    assert "thinking" not in body


def test_json_schema_response_format_becomes_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = translate(body_for(response_format=response_format))
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


@pytest.mark.parametrize(
    ("field", "value"),
    [pytest.param("n", 2, id="n"), pytest.param("tool_calls", "[1]", id="bad-arguments")],
)
def test_requests_anthropic_cannot_take_are_a_400(field: str, value: Any) -> None:
    if field == "n":
        body = body_for(n=2)
    else:
        call_ = {"id": "t", "type": "function", "function": {"name": "f", "arguments": value}}
        body = body_for(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [call_]},
            ]
        )
    with pytest.raises(InvalidRequest):
        translate(body)


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_text_answer_with_cache_usage(
    anthropic_upstream: FakeAnthropic, session: UpstreamClient, stream: bool
) -> None:
    anthropic_upstream.default = Reply(
        text="Hi there, friend.", input_tokens=10, output_tokens=6, cache_read=100, cache_write=50
    )
    events = await collect(
        provider(anthropic_upstream, session), call(body_for(stream=stream, top_k=5), "claude-x")
    )
    answer = completion(events)
    assert answer.choices[0].message.content == "Hi there, friend."
    assert answer.choices[0].finish_reason == "stop"
    usage = answer.usage
    # OpenAI's meaning: the prompt includes cache reads and writes; only reads are "cached"
    assert (usage.prompt_tokens, usage.completion_tokens) == (160, 6)
    assert usage.prompt_tokens_details.cached_tokens == 100
    sent = anthropic_upstream.received[-1]
    assert sent.path == "/v1/messages"
    assert sent.body["top_k"] == 5
    assert sent.headers["x-api-key"] == fake_anthropic.API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["model"] == "claude-x"
    assert sent.body.get("stream", False) is stream
    if stream:
        assert sum(isinstance(e, TextDelta) for e in events) == 3  # streamed as it came


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_thinking_and_tool_use(
    anthropic_upstream: FakeAnthropic, session: UpstreamClient, stream: bool
) -> None:
    anthropic_upstream.default = Reply(
        thinking="The user wants weather.",
        text="Let me check.",
        tool=ToolUse(id="toolu_9", name="get_weather", input={"location": "Oslo"}),
        stop_reason="tool_use",
        output_tokens=40,
        thinking_tokens=12,
    )
    body = body_for(stream=stream, tools=[WEATHER], reasoning_effort="low", max_tokens=5000)
    events = await collect(provider(anthropic_upstream, session), call(body))
    message = completion(events).choices[0].message
    assert message.reasoning_content == "The user wants weather."
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    tool = message.tool_calls[0]
    assert tool.function is not None
    assert (tool.id, tool.function.name) == ("toolu_9", "get_weather")
    assert json.loads(tool.function.arguments) == {"location": "Oslo"}
    assert completion(events).choices[0].finish_reason == "tool_calls"
    usage = [e for e in events if isinstance(e, TokenUsage)][-1]
    assert (usage.completion_tokens, usage.reasoning_tokens) == (40, 12)
    assert anthropic_upstream.received[-1].body["thinking"] == {
        "type": "enabled",
        "budget_tokens": 2048,
    }
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    if stream:  # the call's id and name first, then its arguments in pieces
        assert (deltas[0].id, deltas[0].name, deltas[0].arguments) == ("toolu_9", "get_weather", "")
        assert len(deltas) == 3
        assert all(d.id is None and d.tool_index == 0 for d in deltas[1:])


async def test_reasoning_tokens_are_estimated_when_the_api_does_not_report_them(
    anthropic_upstream: FakeAnthropic, session: UpstreamClient
) -> None:
    anthropic_upstream.default = Reply(thinking="x" * 40, text="ok", output_tokens=30)
    events = await collect(provider(anthropic_upstream, session), call(body_for()))
    usage = [e for e in events if isinstance(e, TokenUsage)][-1]
    assert usage.reasoning_tokens == 10  # 40 characters, about four a token
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["x" * 40]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        pytest.param("end_turn", "stop", id="end_turn"),
        pytest.param("stop_sequence", "stop", id="stop_sequence"),
        pytest.param("max_tokens", "length", id="max_tokens"),
        pytest.param("tool_use", "tool_calls", id="tool_use"),
        pytest.param("refusal", "content_filter", id="refusal"),
        pytest.param("model_context_window_exceeded", "length", id="context-window"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_stop_reasons_map_to_finish_reasons(
    anthropic_upstream: FakeAnthropic,
    session: UpstreamClient,
    stop_reason: str,
    finish: str,
    stream: bool,
) -> None:
    anthropic_upstream.default = Reply(stop_reason=stop_reason)
    events = await collect(provider(anthropic_upstream, session), call(body_for(stream=stream)))
    assert [e.reason for e in events if isinstance(e, Finish)] == [finish]


# --- errors ----------------------------------------------------------------------------------


async def test_an_error_event_mid_stream_ends_it_with_an_error(
    anthropic_upstream: FakeAnthropic, session: UpstreamClient
) -> None:
    anthropic_upstream.default = Reply(error_mid_stream="overloaded_error")
    seen: list[Event] = []
    events = provider(anthropic_upstream, session).events(call(body_for(stream=True)))
    with pytest.raises(UpstreamProtocolError, match="overloaded_error") as caught:
        await drain(events, seen)
    assert any(isinstance(e, TextDelta) for e in seen)  # it failed after content
    assert fake_anthropic.API_KEY not in caught.value.message


async def test_an_error_event_before_any_content_may_be_retried(
    anthropic_upstream: FakeAnthropic, session: UpstreamClient
) -> None:
    anthropic_upstream.default = Reply(error_first="overloaded_error")
    events = provider(anthropic_upstream, session).events(call(body_for(stream=True)))
    with pytest.raises(UpstreamStatus) as caught:
        await anext(events)  # before Started
    assert caught.value.upstream_status == 529
    assert caught.value.retryable


async def test_a_cut_stream_is_an_error_not_a_clean_end(
    anthropic_upstream: FakeAnthropic, session: UpstreamClient
) -> None:
    anthropic_upstream.default = Reply(cut=True)
    with pytest.raises((UpstreamProtocolError, UpstreamUnreachable)) as caught:
        await collect(provider(anthropic_upstream, session), call(body_for(stream=True)))
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        pytest.param(429, "rate_limit_error", True, id="429"),
        pytest.param(529, "overloaded_error", True, id="529"),
        pytest.param(500, "api_error", True, id="500"),
        pytest.param(400, "invalid_request_error", False, id="400"),
    ],
)
async def test_error_statuses(
    anthropic_upstream: FakeAnthropic,
    session: UpstreamClient,
    status: int,
    kind: str,
    retryable: bool,
) -> None:
    secret_body = f"boom RAW-BODY {fake_anthropic.API_KEY}"
    anthropic_upstream.default = Reply(
        status=status, error_type=kind, error_message=secret_body, retry_after="3"
    )
    with pytest.raises(UpstreamStatus) as caught:
        await collect(provider(anthropic_upstream, session), call(body_for()))
    error = caught.value
    assert (error.upstream_status, error.retryable, error.retry_after) == (status, retryable, 3.0)
    assert fake_anthropic.API_KEY not in error.message
    assert "claude-upstream" in error.message


async def test_wrong_credentials_are_named_and_not_retryable(
    anthropic_upstream: FakeAnthropic, session: UpstreamClient
) -> None:
    wrong = provider(anthropic_upstream, session, api_key="sk-ant-wrong-key-000000")
    with pytest.raises(UpstreamStatus) as caught:
        await collect(wrong, call(body_for()))
    assert caught.value.upstream_status == 401
    assert not caught.value.retryable
    assert "credentials" in caught.value.message
    assert "sk-ant-wrong" not in caught.value.message


async def test_api_version_2026_10_21_without_sampling_fields(
    anthropic_upstream: FakeAnthropic, session: UpstreamClient
) -> None:
    newer = provider(anthropic_upstream, session, options={"version": "2026-10-21"})
    events = await collect(newer, call(body_for(temperature=0.2, top_k=4)))
    assert completion(events).choices[0].message.content == "Hello from the fake Claude."
    sent = anthropic_upstream.received[-1]
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert "temperature" not in sent.body


async def test_unreachable_upstream(session: UpstreamClient) -> None:
    settings = UpstreamSettings(
        provider="anthropic", base_url=f"http://127.0.0.1:{free_port()}", api_key="k"
    )
    with pytest.raises(UpstreamUnreachable) as caught:
        await collect(AnthropicProvider(settings, session), call(body_for()))
    assert caught.value.retryable


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"unknown": 1}, id="unknown"),
        pytest.param({"max_tokens": 0}, id="max-tokens-zero"),
        pytest.param({"version": 5}, id="version-type"),
    ],
)
def test_check_options_rejects_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="options"):
        AnthropicProvider.check_options(UpstreamSettings(provider="anthropic", options=options))
