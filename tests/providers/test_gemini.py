"""The Gemini provider: request translation (checked against the google-genai SDK's types),
answers and streams from the fake Gemini API, safety blocks, thoughts, usage, errors."""

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
from relaygate.providers.base import Finish, ReasoningDelta, TextDelta, TokenUsage
from relaygate.providers.gemini import (
    SIGNATURE_MARK,
    GeminiOptions,
    GeminiProvider,
    build_body,
)
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers import fake_gemini
from tests.providers.fake_gemini import FakeGemini, Reply, request_problems
from tests.providers.support import PNG, WEATHER, call, collect, completion


def body_for(**fields: Any) -> dict[str, Any]:
    return {"model": "gemini", "messages": [{"role": "user", "content": "Hello"}], **fields}


def translate(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    translated = build_body(call(body, "gemini-2.5-pro"), GeminiOptions(**options))
    assert request_problems(translated) == []
    return translated


def provider(fake: FakeGemini, session: UpstreamClient, **settings: Any) -> GeminiProvider:
    config = {
        "provider": "gemini",
        "name": "gemini-upstream",
        "base_url": fake.base_url,
        "api_key": fake_gemini.API_KEY,
        **settings,
    }
    return GeminiProvider(UpstreamSettings(**config), session)


# --- request translation ----------------------------------------------------------------------


def test_roles_system_instruction_and_a_tool_round_trip() -> None:
    call_id = f"call_abc{SIGNATURE_MARK}c2lnbmF0dXJl"
    body = translate(
        body_for(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use metric."},
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call_id, "content": '{"celsius": 4}'},
                {"role": "tool", "tool_call_id": "unknown", "content": "not json"},
                {"role": "assistant", "content": "It is 4 C."},
            ],
            tools=[WEATHER],
        )
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use metric."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "model"]
    function_call = body["contents"][1]["parts"][0]
    assert function_call == {
        "functionCall": {"name": "get_weather", "args": {"location": "Oslo"}},
        "thoughtSignature": "c2lnbmF0dXJl",  # given back from the tool call's id
    }
    responses = body["contents"][2]["parts"]
    assert responses[0] == {"functionResponse": {"name": "get_weather", "response": {"celsius": 4}}}
    assert responses[1]["functionResponse"]["response"] == {"result": "not json"}
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert declaration["parametersJsonSchema"] == WEATHER["function"]["parameters"]
    assert "toolConfig" not in body


def test_images_become_inline_data_and_file_data() -> None:
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.webp?x=1"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photo"}},
    ]
    parts = translate(body_for(messages=[{"role": "user", "content": content}]))["contents"][0][
        "parts"
    ]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert parts[2] == {
        "fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/cat.webp?x=1"}
    }
    assert parts[3]["fileData"]["mimeType"] == "image/jpeg"


