"""A fake OpenAI upstream that accepts every request (200) and then breaks the answer off:
half a non-streamed body (its ``Content-Length`` promising the whole), or a stream closed
after two chunks (no ``finish_reason``, no ``[DONE]``)."""

from __future__ import annotations

import json

from aiohttp import web

from tests.support.fake_openai import Behavior, FakeOpenAI

CUT_STREAM = Behavior(text="this answer is cut short", chunks=5, cut_after=2)


class CuttingOpenAI(FakeOpenAI):
    """Every answer starts and is cut (see the module docstring)."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if body.get("stream"):
            return await self._stream(request, body, CUT_STREAM)
        payload = json.dumps(self._completion(body, Behavior())).encode()
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        request.transport.close()  # type: ignore[union-attr]
        return response
