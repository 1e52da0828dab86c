"""Rendering provider events as a Responses object and its streamed events, checked with the
``openai`` SDK's own types (``openai.types.responses``)."""

from __future__ import annotations

import json
import typing
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent

from relaygate.errors import UpstreamProtocolError
from relaygate.protocol.openai_responses.decode import ResponsesCall, decode_responses_request
from relaygate.protocol.openai_responses.render import ResponseWriter
from relaygate.providers.base import (
    EncodedText,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)

_union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], discriminator]
EVENT_TYPES: dict[str, Any] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls for cls in typing.get_args(_union)
}
"""The SDK's class of each stream event, by its ``type``."""
USAGE = TokenUsage(
    prompt_tokens=30, completion_tokens=12, cached_tokens=10, reasoning_tokens=4,
    cache_write_tokens=5, cache_write_1h_tokens=2,
)  # fmt: skip
TOOLS = [
    {"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": False},
    {"type": "namespace", "name": "agents", "description": "d",
     "tools": [{"type": "function", "name": "spawn", "parameters": {}, "strict": False}]},
]  # fmt: skip


def call(**fields: Any) -> ResponsesCall:
    body = {"model": "gpt-5.5", "input": "hi", "tools": TOOLS, **fields}
    return decode_responses_request(json.dumps(body).encode())


def events_of(data: bytes) -> list[dict[str, Any]]:
    """The stream's events, each checked as the SDK's event type; the ``event:`` line agrees."""
    out = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        name, payload = block.split("\n")
        event = json.loads(payload.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        EVENT_TYPES[event["type"]].model_validate(event)
        out.append(event)
    return out


def stream(events: list[Event], usage: TokenUsage = USAGE, **fields: Any) -> list[dict[str, Any]]:
    writer = ResponseWriter(call(**fields), "resp_1", "gpt-5.5", 1_700_000_000, stream=True)
    data = writer.start()
    for event in events:
        data += writer.feed(event) or b""
    return events_of(data + writer.end(usage))


ANSWER: list[Event] = [
    ReasoningDelta("thinking "),
    ReasoningDelta("hard"),
    TextDelta("Hello"),
    EncodedText([b'" wor"', b'"ld\\n"']),
    ToolCallDelta(0, id="call_a", name="shell", arguments='{"cmd"'),
    ToolCallDelta(0, arguments=': "ls"}'),
    ToolCallDelta(1, id="call_b", name="agents__spawn", arguments="{}"),
    Finish("tool_calls"),
    USAGE,
]


def test_the_stream_follows_openais_sequence() -> None:
    events = stream(ANSWER)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == "Hello world\n"
    calls = [e["item"] for e in events if e["type"] == "response.output_item.done"][2:]
    assert [(c["name"], c.get("namespace"), c["arguments"]) for c in calls] == [
        ("shell", None, '{"cmd": "ls"}'),
        ("spawn", "agents", "{}"),
    ]
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed"
    assert final.output_text == "Hello world\n"
    assert final.usage is not None
    assert final.usage.input_tokens == 30
    assert final.usage.input_tokens_details.cached_tokens == 10
    assert final.usage.input_tokens_details.cache_write_tokens == 7
    assert final.usage.output_tokens_details.reasoning_tokens == 4
    assert final.usage.total_tokens == 42
    assert [item.type for item in final.output] == [
        "reasoning", "message", "function_call", "function_call"
    ]  # fmt: skip


def test_the_collected_object_matches_the_stream() -> None:
    writer = ResponseWriter(call(metadata={"a": "b"}), "resp_2", "gpt-5.5", 1, stream=False)
    for event in ANSWER:
        assert writer.feed(event) is None
    body = writer.response(writer.status(), USAGE)
    response = Response.model_validate(body)
    assert response.id == "resp_2"
    assert response.metadata == {"a": "b"}
    assert response.output_text == "Hello world\n"
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.content is not None
    assert reasoning.content[0].text == "thinking hard"


def test_length_is_incomplete_with_its_reason() -> None:
    events = stream([TextDelta("cut"), Finish("length"), USAGE])
    final = Response.model_validate(events[-1]["response"])
    assert events[-1]["type"] == "response.incomplete"
    assert final.status == "incomplete"
    assert final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"


def test_a_failure_mid_stream_is_response_failed() -> None:
    writer = ResponseWriter(call(), "resp_3", "gpt-5.5", 1, stream=True)
    data = writer.start() + (writer.feed(TextDelta("par")) or b"")
    error = UpstreamProtocolError("Upstream u closed the stream before it finished", upstream="u")
    events = events_of(data + writer.failed(error, None))
    assert events[-1]["type"] == "response.failed"
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed"
    assert failed.error is not None
    assert "closed the stream" in failed.error.message


def test_an_empty_answer_is_a_completed_response_without_output() -> None:
    events = stream([Finish("stop"), USAGE])
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.completed"
    ]  # fmt: skip


def test_the_encoded_response_is_the_response_object() -> None:
    """The pre-encoded forms (the request's part once, the snapshot in progress from a
    template) say what the Response object says."""
    writer = ResponseWriter(call(instructions="Be brief.", metadata={"a": "1"}), "resp_1",
                            "gpt-5.5", 1_700_000_000, stream=True)  # fmt: skip
    assert json.loads(writer.response_bytes("in_progress")) == writer.response("in_progress")
    writer.feed(TextDelta("Hello"))
    writer.feed(Finish("stop"))
    done = json.loads(writer.response_bytes("completed", USAGE))
    expected = writer.response("completed", USAGE)
    assert abs(done.pop("completed_at") - expected.pop("completed_at")) <= 1
    assert done == expected
    Response.model_validate(json.loads(writer.response_bytes("completed", USAGE)))
