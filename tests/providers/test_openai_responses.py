"""The pass-through reader of Responses streams: the final event's usage, what a stream cut
short received, with or without ``event:`` lines."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from relaygate.errors import UpstreamProtocolError
from relaygate.providers.base import Passthrough, TokenUsage
from relaygate.providers.openai_responses import _Reader


def _reader() -> _Reader:
    provider = SimpleNamespace(settings=SimpleNamespace(max_line_bytes=1 << 20), label="up")
    return _Reader(provider)  # type: ignore[arg-type]


def _sse(events: list[dict[str, Any]], named: bool) -> bytes:
    def one(event: dict[str, Any]) -> str:
        head = f"event: {event['type']}\n" if named else ""
        return f"{head}data: {json.dumps(event, separators=(',', ':'))}\n\n"

    return "".join(one(e) for e in events).encode()


_CREATED = {"type": "response.created", "sequence_number": 0,
            "response": {"id": "resp_1", "object": "response", "status": "in_progress",
                         "error": None, "usage": None}}  # fmt: skip


def _delta(text: str) -> dict[str, Any]:
    return {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": text, "logprobs": []}  # fmt: skip


def _read(reader: _Reader, stream: bytes) -> tuple[int, list[TokenUsage]]:
    tokens, usages = 0, []
    for event in reader.read(stream):
        if isinstance(event, Passthrough):
            tokens += event.tokens
        elif isinstance(event, TokenUsage):
            usages.append(event)
    return tokens, usages


@pytest.mark.parametrize("named", [True, False], ids=["event lines", "data only"])
def test_response_created_does_not_end_the_stream(named: bool) -> None:
    """Its ``"error": null`` once matched the word "error" when the type was guessed from the
    payload's bytes: zero usage, and the stream taken as ended."""
    reader = _reader()
    assert _read(reader, _sse([_CREATED], named)) == (0, [])
    assert reader.final is None
    assert reader.failed is None


@pytest.mark.parametrize("named", [True, False], ids=["event lines", "data only"])
def test_a_cut_streams_output_is_counted_by_the_bytes_of_its_deltas(named: bool) -> None:
    reader = _reader()
    tokens, usages = _read(reader, _sse([_CREATED, _delta("x" * 4000), _delta("y")], named))
    assert (tokens, usages) == (1000 + 1, [])
    assert reader.content


@pytest.mark.parametrize("named", [True, False], ids=["event lines", "data only"])
def test_the_final_events_usage_is_read(named: bool) -> None:
    usage = {"input_tokens": 12, "output_tokens": 7,
             "output_tokens_details": {"reasoning_tokens": 3}}  # fmt: skip
    done = {"type": "response.completed", "response": {"id": "resp_1", "usage": usage}}
    reader = _reader()
    _, usages = _read(reader, _sse([_CREATED, done], named))
    assert usages == [TokenUsage(prompt_tokens=12, completion_tokens=7, reasoning_tokens=3)]


def test_a_final_event_without_usage_tells_none() -> None:
    """The estimate is billed then (the pipeline's), not a usage of zeros."""
    done = {"type": "response.completed", "response": {"id": "resp_1", "usage": None}}
    reader = _reader()
    assert _read(reader, _sse([done], True)) == (0, [])
    assert reader.final is not None


def test_a_negative_count_is_an_upstream_error() -> None:
    usage = {"input_tokens": 12, "output_tokens": -7000}
    done = {"type": "response.completed", "response": {"id": "resp_1", "usage": usage}}
    with pytest.raises(UpstreamProtocolError):
        _reader().read(_sse([done], True))
