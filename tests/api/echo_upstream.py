"""A fake upstream that echoes the credential it was sent back in its errors.

One real HTTP server on loopback speaks the four wire formats relaygate calls (OpenAI, Azure,
Anthropic, Gemini). Each request takes the next :class:`Echo` from ``script``: which error it
answers (an HTTP status before any answer, an error event as a stream's first event, or one after
the first text), and in which form it quotes the credential it received (raw, base64 at each
alignment, as basic auth, URL-encoded, JSON-escaped, ...).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from aiohttp import web

from tests.providers.server import ThreadedServer

FORMS = (
    "raw",
    "base64",
    "base64+1",
    "base64+2",
    "basic-auth",
    "base64url",
    "url-encoded",
    "json-escaped",
    "newline-forgery",
)
"""How the credential is quoted in an error message."""
FORGED = "2031-01-01 00:00:00,000 ERROR relaygate: FORGED-LINE"


def echo(form: str, credential: str) -> str:
    """An upstream error message quoting ``credential`` in ``form``."""
    data = credential.encode()
    quoted = {
        "raw": credential,
        "base64": base64.b64encode(data).decode(),
        "base64+1": base64.b64encode(b"x" + data).decode(),
        "base64+2": base64.b64encode(b"xy" + data).decode(),
        "basic-auth": "Basic " + base64.b64encode(b"user:" + data).decode(),
        "base64url": base64.urlsafe_b64encode(b"\xfb\xff" + data).decode(),
        "url-encoded": quote_plus(credential, safe="") + " " + quote(credential, safe=""),
        "json-escaped": json.dumps({"key": credential}),
        "newline-forgery": f"bad key {credential}\n{FORGED}\r\n{FORGED}",
    }[form]
    return f"Incorrect API key provided ({quoted}). You can find your key in the portal."


@dataclass
class Echo:
    form: str
    where: str = "status"
    """``status``: an HTTP error; ``first``: 200 and an error as the stream's first event;
    ``mid``: 200, one text delta, then an error event."""
    status: int = 500


class EchoUpstream(ThreadedServer[Echo]):
    def __init__(self) -> None:
        super().__init__(Echo("raw"))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1beta/models/{method}", self._gemini)

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        credential = request.headers.get("authorization", "").removeprefix("Bearer ")
        return await self._chat(request, credential)

    async def _azure(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, request.headers.get("api-key", ""))

    async def _chat(self, request: web.Request, credential: str) -> web.StreamResponse:
        body = await self.record(request)
        reply = self.next_reply()
        message = echo(reply.form, credential)
        error = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        if reply.where == "status":
            return web.json_response(error, status=reply.status)
        chunk = {"id": "c", "object": "chat.completion.chunk", "model": body.get("model"),
                 "choices": [{"index": 0, "delta": {"content": "Hello"}}]}
        events = [error] if reply.where == "first" else [chunk, error]
        return await _sse(request, [f"data: {json.dumps(e)}\n\n" for e in events])

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        reply = self.next_reply()
        message = echo(reply.form, request.headers.get("x-api-key", ""))
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        if reply.where == "status":
            return web.json_response(error, status=reply.status)
        start = {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1}}}
        block = {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}}
        delta = {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": "Hello"}}
        events = [start, error] if reply.where == "first" else [start, block, delta, error]
        return await _sse(
            request, [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]
        )

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        reply = self.next_reply()
        message = echo(reply.form, request.headers.get("x-goog-api-key", ""))
        error = {"error": {"code": reply.status, "message": message, "status": "INTERNAL"}}
        if reply.where == "status":
            return web.json_response(error, status=reply.status)
        chunk: dict[str, Any] = {"candidates": [{"index": 0, "content": {
            "role": "model", "parts": [{"text": "Hello"}]}}]}
        events = [error] if reply.where == "first" else [chunk, error]
        return await _sse(request, [f"data: {json.dumps(e)}\r\n\r\n" for e in events])


async def _sse(request: web.Request, events: list[str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        await response.write(event.encode())
    await response.write_eof()
    return response
