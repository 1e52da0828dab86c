"""A fake OpenAI chat-completions server: real HTTP on loopback, in its own thread.

Each request takes the next :class:`Behavior` from the script (or the default) and records what
it received, so tests can check what relaygate sent upstream.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.providers.server import ThreadedServer, split


@dataclass
class Behavior:
    status: int = 200
    text: str = "Hello from the fake upstream."
    chunks: int = 5
    """How many content deltas a stream is split into."""
    prompt_tokens: int = 13
    completion_tokens: int = 20
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    reasoning: str | None = None
    tool_call: dict[str, Any] | None = None
    first_delay: float = 0.0
    """Seconds before the first chunk (after the response headers)."""
    chunk_delay: float = 0.0
    answer_delay: float = 0.0
    """Seconds before a non-streamed answer is sent."""
    cut_after: int | None = None
    """End the stream abruptly after this many content chunks (no finish, no [DONE])."""
    send_usage: bool = True
    error_body: str | None = None
    retry_after: str | None = None
    finish_reason: str = "stop"
    set_cookie: str | None = None
    """A ``Set-Cookie`` header for the answer."""


class FakeOpenAI(ThreadedServer[Behavior]):
    """The chat-completions fake; :class:`~tests.providers.server.ThreadedServer` runs it and
    records each request in ``received``."""

    def __init__(
        self, default: Behavior | None = None, script: list[Behavior] | None = None
    ) -> None:
        super().__init__(Behavior() if default is None else default)
        self.script.extend(script or ())
        self.completed = 0
        """Responses the server finished writing (streams included)."""

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def routes(self, app: web.Application) -> None:
        """The server's routes (a subclass serves the same behaviours elsewhere)."""
        app.router.add_post("/v1/chat/completions", self._handle)

    # --- behaviour -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        b = self.next_reply()
        if b.status != 200:
            headers = {"retry-after": b.retry_after} if b.retry_after else {}
            text = b.error_body or json.dumps({"error": {"message": "fake failure"}})
            return web.Response(status=b.status, text=text, headers=headers)
        if body.get("stream"):
            return await self._stream(request, body, b)
        if b.answer_delay:
            await asyncio.sleep(b.answer_delay)
        headers = {"set-cookie": b.set_cookie} if b.set_cookie else None
        return web.json_response(self._completion(body, b), headers=headers)

    def _usage(self, b: Behavior) -> dict[str, Any]:
        return {
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": b.completion_tokens,
            "total_tokens": b.prompt_tokens + b.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": b.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": b.reasoning_tokens,
                "audio_tokens": 0,
            },
        }

    def _completion(self, body: dict[str, Any], b: Behavior) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": b.text}
        if b.reasoning:
            message["reasoning_content"] = b.reasoning
        if b.tool_call:
            message["tool_calls"] = [b.tool_call]
            message["content"] = None
        self.completed += 1
        return {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": b.finish_reason}],
            "usage": self._usage(b),
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], b: Behavior
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def emit(payload: dict[str, Any]) -> None:
            base = {
                "id": "chatcmpl-upstream",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
            }
            await response.write(f"data: {json.dumps({**base, **payload})}\n\n".encode())

        if b.first_delay:
            await asyncio.sleep(b.first_delay)
        if b.reasoning:
            await emit({"choices": [{"index": 0, "delta": {"reasoning_content": b.reasoning}}]})
        pieces = split(b.text, b.chunks) if b.text else []
        for i, piece in enumerate(pieces):
            if b.cut_after is not None and i >= b.cut_after:
                # an abrupt end: the connection closes without finish_reason or [DONE]
                request.transport.close()  # type: ignore[union-attr]
                return response
            if i and b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)
            await emit({"choices": [{"index": 0, "delta": {"content": piece}}]})
        if b.tool_call:
            await emit(
                {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **b.tool_call}]}}]}
            )
        await emit({"choices": [{"index": 0, "delta": {}, "finish_reason": b.finish_reason}]})
        if b.send_usage and (body.get("stream_options") or {}).get("include_usage"):
            await emit({"choices": [], "usage": self._usage(b)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.completed += 1
        return response
