"""A fake Anthropic Messages API (``POST /v1/messages``), written from Anthropic's API reference.

Requests are checked like the real API would: ``x-api-key`` and ``anthropic-version`` headers,
and the body against the official SDK's ``MessageCreateParams`` types (a 400
``invalid_request_error`` otherwise, and the problem is kept in ``problems``). Every answer it
sends, streamed events included, is checked against the SDK's response models too, so the fake
cannot drift from the real wire format unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import anthropic.types as at
import pydantic
from aiohttp import web
from anthropic.types import message_count_tokens_params, message_create_params

from tests.providers.server import ThreadedServer, split

API_KEY = "sk-ant-upstream-SECRET-0123456789"
VERSIONS = ("2023-06-01", "2026-10-21")
SAMPLING = {"temperature", "top_p", "top_k"}
"""Accepted by API version 2023-06-01 only (the SDK's types are 2026-10-21's: without them)."""
_REQUESTS = {
    False: pydantic.TypeAdapter(message_create_params.MessageCreateParamsNonStreaming),
    True: pydantic.TypeAdapter(message_create_params.MessageCreateParamsStreaming),
}
_FIELDS = set(typing.get_type_hints(message_create_params.MessageCreateParamsStreaming))
_EVENT = pydantic.TypeAdapter(at.RawMessageStreamEvent)
_COUNT = pydantic.TypeAdapter(message_count_tokens_params.MessageCountTokensParams)
COUNTED_TOKENS = 1234
"""What ``POST /v1/messages/count_tokens`` answers."""


@dataclass
class ToolUse:
    id: str = "toolu_01A09q90qw90lq917835lq9"
    name: str = "get_weather"
    input: dict[str, Any] = field(default_factory=lambda: {"location": "Berlin", "unit": "c"})


@dataclass
class Reply:
    status: int = 200
    text: str = "Hello from the fake Claude."
    thinking: str | None = None
    tool: ToolUse | None = None
    stop_reason: str = "end_turn"
    input_tokens: int = 21
    output_tokens: int = 9
    cache_read: int = 0
    cache_write: int = 0
    thinking_tokens: int | None = None
    """``usage.output_tokens_details.thinking_tokens`` (left out when ``None``)."""
    chunks: int = 3
    error_type: str = "api_error"
    error_message: str = "fake failure"
    retry_after: str | None = None
    error_first: str | None = None
    """Send this error type as the stream's first event (after an HTTP 200)."""
    error_mid_stream: str | None = None
    """Send this error type as an event after the first text delta."""
    cut: bool = False
    """Close the connection after the first text delta (no message_stop)."""
    cache_write_1h: int = 0
    """The part of ``cache_write`` written for 1 hour (``usage.cache_creation`` is sent when
    set)."""
    delta_delay: float = 0.0
    """Seconds before each text delta of a stream."""


