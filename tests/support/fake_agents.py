"""Scripted upstreams for coding agents (Claude Code): real HTTP servers on loopback.

Each plays a model that uses one tool: when the last user turn asks ``READFILE:<path>`` and the
request offers a ``Read`` tool, it answers with a call of ``Read`` on that path; when the last
turn carries that tool's result, it answers ``The file says: <result>``; anything else gets
``pong``. :class:`AgentAnthropic` speaks Anthropic's Messages API, :class:`AgentOpenAI` chat
completions; both stream when asked, and record every request they receive.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from tests.providers.fake_anthropic import API_KEY as ANTHROPIC_KEY
from tests.providers.server import ThreadedServer

OPENAI_KEY = "sk-agent-upstream-0123456789"
_ASK = re.compile(r"READFILE:(\S+)")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for block in content or ():
        if isinstance(block, dict):
            if block.get("type") == "text":
                texts.append(block.get("text", ""))
            elif block.get("type") == "tool_result":
                texts.append(_text_of(block.get("content")))
    return "\n".join(texts)


def _decide(last_user: str, result: str | None, tool_names: set[str]) -> tuple[str, str | None]:
    """``("text", words)`` or ``("tool", path)``."""
    if result is not None:
        return "text", f"The file says: {result.strip()}"
    asked = _ASK.search(last_user)
    if asked and "Read" in tool_names:
        return "tool", asked.group(1)
    return "text", "pong"


class AgentAnthropic(ThreadedServer[None]):
    def __init__(self) -> None:
        super().__init__(None)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._handle)
        app.router.add_post("/v1/messages/count_tokens", self._count)

    async def _count(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        return web.json_response({"input_tokens": len(json.dumps(body)) // 4})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if request.headers.get("x-api-key") != ANTHROPIC_KEY:
            return web.json_response(
                {"type": "error", "error": {"type": "authentication_error", "message": "key"}},
                status=401,
            )
        last = body["messages"][-1]
        content = last.get("content")
        results = [
            b for b in (content if isinstance(content, list) else [])
            if isinstance(b, dict) and b.get("type") == "tool_result"
        ]  # fmt: skip
        result = _text_of(results[0].get("content")) if results else None
        names = {t.get("name") for t in body.get("tools") or []}
        kind, value = _decide(_text_of(content), result, names)  # type: ignore[arg-type]
        if kind == "tool":
            block = {"type": "tool_use", "id": "toolu_agent_1", "name": "Read",
                     "input": {"file_path": value}}  # fmt: skip
            stop = "tool_use"
        else:
            block = {"type": "text", "text": value}
            stop = "end_turn"
        usage = {"input_tokens": 50, "output_tokens": 10, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}  # fmt: skip
        message = {"id": "msg_agent", "type": "message", "role": "assistant",
                   "model": body["model"], "content": [block], "stop_reason": stop,
                   "stop_sequence": None, "usage": usage}  # fmt: skip
        if not body.get("stream"):
            return web.json_response(message)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def emit(payload: dict[str, Any]) -> None:
            data = json.dumps(payload)
            await response.write(f"event: {payload['type']}\ndata: {data}\n\n".encode())

        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}  # fmt: skip
        await emit({"type": "message_start", "message": start})
        await emit({"type": "ping"})
        if block["type"] == "text":
            await emit({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}})  # fmt: skip
            await emit({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": block["text"]}})  # fmt: skip
        else:
            await emit({"type": "content_block_start", "index": 0,
                        "content_block": {**block, "input": {}}})  # fmt: skip
            await emit({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta",
                                  "partial_json": json.dumps(block["input"])}})  # fmt: skip
        await emit({"type": "content_block_stop", "index": 0})
        await emit({"type": "message_delta", "delta": {"stop_reason": stop,
                    "stop_sequence": None}, "usage": {"output_tokens": 10}})  # fmt: skip
        await emit({"type": "message_stop"})
        await response.write_eof()
        return response


class AgentOpenAI(ThreadedServer[None]):
    def __init__(self) -> None:
        super().__init__(None)

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if request.headers.get("authorization") != f"Bearer {OPENAI_KEY}":
            return web.json_response({"error": {"message": "key"}}, status=401)
        messages = body["messages"]
        last = messages[-1]
        result = _text_of(last.get("content")) if last.get("role") == "tool" else None
        users = [m for m in messages if m.get("role") == "user"]
        names = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
        kind, value = _decide(_text_of(users[-1]["content"]) if users else "", result, names)  # type: ignore[arg-type]
        usage = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
        if kind == "tool":
            call = {
                "id": "call_agent_1",
                "type": "function",
                "function": {"name": "Read", "arguments": json.dumps({"file_path": value})},
            }
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": value}
            finish = "stop"
        if not body.get("stream"):
            return web.json_response(
                {"id": "chatcmpl-agent", "object": "chat.completion", "created": 0,
                 "model": body["model"],
                 "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                 "usage": usage}
            )  # fmt: skip
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def emit(payload: dict[str, Any]) -> None:
            chunk = {"id": "chatcmpl-agent", "object": "chat.completion.chunk", "created": 0,
                     "model": body["model"], **payload}  # fmt: skip
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        if kind == "tool":
            delta = {"role": "assistant", "tool_calls": [{"index": 0, **message["tool_calls"][0]}]}
        else:
            delta = {"role": "assistant", "content": value}
        await emit({"choices": [{"index": 0, "delta": delta}]})
        await emit({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        await emit({"choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
