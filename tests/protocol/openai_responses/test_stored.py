"""A passed-through Responses answer says whether relaygate keeps it: the non-streamed body,
and the streamed events that carry the Response object (checked with the ``openai`` SDK's
types); every other byte is relayed as it came."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response

from relaygate.errors import UpstreamProtocolError
from relaygate.protocol.assemble import Collected
from relaygate.protocol.openai_responses.render import ResponseWriter
from relaygate.protocol.openai_responses.stored import stored_body, stored_line
from relaygate.protocol.openai_responses.stream import ResponsesStream
from relaygate.providers.base import DONE, STARTED, Passthrough
from tests.protocol.openai_responses.test_render import call, events_of

SCHEMA_TOOL = {"type": "function", "name": "save", "strict": False, "parameters": {
    "type": "object", "properties": {"store": False, "path": {"type": "string"}}}}  # fmt: skip
"""A tool whose schema holds a ``"store": false`` of its own (a boolean schema)."""


def response(status: str = "completed", **fields: Any) -> dict[str, Any]:
    """A Response object as a Responses upstream asked not to store answers it."""
    text = [{"type": "output_text", "text": 'say "store": false', "annotations": []}]
    output = [{"id": "msg_up", "type": "message", "role": "assistant", "status": "completed",
               "content": text}] if status != "in_progress" else []  # fmt: skip
    return {"id": "resp_up", "object": "response", "created_at": 1, "status": status,
            "model": "gpt-up", "output": output, "parallel_tool_calls": True,
            "store": False, "tool_choice": "auto", "tools": [], **fields}  # fmt: skip


BODIES = [
    pytest.param(json.dumps(response()), id="spaced"),
    pytest.param(json.dumps(response(), separators=(",", ":")), id="compact"),
    pytest.param(json.dumps(response(), indent=2), id="indented"),
    pytest.param(json.dumps({**response(), "store": None}), id="null"),
    pytest.param(json.dumps({k: v for k, v in response().items() if k != "store"}), id="absent"),
    pytest.param(json.dumps(response(tools=[SCHEMA_TOOL])), id="store-in-a-schema"),
    pytest.param(json.dumps(response(metadata={"store": "false"})), id="store-in-metadata"),
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("stored", [True, False])
def test_a_body_says_what_relaygate_keeps(body: str, stored: bool) -> None:
    out = json.loads(stored_body(body.encode(), stored))
    given = json.loads(body)
    if not stored and given.get("store") is None:
        assert out == given  # says nothing of it, as it came
    else:
        assert out == {**given, "store": stored}  # nothing else changed (the schema's own)
    Response.model_validate(out)


def test_a_body_already_right_and_bytes_not_json_are_left_as_they_came() -> None:
    body = json.dumps(response()).encode()
    assert stored_body(body, False) is body
    kept = stored_body(body, True)
    assert stored_body(kept, True) is kept
    assert stored_body(b"not json", True) == b"not json"


def test_an_event_line_gets_its_response_changed_only() -> None:
    event = {"type": "response.created", "sequence_number": 0,
             "response": response("in_progress", tools=[SCHEMA_TOOL])}  # fmt: skip
    line = b"data: " + json.dumps(event).encode()
    changed = stored_line(line, True)
    assert changed.startswith(b"data:")
    assert json.loads(changed[5:]) == {**event, "response": {**event["response"], "store": True}}
    delta = b'data: {"type":"response.output_text.delta","delta":"\\"store\\": false"}'
    assert stored_line(delta, True) is delta


def relayed(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events
    )


UPSTREAM = relayed([
    {"type": "response.created", "sequence_number": 0, "response": response("in_progress")},
    {"type": "response.in_progress", "sequence_number": 1, "response": response("in_progress")},
    {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_up",
     "output_index": 0, "content_index": 0, "delta": 'say "store": false', "logprobs": []},
    {"type": "response.completed", "sequence_number": 3, "response": response()},
])  # fmt: skip


@pytest.mark.parametrize("size", [1, 7, 64, len(UPSTREAM)], ids=lambda n: f"reads-of-{n}")
@pytest.mark.parametrize("stored", [True, False])
def test_a_relayed_stream_says_what_relaygate_keeps(size: int, stored: bool) -> None:
    """The upstream's reads, cut anywhere: whole lines go out, the events that carry the
    Response object say ``stored``, and the kept answer's final object is read."""
    writer = ResponseWriter(call(), "resp_1", "gpt-5.5", 1, stream=True)
    stream = ResponsesStream(writer, stored, 1 << 20)
    collected = Collected()
    sent = [stream.event(STARTED[0])]
    for at in range(0, len(UPSTREAM), size):
        sent.append(stream.event(Passthrough(UPSTREAM[at : at + size])))
    sent.append(stream.event(DONE))
    out = b"".join(piece for piece in sent if piece) + b"".join(stream.tail(collected, 1))
    assert all(piece is None or piece.endswith(b"\n") for piece in sent)
    events = events_of(out)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_text.delta",
        "response.completed",
    ]  # fmt: skip
    assert [e["response"]["store"] for e in events if "response" in e] == [stored] * 3
    assert events[2]["delta"] == 'say "store": false'
    if not stored:
        assert out == UPSTREAM
    answer = stream.output()
    assert (answer is not None) is stored
    if answer is not None:
        assert answer[2]["store"] is True


def test_a_relayed_stream_cut_mid_line_ends_with_its_error_event() -> None:
    """The unfinished line is not sent: the stream's last event is relaygate's error."""
    writer = ResponseWriter(call(), "resp_1", "gpt-5.5", 1, stream=True)
    stream = ResponsesStream(writer, True, 1 << 20)
    stream.event(STARTED[0])
    cut = UPSTREAM.index(b'"response.completed", "sequence_number"') + 10
    head = stream.event(Passthrough(UPSTREAM[:cut]))
    assert head is not None
    assert head.endswith(b"\n")
    error = stream.error(UpstreamProtocolError("Upstream u broke off", upstream="u"))
    assert error.startswith(b"event: error\ndata: ")
    assert b'"response.completed", "seq' not in head + error
