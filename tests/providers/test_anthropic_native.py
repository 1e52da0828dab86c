"""The pass-through reader of Anthropic streams: bytes relayed as they came, usage read from
``message_start`` and ``message_delta`` whatever the reads' boundaries."""

from __future__ import annotations

import json
import time
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
    relayed, usages, tokens = b"", [], 0
    for at in range(0, len(stream), size):
        for event in reader.read(stream[at : at + size]):
            if isinstance(event, Passthrough):
                relayed += event.data
                tokens += event.tokens
            elif isinstance(event, TokenUsage):
                usages.append(event)
    assert relayed == stream  # relayed as it came
    assert reader.stopped
    assert reader.error is None
    # each delta's text is 35 bytes escaped (9 tokens); spaced JSON adds 7 bytes of framing
    assert tokens == 5 * (9 if compact else 11)
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


def _events(*events: dict[str, Any]) -> bytes:
    data = [json.dumps(e, separators=(",", ":")) for e in events]  # as Anthropic sends them
    return b"".join(
        f"event: {e['type']}\ndata: {d}\n\n".encode() for e, d in zip(events, data, strict=True)
    )


def _delta(kind: str, text: str) -> dict[str, Any]:
    field = {"text_delta": "text", "thinking_delta": "thinking"}[kind]
    return {"type": "content_block_delta", "index": 0, "delta": {"type": kind, field: text}}


def test_a_cut_streams_output_is_counted_by_the_bytes_of_its_deltas() -> None:
    """Output is counted from the deltas' bytes (4 a token), not one a delta event: 40,000
    characters of thinking in 4 events are ~10,000 tokens, however the reads fall."""
    stream = _events(*(_delta("thinking_delta", "x" * 10_000) for _ in range(4)),
                     *(_delta("text_delta", "y") for _ in range(3)))  # fmt: skip
    reader = _reader()
    tokens = sum(
        event.tokens
        for at in range(0, len(stream), 1000)
        for event in reader.read(stream[at : at + 1000])
        if isinstance(event, Passthrough)
    )
    assert 4 * 2_500 <= tokens <= 4 * 2_500 + 4 * 4 + 3  # a one-character delta: 1 token


def test_a_message_delta_without_the_input_side_is_partial() -> None:
    """No usage in message_start: the output told is kept, the prompt is left to the
    estimate (``partial`` with no prompt tokens), not billed as 0."""
    start = {"type": "message_start", "message": {"id": "msg_1"}}
    delta = {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 42}}
    usage = next(e for e in _reader().read(_events(start, delta)) if isinstance(e, TokenUsage))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.partial) == (0, 42, True)


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "cache_read_input_tokens"])
def test_a_negative_count_is_an_upstream_error(field: str) -> None:
    start = {"type": "message_start",
             "message": {"id": "msg_1", "usage": {"input_tokens": 5, field: -1000}}}  # fmt: skip
    with pytest.raises(UpstreamProtocolError):
        _reader().read(_events(start))


def test_a_long_stream_line_is_read_in_linear_time() -> None:
    """One 16 MiB line in 16 KiB reads: the unfinished line is appended to, never re-joined
    and re-scanned (that took ~4 s; the limit, 32 MiB, ~16 s)."""
    reader = _reader(limit=32 << 20)
    piece = b"x" * (16 << 10)
    started = time.process_time()
    for _ in range((16 << 20) // len(piece)):
        reader.read(piece)
    assert time.process_time() - started < 0.5
