"""A fake Gemini API (``generateContent``, ``streamGenerateContent?alt=sse``), written from
Google's API reference.

Requests are checked like the real API would: the ``x-goog-api-key`` header (a wrong key is the
API's 400 ``API_KEY_INVALID``), and each part of the body against the official ``google-genai``
SDK's pydantic types (which forbid unknown fields). Every answer it sends is checked against the
SDK's ``GenerateContentResponse`` too. Problems are kept in ``problems``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pydantic
from aiohttp import web
from google.genai import types as gt

from tests.providers.server import ThreadedServer, split

API_KEY = "AIza-upstream-SECRET-0123456789"
_BODY_FIELDS = {
    "contents": None,
    "systemInstruction": gt.Content,
    "generationConfig": gt.GenerationConfig,
    "toolConfig": gt.ToolConfig,
    "tools": gt.Tool,
    "safetySettings": gt.SafetySetting,
    "cachedContent": None,
}


@dataclass
class Reply:
    status: int = 200
    text: str = "Hello from the fake Gemini."
    thoughts: str | None = None
    call: tuple[str, dict[str, Any]] | None = None
    """A function call (name, args) after the text."""
    signature: str | None = None
    """The call part's ``thoughtSignature`` (base64)."""
    finish_reason: str = "STOP"
    block_reason: str | None = None
    """Block the prompt: ``promptFeedback.blockReason`` and no candidates."""
    prompt_tokens: int = 17
    candidates_tokens: int = 8
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    chunks: int = 3
    cut: bool = False
    """Close the connection after the first chunk (no finishReason)."""
    error_mid_stream: bool = False
    error_status: str = "INTERNAL"
    error_message: str = "fake failure"
    retry_after: str | None = None


def request_problems(body: dict[str, Any]) -> list[str]:
    """What the SDK's types find wrong with a ``generateContent`` body."""
    problems = [f"unknown field {name!r}" for name in sorted(set(body) - set(_BODY_FIELDS))]
    checks: list[tuple[str, type[pydantic.BaseModel], Any]] = [
        ("contents", gt.Content, content) for content in body.get("contents") or ()
    ]
    for name, model in _BODY_FIELDS.items():
        if model is not None and name in body:
            values = body[name] if isinstance(body[name], list) else [body[name]]
            checks.extend((name, model, value) for value in values)
    for name, model, value in checks:
        try:
            model.model_validate_json(json.dumps(value))
        except pydantic.ValidationError as exc:
            problems.append(f"{name}: {exc}")
    if not body.get("contents"):
        problems.append("contents: required")
    return problems


class FakeGemini(ThreadedServer[Reply]):
    def __init__(self) -> None:
        super().__init__(Reply())

    @property
    def base_url(self) -> str:
        return self.root + "/v1beta"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{call}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        model, _, method = request.match_info["call"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, "NOT_FOUND", f"unknown method {method!r}")
        if request.headers.get("x-goog-api-key") != API_KEY:
            return _error(400, "INVALID_ARGUMENT", "API key not valid.", reason="API_KEY_INVALID")
        problems = request_problems(body)
        if problems:
            self.problems.extend(problems)
            return _error(400, "INVALID_ARGUMENT", "; ".join(problems))
        reply = self.next_reply()
        if reply.status != 200:
            headers = {"retry-after": reply.retry_after} if reply.retry_after else {}
            return _error(reply.status, reply.error_status, reply.error_message, headers=headers)
        if method == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                self.problems.append("streamGenerateContent without alt=sse")
            return await self._stream(request, model, reply)
        chunks = self._chunks(model, reply, 1)
        return web.json_response(self._merged(chunks))

    # --- answers -------------------------------------------------------------------------

    def _usage(self, reply: Reply) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": reply.candidates_tokens,
            "totalTokenCount": reply.prompt_tokens
            + reply.candidates_tokens
            + reply.thoughts_tokens,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": reply.prompt_tokens - reply.image_tokens},
            ],
        }
        if reply.image_tokens:
            usage["promptTokensDetails"].append(
                {"modality": "IMAGE", "tokenCount": reply.image_tokens}
            )
        if reply.thoughts_tokens:
            usage["thoughtsTokenCount"] = reply.thoughts_tokens
        if reply.cached_tokens:
            usage["cachedContentTokenCount"] = reply.cached_tokens
        return usage

    def _chunks(self, model: str, reply: Reply, pieces: int) -> list[dict[str, Any]]:
        """The answer as streamed chunks (one chunk per group of parts)."""
        base = {"modelVersion": model, "responseId": "fake-response-1"}
        if reply.block_reason:
            feedback = {"blockReason": reply.block_reason}
            return [{**base, "promptFeedback": feedback, "usageMetadata": self._usage(reply)}]
        parts: list[dict[str, Any]] = []
        if reply.thoughts:
            parts += [{"text": t, "thought": True} for t in split(reply.thoughts, pieces)]
        if reply.text:
            parts += [{"text": t} for t in split(reply.text, pieces)]
        if reply.call:
            call: dict[str, Any] = {"functionCall": {"name": reply.call[0], "args": reply.call[1]}}
            if reply.signature:
                call["thoughtSignature"] = reply.signature
            parts.append(call)
        chunks = [
            {**base, "candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}]}
            for part in parts
        ] or [{**base, "candidates": [{"content": {"role": "model", "parts": []}, "index": 0}]}]
        last = chunks[-1]["candidates"][0]
        last["finishReason"] = reply.finish_reason
        chunks[-1]["usageMetadata"] = self._usage(reply)
        for chunk in chunks:
            self._check(chunk)
        return chunks

    def _merged(self, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        """One non-streamed response: every chunk's parts in one candidate."""
        merged = dict(chunks[-1])
        if "candidates" in merged:
            candidate = dict(merged["candidates"][0])
            parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
            candidate["content"] = {"role": "model", "parts": parts}
            merged["candidates"] = [candidate]
        self._check(merged)
        return merged

    def _check(self, payload: dict[str, Any]) -> None:
        try:
            gt.GenerateContentResponse.model_validate(payload)
        except pydantic.ValidationError as exc:
            self.problems.append(f"the fake's own answer is off: {exc}")

    async def _stream(self, request: web.Request, model: str, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i, chunk in enumerate(self._chunks(model, reply, reply.chunks)):
            await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            if i == 0 and reply.cut:
                request.transport.close()  # type: ignore[union-attr]
                return response
            if i == 0 and reply.error_mid_stream:
                error = {
                    "error": {
                        "code": 500,
                        "message": reply.error_message,
                        "status": reply.error_status,
                    }
                }
                await response.write(f"data: {json.dumps(error)}\r\n\r\n".encode())
                return response
        await response.write_eof()
        return response


def _error(
    status: int,
    kind: str,
    message: str,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": kind}
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }
        ]
    return web.json_response({"error": error}, status=status, headers=headers)