def _force(value: Any) -> Any:
    """Validated TypedDicts hold lazy iterators for ``Iterable`` fields: walk them all."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ValidatorIterator":
        return [_force(v) for v in value]
    return value


def request_problems(body: dict[str, Any], version: str = VERSIONS[0]) -> list[str]:
    """What the SDK's ``MessageCreateParams`` (and, for 2023-06-01, the sampling fields' ranges)
    find wrong with ``body``."""
    known = _FIELDS | (SAMPLING if version == VERSIONS[0] else set())
    problems = [f"unknown field {name!r}" for name in sorted(set(body) - known)]
    for name, low, high in (("temperature", 0, 1), ("top_p", 0, 1), ("top_k", 1, 10**6)):
        value = body.get(name)
        if value is not None and not (isinstance(value, int | float) and low <= value <= high):
            problems.append(f"{name}: out of range: {value!r}")
    try:
        _force(_REQUESTS[bool(body.get("stream"))].validate_python(body))
    except pydantic.ValidationError as exc:
        problems.append(str(exc).splitlines()[0] + ": " + str(exc.errors()[:3]))
    return problems


class FakeAnthropic(ThreadedServer[Reply]):
    def __init__(self) -> None:
        super().__init__(Reply())

    @property
    def base_url(self) -> str:
        return self.root

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._handle)
        app.router.add_post("/v1/messages/count_tokens", self._count)

    async def _count(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        if request.headers.get("x-api-key") != API_KEY:
            return _error(401, "authentication_error", "invalid x-api-key")
        try:
            _force(_COUNT.validate_python(body))
        except pydantic.ValidationError as exc:
            self.problems.append(str(exc).splitlines()[0])
            return _error(400, "invalid_request_error", "bad count_tokens request")
        return web.json_response({"input_tokens": COUNTED_TOKENS})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if request.headers.get("x-api-key") != API_KEY:
            return _error(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version", "")
        if version not in VERSIONS:
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        problems = request_problems(body, version)
        if problems:
            self.problems.extend(problems)
            return _error(400, "invalid_request_error", "; ".join(problems))
        reply = self.next_reply()
        if reply.status != 200:
            headers = {"retry-after": reply.retry_after} if reply.retry_after else {}
            return _error(reply.status, reply.error_type, reply.error_message, headers)
        if body.get("stream"):
            return await self._stream(request, body, reply)
        return web.json_response(self._checked_message(body, reply))

    # --- answers -------------------------------------------------------------------------

    def _usage(self, reply: Reply, output: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "input_tokens": reply.input_tokens,
            "output_tokens": output,
            "cache_read_input_tokens": reply.cache_read,
            "cache_creation_input_tokens": reply.cache_write,
        }
        if reply.thinking_tokens is not None:
            usage["output_tokens_details"] = {"thinking_tokens": reply.thinking_tokens}
        if reply.cache_write_1h:
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": reply.cache_write - reply.cache_write_1h,
                "ephemeral_1h_input_tokens": reply.cache_write_1h,
            }
        return usage

    def _blocks(self, reply: Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.thinking is not None:
            blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": "sig=="})
        if reply.text:
            blocks.append({"type": "text", "text": reply.text, "citations": None})
        if reply.tool is not None:
            tool = reply.tool
            blocks.append(
                {"type": "tool_use", "id": tool.id, "name": tool.name, "input": tool.input}
            )
        return blocks

    def _checked_message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message = {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": self._blocks(reply),
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": self._usage(reply, reply.output_tokens),
        }
        self._check(at.Message.model_validate, message)
        return message

    def _check(self, validate: Any, payload: dict[str, Any]) -> None:
        try:
            validate(payload)
        except pydantic.ValidationError as exc:
            self.problems.append(f"the fake's own answer is off: {exc}")

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def emit(payload: dict[str, Any]) -> None:
            kind = payload["type"]
            if kind == "error":
                self._check(at.ErrorResponse.model_validate, payload)
            elif kind != "ping":
                self._check(_EVENT.validate_python, payload)
            await response.write(f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode())

        if reply.error_first:
            await emit(_error_event(reply.error_first, reply.error_message))
            return response
        start = self._checked_message(body, reply)
        start.update(content=[], stop_reason=None, usage=self._usage(reply, 1))
        await emit({"type": "message_start", "message": start})
        await emit({"type": "ping"})
        for index, block in enumerate(self._blocks(reply)):
            if await self._emit_block(emit, index, block, reply):
                request.transport.close()  # type: ignore[union-attr]
                return response
        if reply.error_mid_stream:
            return response
        usage = self._usage(reply, reply.output_tokens)
        await emit(
            {
                "type": "message_delta",
                "usage": usage,
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            }
        )
        await emit({"type": "message_stop"})
        await response.write_eof()
        return response

    async def _emit_block(self, emit: Any, index: int, block: dict[str, Any], reply: Reply) -> bool:
        """Stream one content block; ``True`` when the reply says to cut the stream here."""
        kind = block["type"]
        if kind == "thinking":
            await emit(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            for piece in split(block["thinking"], reply.chunks):
                await emit(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": piece},
                    }
                )
            await emit(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": "sig=="},
                }
            )
        elif kind == "text":
            await emit(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": "", "citations": None},
                }
            )
            for i, piece in enumerate(split(block["text"], reply.chunks)):
                if reply.delta_delay:
                    await asyncio.sleep(reply.delta_delay)
                await emit(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
                if i == 0 and reply.cut:
                    return True
                if i == 0 and reply.error_mid_stream:
                    await emit(_error_event(reply.error_mid_stream, reply.error_message))
                    return False
        else:
            await emit(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            for piece in split(json.dumps(block["input"]), 2):
                await emit(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                )
        await emit({"type": "content_block_stop", "index": index})
        return False


def _error_event(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    return web.json_response(body, status=status, headers=headers)
