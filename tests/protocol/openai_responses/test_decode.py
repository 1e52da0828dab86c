"""Decoding a Responses request (``relaygate.protocol.openai_responses.decode``) and its
translation into the internal chat request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relaygate.errors import InvalidRequest
from relaygate.protocol.openai_responses.decode import decode_responses_request, to_chat
from relaygate.protocol.types import AssistantMessage, ImagePart, ToolMessage, UserMessage


def body(**fields: Any) -> bytes:
    request: dict[str, Any] = {"model": "gpt-5.5", "input": "hi", **fields}
    return json.dumps({k: v for k, v in request.items() if v is not None}).encode()


def rejected(raw: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        chat(raw)
    assert info.value.status == 400
    return info.value


def chat(raw: bytes) -> tuple[Any, dict[str, Any]]:
    call = decode_responses_request(raw)
    return to_chat(call, call.items)


def test_a_string_input_is_one_user_message() -> None:
    request, raw = chat(body(instructions="Be brief.", max_output_tokens=50, temperature=0.5))
    assert raw["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert request.max_completion_tokens == 50
    assert request.temperature == 0.5
    assert "store" not in raw
    assert "metadata" not in raw


def test_items_become_messages_tool_calls_and_tool_results() -> None:
    items = [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is in"},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Let me look.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_2", "name": "look", "arguments": "{\"x\":1}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "a dog"}]},
    ]  # fmt: skip
    tools = [{"type": "function", "name": "look", "parameters": {"type": "object"}}]
    request, raw = chat(body(input=items, tools=tools, tool_choice="required"))
    roles = [m["role"] for m in raw["messages"]]
    assert roles == ["developer", "user", "assistant", "tool", "tool"]  # reasoning dropped
    user = request.messages[1]
    assert isinstance(user, UserMessage)
    assert isinstance(user.content, list)
    assert isinstance(user.content[1], ImagePart)
    assert user.content[1].image_url.detail == "low"
    assistant = request.messages[2]
    assert isinstance(assistant, AssistantMessage)
    assert assistant.content == "Let me look."
    assert [c["id"] for c in assistant.tool_calls or []] == ["call_1", "call_2"]
    tool = request.messages[4]
    assert isinstance(tool, ToolMessage)
    assert tool.content == "a dog"
    assert raw["tools"] == [
        {"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}
    ]
    assert raw["tool_choice"] == "required"


def test_options_map_to_chat_fields() -> None:
    _, raw = chat(body(
        reasoning={"effort": "high", "summary": "auto"},
        text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"},
                         "strict": True}, "verbosity": "low"},
        top_p=0.9, parallel_tool_calls=False, store=False, metadata={"a": "b"},
        include=["reasoning.encrypted_content"], prompt_cache_key="k", stream=True,
        tool_choice={"type": "function", "name": "f"},
        tools=[{"type": "function", "name": "f", "parameters": None, "strict": None}],
    ))  # fmt: skip
    assert raw["reasoning_effort"] == "high"
    assert raw["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }
    assert raw["verbosity"] == "low"
    assert raw["top_p"] == 0.9
    assert raw["parallel_tool_calls"] is False
    assert raw["prompt_cache_key"] == "k"
    assert raw["stream"] is True
    assert raw["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_namespaced_tools_are_flattened() -> None:
    tools = [{"type": "namespace", "name": "agents", "description": "d", "tools": [
        {"type": "function", "name": "spawn", "strict": False, "parameters": {}}]}]  # fmt: skip
    items = [{"type": "function_call", "call_id": "c", "name": "spawn", "namespace": "agents",
              "arguments": "{}"}]  # fmt: skip
    _, raw = chat(body(input=items, tools=tools))
    assert raw["tools"][0]["function"]["name"] == "agents__spawn"
    assert raw["messages"][0]["tool_calls"][0]["function"]["name"] == "agents__spawn"


def test_codex_client_metadata_is_accepted() -> None:
    chat(body(client_metadata={"thread_id": "t"}))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        pytest.param({"frobnicate": 1}, "frobnicate", id="unknown-field"),
        pytest.param({"conversation": "conv_1"}, "conversation", id="conversation"),
        pytest.param({"background": True}, "background", id="background"),
        pytest.param({"prompt": {"id": "p"}}, "prompt", id="prompt"),
        pytest.param({"temperature": 3}, "temperature", id="temperature"),
        pytest.param({"max_output_tokens": 0}, "max_output_tokens", id="max-output"),
        pytest.param({"model": ""}, "model", id="model"),
        pytest.param({"input": 3}, "input", id="input-type"),
        pytest.param({"input": []}, "input", id="input-empty"),
        pytest.param({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type",
                     id="item-reference"),
        pytest.param({"input": [{"role": "user", "content": [{"type": "input_file",
                      "file_id": "f"}]}]}, "input[0].content[0]", id="input-file"),
        pytest.param({"input": [{"role": "user", "content": [{"type": "input_image",
                      "file_id": "f"}]}]}, "input[0].content[0].image_url", id="image-file-id"),
        pytest.param({"input": [{"role": "system", "content": [{"type": "input_image",
                      "image_url": "https://e.com/a.png"}]}]}, "input[0].content[0]",
                     id="image-in-system"),
        pytest.param({"input": [{"role": "user", "content": "x", "colour": 1}]},
                     "input[0].colour", id="item-unknown-field"),
        pytest.param({"input": [{"role": "robot", "content": "x"}]}, "input[0].role",
                     id="role"),
        pytest.param({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
                     "input[0].call_id", id="call-id-missing"),
        pytest.param({"tools": [{"type": "web_search"}]}, "tools[0].type", id="hosted-tool"),
        pytest.param({"tools": [{"type": "function"}]}, "tools[0].name", id="tool-name"),
        pytest.param({"tool_choice": "sometimes"}, "tool_choice", id="tool-choice"),
        pytest.param({"tool_choice": {"type": "function", "name": "g"}}, "tool_choice.name",
                     id="tool-choice-unknown-function"),
        pytest.param({"text": {"format": {"type": "yaml"}}}, "text.format.type", id="format"),
        pytest.param({"reasoning": {"effort": "max"}}, "reasoning.effort", id="effort"),
        pytest.param({"include": ["file_search_call.results"]}, "include[0]", id="include"),
        pytest.param({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata",
                     id="metadata-size"),
        pytest.param({"previous_response_id": "x" * 300}, "previous_response_id",
                     id="previous-id-length"),
    ],
)
def test_bad_input_names_its_param(fields: dict[str, Any], param: str) -> None:
    error = rejected(body(**fields))
    assert error.param == param, error.message


def test_a_deep_body_is_refused_by_depth_not_recursion() -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    error = rejected(body(input=[{"role": "user", "content": "x", "id": deep}]))
    assert "nested too deeply" in error.message


def test_an_unknown_field_name_is_quoted_as_an_excerpt() -> None:
    error = rejected(body(**{"x" * 1000: 1}))
    assert len(error.message) < 200
