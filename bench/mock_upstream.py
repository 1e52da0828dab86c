"""A fast mock OpenAI upstream for benchmarks: canned answers over raw asyncio + httptools.

``POST /v1/chat/completions`` answers a fixed completion, or with ``"stream": true`` 20 content
chunks and a final usage chunk. ``POST /v1/messages`` answers the same in Anthropic's Messages
format (a message, or its stream events: 20 text deltas between ``message_start`` and
``message_stop``). ``POST /v1/responses`` answers the same in the Responses API's shape (a
response object, or its event stream: 20 text deltas and ``response.completed``).
``--latency-ms`` delays every answer (before its headers).
Run: ``python -m bench.mock_upstream --port 9100 --latency-ms 0``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httptools
import uvloop

_USAGE = {
    "prompt_tokens": 13,
    "completion_tokens": 20,
    "total_tokens": 33,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}


def _completion() -> bytes:
    body = json.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 1760032810,
            "model": "mock",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "word " * 20},
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    ).encode()
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    return head + body


def _stream() -> bytes:
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = []
    for i in range(20):
        delta = {"content": "word "} if i else {"role": "assistant", "content": "word "}
        events.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**base, "choices": [], "usage": _USAGE})
    payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    payload += b"data: [DONE]\n\n"
    chunk = hex(len(payload))[2:].encode() + b"\r\n" + payload + b"\r\n0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return head + chunk


def _response(content_type: bytes, payload: bytes, chunked: bool) -> bytes:
    if not chunked:
        length = str(len(payload)).encode()
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: " + length
            + b"\r\n\r\n" + payload
        )  # fmt: skip
    chunk = hex(len(payload))[2:].encode() + b"\r\n" + payload + b"\r\n0\r\n\r\n"
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type
        + b"\r\ntransfer-encoding: chunked\r\n\r\n" + chunk
    )  # fmt: skip


_MESSAGE = {
    "id": "msg_mock",
    "type": "message",
    "role": "assistant",
    "model": "mock",
    "content": [{"type": "text", "text": "word " * 20}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 13, "output_tokens": 20, "cache_read_input_tokens": 0,
              "cache_creation_input_tokens": 0},
}  # fmt: skip


def _message_stream() -> bytes:
    start = {**_MESSAGE, "content": [], "stop_reason": None,
             "usage": {**_MESSAGE["usage"], "output_tokens": 1}}  # type: ignore[dict-item]
    events: list[dict[str, object]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    for _ in range(20):
        delta = {"type": "text_delta", "text": "word "}
        events.append({"type": "content_block_delta", "index": 0, "delta": delta})
    events.append({"type": "content_block_stop", "index": 0})
    events.append({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                   "stop_sequence": None}, "usage": {"output_tokens": 20}})  # fmt: skip
    events.append({"type": "message_stop"})
    payload = b"".join(
        b"event: " + str(e["type"]).encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n"
        for e in events
    )
    return _response(b"text/event-stream", payload, chunked=True)
def _response_object(status: str) -> dict[str, object]:
    text = "word " * 20
    return {
        "id": "resp_mock", "object": "response", "created_at": 1760032810, "status": status,
        "model": "mock", "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "output": [] if status == "in_progress" else [
            {"id": "msg_mock", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": text, "annotations": []}]}
        ],
        "usage": None if status == "in_progress" else {
            "input_tokens": 13, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 33,
        },
    }  # fmt: skip


def _responses_body() -> bytes:
    body = json.dumps(_response_object("completed")).encode()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    return head + str(len(body)).encode() + b"\r\n\r\n" + body


def _response_stream() -> bytes:
    where = {"item_id": "msg_mock", "output_index": 0, "content_index": 0}
    events: list[dict[str, object]] = [
        {"type": "response.created", "response": _response_object("in_progress")},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"id": "msg_mock", "type": "message", "role": "assistant",
                  "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **where,
         "part": {"type": "output_text", "text": "", "annotations": []}},
    ]  # fmt: skip
    events += [{"type": "response.output_text.delta", **where, "delta": "word "}] * 20
    events.append({"type": "response.completed", "response": _response_object("completed")})
    payload = b"".join(
        b"event: " + str(e["type"]).encode() + b"\ndata: "
        + json.dumps({**e, "sequence_number": n}).encode() + b"\n\n"
        for n, e in enumerate(events)
    )  # fmt: skip
    chunk = hex(len(payload))[2:].encode() + b"\r\n" + payload + b"\r\n0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return head + chunk


COMPLETION = _completion()
STREAM = _stream()
MESSAGE = _response(b"application/json", json.dumps(_MESSAGE).encode(), chunked=False)
MESSAGE_STREAM = _message_stream()
RESPONSE = _responses_body()
RESPONSE_STREAM = _response_stream()


class _Protocol(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.parser = httptools.HttpRequestParser(self)
        self.body = bytearray()
        self.url = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.body = bytearray()
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        stream = b'"stream":true' in self.body.replace(b" ", b"")
        if self.url.startswith(b"/v1/messages"):
            answer = MESSAGE_STREAM if stream else MESSAGE
        elif self.url.endswith(b"/responses"):
            answer = RESPONSE_STREAM if stream else RESPONSE
        else:
            answer = STREAM if stream else COMPLETION
        if self.latency:
            asyncio.get_running_loop().call_later(self.latency, self._write, answer)
        else:
            self._write(answer)

    def _write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def serve(port: int, latency_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Protocol(latency_ms / 1000), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.latency_ms))


if __name__ == "__main__":
    main()
