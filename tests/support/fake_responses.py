"""A fake OpenAI upstream that also speaks the Responses API (``POST /v1/responses``): real
HTTP on loopback, each request body checked against the ``openai`` SDK's own request type.

It answers by the same :class:`~tests.support.fake_openai.Behavior` script as the chat fake:
``text`` (split into ``chunks`` deltas), a ``tool_call`` as a function call, ``reasoning`` as a
reasoning item with encrypted content, and the usage.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pydantic
from aiohttp import web
from openai.types.responses.response_create_params import ResponseCreateParamsBase

from tests.providers.server import split
from tests.support.fake_openai import Behavior, FakeOpenAI

REQUEST: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseCreateParamsBase)


def check_request(body: dict[str, Any]) -> None:
    """Raise if ``body`` is not a Responses request as the SDK types it (``stream`` aside)."""
    REQUEST.validate_python({k: v for k, v in body.items() if k != "stream"})


class FakeResponses(FakeOpenAI):
    invalid: list[str]

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        self.invalid = []
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/openai/v1/responses", self._responses)  # Azure's

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        try:
            check_request(body)
        except pydantic.ValidationError as exc:
            self.invalid.append(str(exc))
            return web.json_response({"error": {"message": "invalid request"}}, status=400)
        b = self.next_reply()
        if b.status != 200:
            text = b.error_body or json.dumps({"error": {"message": "fake failure"}})
            return web.Response(status=b.status, text=text)
        final = _response(body, b)
        if not body.get("stream"):
            self.completed += 1
            return web.json_response(final)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in _events(final, b):
            if event is None:  # cut
                request.transport.close()  # type: ignore[union-attr]
                return response
            if b.chunk_delay and event["type"] == "response.output_text.delta":
                await asyncio.sleep(b.chunk_delay)
            data = json.dumps(event)
            await response.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
        await response.write_eof()
        self.completed += 1
        return response


def _response(body: dict[str, Any], b: Behavior) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if b.reasoning:
        output.append({"id": "rs_up", "type": "reasoning", "summary": [],
                       "encrypted_content": "ENCRYPTED:" + b.reasoning})  # fmt: skip
    if b.text:
        output.append({"id": "msg_up", "type": "message", "role": "assistant",
                       "status": "completed", "content": [{"type": "output_text",
                       "text": b.text, "annotations": [], "logprobs": []}]})  # fmt: skip
    if b.tool_call:
        function = b.tool_call["function"]
        output.append({"id": "fc_up", "type": "function_call", "status": "completed",
                       "call_id": b.tool_call["id"], "name": function["name"],
                       "arguments": function["arguments"]})  # fmt: skip
    return {
        "id": f"resp_up{time.monotonic_ns()}", "object": "response", "created_at": int(time.time()),
        "status": "incomplete" if b.finish_reason == "length" else "completed",
        "model": body["model"], "output": output, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": body.get("tools", []), "error": None,
        "incomplete_details": None, "instructions": body.get("instructions"),
        "store": body.get("store", True),  # as OpenAI: what it was asked
        "usage": {
            "input_tokens": b.prompt_tokens,
            "input_tokens_details": {"cached_tokens": b.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": b.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": b.reasoning_tokens},
            "total_tokens": b.prompt_tokens + b.completion_tokens,
        },
    }  # fmt: skip


def _events(final: dict[str, Any], b: Behavior) -> list[dict[str, Any] | None]:
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any] | None] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
    ]
    for index, item in enumerate(final["output"]):
        where = {"output_index": index, "item_id": item["id"]}
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "status": "in_progress"}})  # fmt: skip
        if item["type"] == "message":
            events.append(
                {
                    "type": "response.content_part.added",
                    **where,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            )
            for n, piece in enumerate(split(b.text, b.chunks)):
                if b.cut_after is not None and n >= b.cut_after:
                    events.append(None)
                    return events
                events.append(
                    {
                        "type": "response.output_text.delta",
                        **where,
                        "content_index": 0,
                        "delta": piece,
                        "logprobs": [],
                    }
                )
            events.append(
                {
                    "type": "response.output_text.done",
                    **where,
                    "content_index": 0,
                    "text": b.text,
                    "logprobs": [],
                }
            )
            events.append(
                {
                    "type": "response.content_part.done",
                    **where,
                    "content_index": 0,
                    "part": item["content"][0],
                }
            )
        elif item["type"] == "function_call":
            events.append(
                {
                    "type": "response.function_call_arguments.delta",
                    **where,
                    "delta": item["arguments"],
                }
            )
            events.append(
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "arguments": item["arguments"],
                }
            )
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": item})  # fmt: skip
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": kind, "response": final})
    for n, event in enumerate(events):
        if event is not None:
            event["sequence_number"] = n
    return events