def test_generation_config() -> None:
    body = translate(
        body_for(
            temperature=1.5,
            top_p=0.8,
            top_k=20,
            max_completion_tokens=512,
            stop=["END", "STOP"],
            n=2,
            seed=7,
            presence_penalty=0.5,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
        )
    )
    assert body["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.8,
        "topK": 20,
        "maxOutputTokens": 512,
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.5,
        "stopSequences": ["END", "STOP"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }


@pytest.mark.parametrize(
    ("effort", "options", "thinking"),
    [
        pytest.param(
            "high", {}, {"includeThoughts": True, "thinkingBudget": 24576}, id="budget-high"
        ),
        pytest.param("none", {}, {"includeThoughts": False, "thinkingBudget": 0}, id="budget-none"),
        pytest.param(
            "low",
            {"thinking_level": True},
            {"includeThoughts": True, "thinkingLevel": "LOW"},
            id="level-low",
        ),
    ],
)
def test_reasoning_effort_becomes_a_thinking_config(
    effort: str, options: dict[str, Any], thinking: dict[str, Any]
) -> None:
    body = translate(body_for(reasoning_effort=effort), **options)
    assert body["generationConfig"]["thinkingConfig"] == thinking


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        pytest.param("auto", {"mode": "AUTO"}, id="auto"),
        pytest.param("none", {"mode": "NONE"}, id="none"),
        pytest.param("required", {"mode": "ANY"}, id="required"),
        pytest.param(
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
            id="named",
        ),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    body = translate(body_for(tools=[WEATHER], tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_non_function_tools_are_a_400() -> None:
    with pytest.raises(InvalidRequest):
        translate(body_for(tools=[{"type": "code_interpreter"}]))


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_text_answer_and_usage(
    gemini_upstream: FakeGemini, session: UpstreamClient, stream: bool
) -> None:
    gemini_upstream.default = Reply(
        text="Hello there.",
        prompt_tokens=300,
        candidates_tokens=5,
        cached_tokens=200,
        image_tokens=258,
    )
    events = await collect(
        provider(gemini_upstream, session), call(body_for(stream=stream), "models/gemini-x")
    )
    answer = completion(events)
    assert answer.choices[0].message.content == "Hello there."
    assert answer.choices[0].finish_reason == "stop"
    usage = answer.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (300, 5)
    assert usage.prompt_tokens_details.cached_tokens == 200
    assert usage.prompt_tokens_details.image_tokens == 258
    assert [e for e in events if isinstance(e, TokenUsage)] == [events[-1]]  # once, at the end
    sent = gemini_upstream.received[-1]
    method = "streamGenerateContent" if stream else "generateContent"
    assert sent.path == f"/v1beta/models/gemini-x:{method}"
    assert sent.query == ({"alt": "sse"} if stream else {})
    assert sent.headers["x-goog-api-key"] == fake_gemini.API_KEY
    if stream:
        assert sum(isinstance(e, TextDelta) for e in events) == 3


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_thoughts_and_a_function_call(
    gemini_upstream: FakeGemini, session: UpstreamClient, stream: bool
) -> None:
    gemini_upstream.default = Reply(
        thoughts="Weather means the tool.",
        text="Checking.",
        call=("get_weather", {"location": "Oslo"}),
        signature="c2lnbmF0dXJl",
        candidates_tokens=9,
        thoughts_tokens=30,
    )
    body = body_for(stream=stream, tools=[WEATHER], reasoning_effort="medium")
    events = await collect(provider(gemini_upstream, session), call(body))
    answer = completion(events)
    message = answer.choices[0].message
    assert message.reasoning_content == "Weather means the tool."
    assert message.content == "Checking."
    assert message.tool_calls is not None
    tool = message.tool_calls[0]
    assert tool.function is not None
    assert tool.function.name == "get_weather"
    assert json.loads(tool.function.arguments) == {"location": "Oslo"}
    assert tool.id is not None
    assert tool.id.startswith("call_")
    assert tool.id.endswith(SIGNATURE_MARK + "c2lnbmF0dXJl")
    assert answer.choices[0].finish_reason == "tool_calls"  # Gemini says STOP
    usage = answer.usage
    assert usage.completion_tokens == 39  # candidates + thoughts
    assert usage.completion_tokens_details.reasoning_tokens == 30
    assert any(isinstance(e, ReasoningDelta) for e in events)


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        pytest.param("STOP", "stop", id="STOP"),
        pytest.param("MAX_TOKENS", "length", id="MAX_TOKENS"),
        pytest.param("SAFETY", "content_filter", id="SAFETY"),
        pytest.param("RECITATION", "content_filter", id="RECITATION"),
        pytest.param("BLOCKLIST", "content_filter", id="BLOCKLIST"),
        pytest.param("PROHIBITED_CONTENT", "content_filter", id="PROHIBITED_CONTENT"),
        pytest.param("SPII", "content_filter", id="SPII"),
        pytest.param("OTHER", "stop", id="OTHER"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_finish_reasons(
    gemini_upstream: FakeGemini,
    session: UpstreamClient,
    reason: str,
    finish: str,
    stream: bool,
) -> None:
    gemini_upstream.default = Reply(finish_reason=reason)
    events = await collect(provider(gemini_upstream, session), call(body_for(stream=stream)))
    assert [e.reason for e in events if isinstance(e, Finish)] == [finish]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_blocked_prompt_is_content_filter(
    gemini_upstream: FakeGemini, session: UpstreamClient, stream: bool
) -> None:
    gemini_upstream.default = Reply(block_reason="SAFETY", prompt_tokens=12, candidates_tokens=0)
    events = await collect(provider(gemini_upstream, session), call(body_for(stream=stream)))
    answer = completion(events)
    assert answer.choices[0].finish_reason == "content_filter"
    assert answer.choices[0].message.content is None or answer.choices[0].message.content == ""
    assert answer.usage.prompt_tokens == 12


# --- errors ----------------------------------------------------------------------------------


async def test_a_bad_key_is_a_credentials_error_not_a_bad_request(
    gemini_upstream: FakeGemini, session: UpstreamClient
) -> None:
    wrong = provider(gemini_upstream, session, api_key="AIza-wrong-key-0000000")
    with pytest.raises(UpstreamStatus) as caught:
        await collect(wrong, call(body_for()))
    assert caught.value.upstream_status == 401  # Gemini's 400 API_KEY_INVALID
    assert not caught.value.retryable
    assert "AIza-wrong" not in caught.value.message


async def test_429_with_retry_after(
    gemini_upstream: FakeGemini, session: UpstreamClient
) -> None:
    gemini_upstream.default = Reply(
        status=429, error_status="RESOURCE_EXHAUSTED", error_message="quota", retry_after="2"
    )
    with pytest.raises(UpstreamStatus) as caught:
        await collect(provider(gemini_upstream, session), call(body_for()))
    assert (caught.value.upstream_status, caught.value.retry_after) == (429, 2.0)
    assert caught.value.retryable


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(cut=True), id="cut"),
        pytest.param(Reply(error_mid_stream=True, error_message="backend died"), id="error"),
    ],
)
async def test_a_broken_stream_is_an_error_not_a_clean_end(
    gemini_upstream: FakeGemini, session: UpstreamClient, reply: Reply
) -> None:
    gemini_upstream.default = reply
    with pytest.raises((UpstreamProtocolError, UpstreamUnreachable)) as caught:
        await collect(provider(gemini_upstream, session), call(body_for(stream=True)))
    assert not caught.value.retryable
    assert fake_gemini.API_KEY not in caught.value.message


def test_check_options_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="thinking_level"):
        GeminiProvider.check_options(UpstreamSettings(provider="gemini", options={"x": 1}))
