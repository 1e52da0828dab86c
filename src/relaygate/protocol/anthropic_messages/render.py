"""The one event stream rendered as Anthropic's answer: a message body, or its stream events.

A stream follows Anthropic's sequence: ``message_start``, then per content block (thinking,
text, tool use) ``content_block_start``, its deltas and ``content_block_stop``, then
``message_delta`` (stop reason and usage) and ``message_stop``; ``ping`` events keep it alive
while the first token is awaited. An answer an Anthropic upstream gave in this dialect
(:class:`~relaygate.providers.base.Passthrough`) is relayed as it came.

Usage follows Anthropic's convention: ``input_tokens`` excludes the tokens read from and written
to the prompt cache (``cache_read_input_tokens``, ``cache_creation_input_tokens``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from relaygate.errors import ApiError, UpstreamError
from relaygate.protocol.anthropic_messages.errors import ANTHROPIC_ERRORS
from relaygate.protocol.assemble import Collected, decode_literals
from relaygate.protocol.validate import decode_json
from relaygate.providers.base import (
    EncodedText,
    Event,
    Finish,
    Passthrough,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
PING = b'event: ping\ndata: {"type":"ping"}\n\n'

_encoder = msgspec.json.Encoder()


def stop_reason(finish: str | None, tools: bool) -> str:
    if finish is None:
        return "tool_use" if tools else "end_turn"
    return STOP_REASONS.get(finish, "end_turn")


def anthropic_usage(usage: TokenUsage) -> dict[str, Any]:
    """``usage`` in Anthropic's convention (see the module docstring)."""
    writes = usage.cache_write_tokens + usage.cache_write_1h_tokens
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens - writes),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": writes,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
    }


def _tool_input(arguments: str) -> Any:
    if not arguments:
        return {}
    try:
        value = decode_json(arguments, "arguments")
    except (msgspec.DecodeError, ApiError):
        return {"arguments": arguments}  # not JSON: kept, not dropped
    return value if isinstance(value, dict) else {"value": value}


def message_body(
    message_id: str, model: str, collected: Collected, usage: TokenUsage
) -> dict[str, Any]:
    """The non-streamed answer (choice 0) as an Anthropic message."""
    state = collected.choices.get(0)
    content: list[dict[str, Any]] = []
    finish = None
    tools = False
    if state is not None:
        reasoning = "".join(state.reasoning)
        if reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
        text = "".join(state.text + decode_literals(state.encoded or []))
        if text:
            content.append({"type": "text", "text": text})
        for index in sorted(state.tools):
            call = state.tools[index]
            function = call.function
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id or f"toolu_{message_id[4:]}_{index}",
                    "name": (function.name if function else None) or "",
                    "input": _tool_input(function.arguments if function else ""),
                }
            )
            tools = True
        finish = state.finish
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish, tools),
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }


def _sse(kind: bytes, payload: Any) -> bytes:
    return b"event: " + kind + b"\ndata: " + _encoder.encode(payload) + b"\n\n"


_TEXT_HEAD = b'"delta":{"type":"text_delta","text":'


class MessageStream:
    """One stream's events as Anthropic's (see the module docstring); implements
    :class:`relaygate.api.stream.StreamRenderer`."""

    keepalive = PING

    def __init__(self, message_id: str, model: str) -> None:
        self.id = message_id
        self.model = model
        self.started = False
        self.passthrough = False
        self.block = -1
        """The index of the open content block (-1: none open)."""
        self.kind = ""
        """The open block's type: ``thinking``, ``text`` or ``tool_use``."""
        self.tools: dict[int, int] = {}
        """Tool-call index → its block index."""
        self.finish: str | None = None
        self._text_head = b""

    def _start(self) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _sse(b"message_start", {"type": "message_start", "message": message}) + PING

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block += 1
        self.kind = kind
        if kind == "text":
            self._text_head = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                + str(self.block).encode()
                + b","
                + _TEXT_HEAD
            )
        start = {"type": "content_block_start", "index": self.block, "content_block": block}
        return out + _sse(b"content_block_start", start)

    def _close(self) -> bytes:
        if not self.kind:
            return b""
        self.kind = ""
        return _sse(b"content_block_stop", {"type": "content_block_stop", "index": self.block})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        event = {"type": "content_block_delta", "index": index, "delta": delta}
        return _sse(b"content_block_delta", event)

    def _text(self, literals: list[bytes]) -> bytes:
        out = b"" if self.kind == "text" else self._open("text", {"type": "text", "text": ""})
        head = self._text_head
        return out + b"".join([head + literal + b"}}\n\n" for literal in literals])

    def event(self, event: Event) -> bytes | None:
        kind = type(event)
        if kind is Passthrough:
            self.passthrough = True
            return event.data  # type: ignore[union-attr]
        if kind is TokenUsage:
            return None
        if kind is Finish:
            if event.index == 0:  # type: ignore[union-attr]
                self.finish = event.reason  # type: ignore[union-attr]
            return None
        if getattr(event, "index", 0) != 0:
            return None  # Anthropic has one choice
        out = b"" if self.started else self._start()
        if kind is EncodedText:
            return out + self._text(event.literals)  # type: ignore[union-attr]
        if kind is TextDelta:
            return out + self._text([_encoder.encode(event.text)])  # type: ignore[union-attr]
        if kind is ReasoningDelta:
            if self.kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            return out + self._delta(
                self.block,
                {"type": "thinking_delta", "thinking": event.text},  # type: ignore[union-attr]
            )
        if kind is ToolCallDelta:
            return out + self._tool(event)  # type: ignore[arg-type]
        return out or None

    def _tool(self, event: ToolCallDelta) -> bytes:
        out = b""
        block = self.tools.get(event.tool_index)
        if block is None:
            call_id = event.id or f"toolu_{self.id[4:]}_{event.tool_index}"
            use = {"type": "tool_use", "id": call_id, "name": event.name or "", "input": {}}
            out = self._open("tool_use", use)
            block = self.tools[event.tool_index] = self.block
        if event.arguments:
            delta = {"type": "input_json_delta", "partial_json": event.arguments}
            out += self._delta(block, delta)
        return out

    def tail(self, collected: Collected, prompt_guess: int) -> list[bytes]:
        if self.passthrough:
            return []
        out = [b"" if self.started else self._start(), self._close()]
        usage = anthropic_usage(collected.usage_or_estimate(prompt_guess))
        delta = {"stop_reason": stop_reason(self.finish, bool(self.tools)), "stop_sequence": None}
        out.append(
            _sse(b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        )
        out.append(_sse(b"message_stop", {"type": "message_stop"}))
        return out

    def error(self, error: ApiError) -> bytes:
        if isinstance(error, UpstreamError) and getattr(error, "relayed", False):
            return b""  # the upstream's own error event was relayed already
        return ANTHROPIC_ERRORS.sse(error)
