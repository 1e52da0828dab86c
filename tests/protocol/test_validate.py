"""Decoding and validating a chat-completions body (``relaygate.protocol.validate``), and what
the gateway passes on to an OpenAI-compatible upstream."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from relaygate.errors import InvalidRequest
from relaygate.protocol.types import (
    AssistantMessage,
    ImagePart,
    SystemMessage,
    TextPart,
    UserMessage,
)
from relaygate.protocol.validate import decode_chat_request, images_of
from tests.conftest import catalog
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess

USER: dict[str, Any] = {"role": "user", "content": "hi"}
IMAGE: dict[str, Any] = {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}


def body(**fields: Any) -> bytes:
    """A valid request with ``fields`` changed (``None`` removes a field)."""
    request: dict[str, Any] = {"model": "gpt-5.5", "messages": [USER], **fields}
    return json.dumps({k: v for k, v in request.items() if v is not None}).encode()


def rejected(raw: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        decode_chat_request(raw)
    error = info.value
    assert error.status == 400
    assert error.type == "invalid_request_error"
    return error


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


# --- sampling ranges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("temperature", 0, id="temperature-0"),
        pytest.param("temperature", 0.7, id="temperature-0.7"),
        pytest.param("temperature", 2, id="temperature-2"),
        pytest.param("temperature", 2.0, id="temperature-2.0"),
        pytest.param("top_p", 0, id="top_p-0"),
        pytest.param("top_p", 0.9, id="top_p-0.9"),
        pytest.param("top_p", 1, id="top_p-1"),
        pytest.param("top_k", 1, id="top_k-1"),
        pytest.param("top_k", 40, id="top_k-40"),
        pytest.param("max_tokens", 1, id="max_tokens-1"),
        pytest.param("max_completion_tokens", 1, id="max_completion_tokens-1"),
    ],
)
def test_values_in_range_are_accepted(field: str, value: float) -> None:
    request, raw = decode_chat_request(body(**{field: value}))
    assert getattr(request, field) == value
    assert raw[field] == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("temperature", -0.1, id="temperature-below-0"),
        pytest.param("temperature", 2.1, id="temperature-above-2"),
        pytest.param("temperature", "0.5", id="temperature-string"),
        pytest.param("temperature", True, id="temperature-bool"),
        pytest.param("top_p", -0.1, id="top_p-below-0"),
        pytest.param("top_p", 1.01, id="top_p-above-1"),
        pytest.param("top_k", 0, id="top_k-0"),
        pytest.param("top_k", -3, id="top_k-negative"),
        pytest.param("top_k", 1.5, id="top_k-fraction"),
        pytest.param("max_tokens", 0, id="max_tokens-0"),
        pytest.param("max_tokens", -1, id="max_tokens-negative"),
        pytest.param("max_completion_tokens", 0, id="max_completion_tokens-0"),
        pytest.param("n", 0, id="n-0"),
        pytest.param("stream", "yes", id="stream-string"),
    ],
)
def test_values_out_of_range_are_rejected_naming_the_field(field: str, value: Any) -> None:
    error = rejected(body(**{field: value}))
    assert error.param == field
    assert f"'{field}'" in error.message


def test_a_number_beyond_float_range_is_not_called_a_non_object() -> None:
    # JSON has no infinity, but 1e400 is a valid JSON number that no float can hold
    raw = body(temperature=1).replace(b'"temperature": 1', b'"temperature": 1e400')
    error = rejected(raw)
    assert "must be a JSON object" not in error.message, error.message


# --- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([USER], id="content-string"),
        pytest.param(user({"type": "text", "text": "hello"}), id="text-part"),
        pytest.param(user({"type": "text", "text": "what is it?"}, IMAGE), id="text-and-image"),
        pytest.param(
            user({"type": "image_url", "image_url": {"url": "https://e.com/a.webp",
                                                     "detail": "high"}}),
            id="image-with-detail",
        ),
        pytest.param(
            user({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}),
            id="data-url-image",
        ),
        pytest.param(
            [{"role": "system", "content": "be brief"}, USER,
             {"role": "assistant", "content": "hello"}, USER],
            id="multi-turn-with-system",
        ),
        pytest.param([{"role": "developer", "content": "be brief"}, USER], id="developer"),
        pytest.param(
            [USER,
             {"role": "assistant", "content": None,
              "tool_calls": [{"id": "c1", "type": "function",
                              "function": {"name": "f", "arguments": "{}"}}]},
             {"role": "tool", "tool_call_id": "c1", "content": "42"}],
            id="tool-round-trip",
        ),
    ],
)
def test_valid_messages_are_accepted(messages: list[dict[str, Any]]) -> None:
    request, raw = decode_chat_request(body(messages=messages))
    assert len(request.messages) == len(messages)
    assert raw["messages"] == messages


def test_messages_decode_to_typed_parts() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        *user({"type": "text", "text": "what is it?"}, IMAGE),
        {"role": "assistant", "content": "a cat"},
    ]
    request, _ = decode_chat_request(body(messages=messages))
    system, asker, answer = request.messages
    assert isinstance(system, SystemMessage)
    assert isinstance(asker, UserMessage)
    assert isinstance(answer, AssistantMessage)
    assert isinstance(asker.content, list)
    text, image = asker.content
    assert text == TextPart("what is it?")
    assert isinstance(image, ImagePart)
    assert image.image_url.url == "https://e.com/a.png"
    assert images_of(request) == [(1, 1, image)]


@pytest.mark.parametrize(
    ("messages", "param", "mentions"),
    [
        pytest.param([], "messages", "length >= 1", id="no-messages"),
        pytest.param(None, "messages", "messages", id="missing-messages"),
        pytest.param("hello", "messages", "array", id="messages-not-a-list"),
        pytest.param([{"role": "robot", "content": "x"}], "messages[0].role", "robot",
                     id="unknown-role"),
        pytest.param([USER, {"role": "admin", "content": "x"}], "messages[1].role", "admin",
                     id="unknown-role-second-message"),
        pytest.param([{"content": "x"}], "messages[0].role", "role", id="missing-role"),
        pytest.param([{"role": "user"}], "messages[0].content", "content",
                     id="missing-content"),
        pytest.param([{"role": "user", "content": 42}], "messages[0].content", "int",
                     id="content-a-number"),
        pytest.param(user({"type": "text", "text": "a"}, {"type": "audio", "data": "..."}),
                     "messages[0].content[1].type", "audio", id="unknown-part-type"),
        pytest.param(user({"text": "a"}), "messages[0].content[0].type", "type",
                     id="part-without-type"),
        pytest.param(user({"type": "text"}), "messages[0].content[0].text", "text",
                     id="text-part-without-text"),
        pytest.param(user({"type": "image_url", "image_url": {}}),
                     "messages[0].content[0].image_url.url", "url", id="image-without-url"),
        pytest.param(user({"type": "image_url", "image_url": {"url": ""}}),
                     "messages[0].content[0].image_url.url", "length >= 1",
                     id="image-with-empty-url"),
        pytest.param(user({"type": "image_url"}), "messages[0].content[0].image_url",
                     "image_url", id="image-part-without-image_url"),
        pytest.param(user({"type": "image_url", "image_url": {"url": "https://e.com/a.png",
                                                               "detail": "ultra"}}),
                     "messages[0].content[0].image_url.detail", "ultra",
                     id="image-unknown-detail"),
        pytest.param([{"role": "system", "content": [IMAGE]}], "messages[0].content[0].type",
                     "image_url", id="image-in-system-message"),
        pytest.param([{"role": "tool", "content": "42"}], "messages[0].tool_call_id",
                     "tool_call_id", id="tool-without-call-id"),
    ],
)
def test_invalid_messages_are_rejected_naming_the_place(
    messages: Any, param: str, mentions: str
) -> None:
    error = rejected(body(messages=messages))
    assert error.param == param
    assert f"'{param}'" in error.message
    assert mentions in error.message


# --- model and body ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        pytest.param(json.dumps({"messages": [USER]}).encode(), "model", id="missing-model"),
        pytest.param(body(model=""), "model", id="empty-model"),
        pytest.param(body(model=5), "model", id="model-a-number"),
    ],
)
def test_model_is_required(raw: bytes, param: str) -> None:
    assert rejected(raw).param == param


@pytest.mark.parametrize(
    ("raw", "mentions"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"{", "not valid JSON", id="truncated"),
        pytest.param(b'{"model": "gpt-5.5",}', "not valid JSON", id="trailing-comma"),
        pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
        pytest.param(b"[]", "JSON object", id="array"),
        pytest.param(b"42", "JSON object", id="number"),
        pytest.param(b"null", "JSON object", id="null"),
    ],
)
def test_unreadable_bodies_are_rejected_without_a_param(raw: bytes, mentions: str) -> None:
    error = rejected(raw)
    assert error.param is None
    assert mentions in error.message


def test_unlisted_fields_are_kept_in_the_raw_body() -> None:
    extra = {"logprobs": True, "metadata": {"team": "a"}, "parallel_tool_calls": False}
    request, raw = decode_chat_request(body(**extra))
    assert request.model == "gpt-5.5"
    for name, value in extra.items():
        assert raw[name] == value


# --- what reaches the upstream -----------------------------------------------------------


@pytest.fixture
def topk_gateway(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> GatewayProcess:
    models = catalog(upstream.base_url)["models"]
    models["topk-model"] = {
        "pricing": {"input": "1", "output": "1"},
        "upstreams": [{"provider": "openai", "base_url": upstream.base_url,
                       "api_key": "sk-upstream-SECRET-0123456789", "model": "topk-upstream",
                       "options": {"supports_top_k": True}}],
    }
    return make_gateway(models=models)


def test_unlisted_fields_pass_through_and_top_k_is_dropped(
    topk_gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    gateway = topk_gateway
    key = gateway.create_key("--credits", "10")["key"]
    extra: dict[str, Any] = {
        "logprobs": True,
        "top_logprobs": 2,
        "metadata": {"team": "search", "ticket": "T-1"},
        "parallel_tool_calls": False,
        "x_vendor_option": {"nested": [1, "two", None]},
        "temperature": 0.3,
        "seed": 7,
    }
    messages = [{"role": "system", "content": "be brief"}, USER]
    sent = {"model": "gpt-5.2", "messages": messages, "top_k": 40, **extra}
    status, _, answer = gateway.post("/v1/chat/completions", sent, key)
    assert status == 200, answer
    forwarded = upstream.received[-1].body
    for name, value in extra.items():
        assert forwarded[name] == value, name
    assert forwarded["messages"] == messages
    assert "top_k" not in forwarded  # OpenAI has no top_k
    assert forwarded["model"] == "gpt-5.2-upstream"  # the upstream's own name
    assert answer["model"] == "gpt-5.2"  # the client still sees the public name

    # an OpenAI-compatible server that declares top_k support gets it
    status, _, answer = gateway.post(
        "/v1/chat/completions", {**sent, "model": "topk-model"}, key
    )
    assert status == 200, answer
    forwarded = upstream.received[-1].body
    assert forwarded["top_k"] == 40
    assert forwarded["model"] == "topk-upstream"
    assert forwarded["metadata"] == extra["metadata"]
