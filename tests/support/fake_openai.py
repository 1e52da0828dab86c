"""A fake OpenAI chat-completions server: real HTTP on loopback, in its own thread.

Each request takes the next :class:`Behavior` from the script (or the default) and records what
it received, so tests can check what relaygate sent upstream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


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


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    default: Behavior = field(default_factory=Behavior)
    script: list[Behavior] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    completed: int = 0
    """Responses the server finished writing (streams included)."""

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def routes(self, app: web.Application) -> None:
        """The server's routes (a subclass serves the same behaviours elsewhere)."""
        app.router.add_post("/v1/chat/completions", self._handle)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    # --- behaviour -----------------------------------------------------------------------

    def _next(self) -> Behavior:
        return self.script.pop(0) if self.script else self.default

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        b = self._next()
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
            await emit(
                {"choices": [{"index": 0, "delta": {"reasoning_content": b.reasoning}}]}
            )
        pieces = _split(b.text, b.chunks)
        for i, piece in enumerate(pieces):
            if b.cut_after is not None and i >= b.cut_after:
                # an abrupt end: the connection closes without finish_reason or [DONE]
                request.transport.close()  # type: ignore[union-attr]
                return response
            if i and b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)
            await emit({"choices": [{"index": 0, "delta": {"content": piece}}]})
        if b.tool_call:
            await emit({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, **b.tool_call}]}}]})
        await emit({"choices": [{"index": 0, "delta": {}, "finish_reason": b.finish_reason}]})
        if b.send_usage and (body.get("stream_options") or {}).get("include_usage"):
            await emit({"choices": [], "usage": self._usage(b)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.completed += 1
        return response


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)]
