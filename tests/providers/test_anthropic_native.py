"""The pass-through reader of Anthropic streams: bytes relayed as they came, usage read from
``message_start`` and ``message_delta`` whatever the reads' boundaries."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from relaygate.errors import UpstreamProtocolError
from relaygate.providers.anthropic_native import _Reader
from relaygate.providers.base import Passthrough, TokenUsage


def _stream(compact: bool) -> bytes:
    dumps: Any = (lambda v: json.dumps(v, separators=(",", ":"))) if compact else json.dumps
    usage = {
        "input_tokens": 30,
        "output_tokens": 1,
        "cache_read_input_tokens": 200,
        "cache_creation_input_tokens": 50,
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
    }
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *({"type": "content_block_delta", "index": 0,
           "delta": {"type": "text_delta", "text": 'say "message_delta" and "error"'}}
          for _ in range(5)),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 42}},
        {"type": "message_stop"},
    ]  # fmt: skip
    return b"".join(f"event: {e['type']}\ndata: {dumps(e)}\n\n".encode() for e in events)


def _reader(limit: int = 1 << 20) -> _Reader:
    provider = SimpleNamespace(settings=SimpleNamespace(max_line_bytes=limit), label="up")
    return _Reader(provider)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [7, 64, 1 << 20], ids=["7-byte reads", "64-byte", "one read"])
@pytest.mark.parametrize("compact", [True, False], ids=["compact", "spaced"])
def test_any_read_boundaries_give_the_same_bytes_and_usage(size: int, compact: bool) -> None:
    stream = _stream(compact)
    reader = _reader()
    relayed, usages, deltas = b"", [], 0
    for at in range(0, len(stream), size):
        for event in reader.read(stream[at : at + size]):
            if isinstance(event, Passthrough):
                relayed += event.data
                deltas += event.deltas
            elif isinstance(event, TokenUsage):
                usages.append(event)
    assert relayed == stream  # relayed as it came
    assert reader.stopped
    assert reader.error is None
    assert deltas == 5
    assert usages[-1] == TokenUsage(
        prompt_tokens=280, completion_tokens=42, cached_tokens=200, cache_write_tokens=20,
        cache_write_1h_tokens=30,
    )  # fmt: skip
    # message_start's input side first (a stream cut short is billed it), unless the same
    # read brought message_delta
    first = usages[0]
    assert len(usages) == (1 if size == 1 << 20 else 2)
    assert (first.prompt_tokens, first.cached_tokens, first.cache_write_tokens) == (280, 200, 20)
    assert first.partial is (size != 1 << 20)


def test_a_line_longer_than_the_limit_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="max_line_bytes"):
        _reader(limit=100).read(b"data: " + b"x" * 200)


def test_an_error_event_is_kept_with_whether_content_came_first() -> None:
    reader = _reader()
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    reader.read(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
    assert reader.error is not None
    assert reader.error.type == "overloaded_error"
    assert not reader.content
