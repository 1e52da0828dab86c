"""The OpenAI provider's stream loop against a raw SSE server: text chunks that repeat the
stream's template are passed through as bytes, everything else is decoded, and either way the
client gets exactly the upstream's text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from relaygate.errors import UpstreamProtocolError
from relaygate.protocol.assemble import ChunkWriter, Collected
from relaygate.providers.base import EncodedText, Event, TextDelta, TokenUsage
from relaygate.providers.openai import OpenAIProvider
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers.server import ThreadedServer
from tests.providers.support import call, collect, drain

TEXTS = [
    "Hello",
    " world",
    ', "quoted"',
    " back\\slash \\",
    " caf\u00e9 \u4e16\u754c",
    " <b>&amp;</b>",
    " a/b",
    " tab\there",
    " end.",
]
"""Text pieces that JSON encoders write differently (escapes, non-ASCII, Go's ``<>&``)."""


class RawSse(ThreadedServer[bytes]):
    """Answers every request with the scripted SSE body, as one write."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._answer)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(self.next_reply())
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def sse() -> Iterator[RawSse]:
    server = RawSse(b"")
    server.start()
    yield server
    server.stop()


def line(payload: dict[str, Any], **dumps: Any) -> bytes:
    return b"data: " + json.dumps(payload, **dumps).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 7, "model": "m"}
    return {**base, **top, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def stream_lines(texts: list[str], vary: bool = False, **dumps: Any) -> list[bytes]:
    """A whole stream: role chunk, one chunk per text, finish, usage, [DONE]. With ``vary``,
    every chunk carries a different ``obfuscation`` field, as OpenAI's do."""
    lines = [line(chunk({"role": "assistant", "content": ""}), **dumps)]
    for i, text in enumerate(texts):
        extra = {"obfuscation": "x" * (i + 1)} if vary else {}
        lines.append(line(chunk({"content": text}, **extra), **dumps))
    lines.append(line(chunk({}, "stop"), **dumps))
    usage = {"prompt_tokens": 3, "completion_tokens": len(texts), "total_tokens": 3 + len(texts)}
    lines.append(line({"id": "chatcmpl-up", "choices": [], "usage": usage}, **dumps))
    lines.append(b"data: [DONE]")
    return lines


def provider_for(sse: RawSse, session: UpstreamClient) -> OpenAIProvider:
    settings = UpstreamSettings(provider="openai", api_key="sk-up", base_url=sse.root + "/v1")
    return OpenAIProvider(settings, session)


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def answer(
    sse: RawSse, session: UpstreamClient, lines: list[bytes], end: bytes = b"\n\n"
) -> tuple[list[Event], bytes]:
    """The provider's events for ``lines`` (each followed by ``end``), and the SSE bytes a
    client gets from them."""
    sse.reset(b"".join(line + end for line in lines))
    events = await collect(provider_for(sse, session), call(BODY))
    writer = ChunkWriter("chatcmpl-ours", "public", 1)
    return events, b"".join(filter(None, map(writer.event, events)))


def client_text(sent: bytes) -> str:
    """The text a client reads from relaygate's chunks (each checked to be relaygate's)."""
    text = ""
    for event in sent.split(b"\n\n"):
        if event:
            data = json.loads(event.removeprefix(b"data: "))
            assert (data["id"], data["model"]) == ("chatcmpl-ours", "public")
            for choice in data["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize(
    ("dumps", "end"),
    [
        ({}, b"\n\n"),
        ({"ensure_ascii": False}, b"\n\n"),
        ({"separators": (",", ":")}, b"\n\n"),
        ({}, b"\r\n\r\n"),
    ],
    ids=["ascii-escaped", "utf8", "compact", "crlf"],
)
async def test_repeated_text_chunks_pass_through_and_read_back_exactly(
    sse: RawSse, session: UpstreamClient, dumps: dict[str, Any], end: bytes
) -> None:
    events, sent = await answer(sse, session, stream_lines(TEXTS, **dumps), end)
    passed = [lit for e in events if isinstance(e, EncodedText) for lit in e.literals]
    assert passed, "no chunk was passed through as bytes"
    collected = Collected()
    for event in events:
        collected.add(event)
    assert collected.deltas == len(TEXTS)
    answer_text = collected.completion("c", "public", 1, TokenUsage()).choices[0].message.content
    assert answer_text == "".join(TEXTS)
    assert client_text(sent) == "".join(TEXTS)
    assert isinstance(events[-1], TokenUsage)
    assert events[-1].completion_tokens == len(TEXTS)


async def test_chunks_that_differ_beyond_their_text_are_each_decoded(
    sse: RawSse, session: UpstreamClient
) -> None:
    events, sent = await answer(sse, session, stream_lines(TEXTS, vary=True))
    assert not [e for e in events if isinstance(e, EncodedText)]
    assert [e.text for e in events if isinstance(e, TextDelta)] == TEXTS
    assert client_text(sent) == "".join(TEXTS)


async def test_a_chunk_like_the_template_but_with_more_choices_is_decoded(
    sse: RawSse, session: UpstreamClient
) -> None:
    two = chunk({"content": "b"})
    two["choices"].append({"index": 1, "delta": {"content": "second"}, "finish_reason": None})
    lines = stream_lines(["one", "two"])
    lines.insert(3, line(two))
    events, sent = await answer(sse, session, lines)
    by_choice = {(e.index, e.text) for e in events if isinstance(e, TextDelta)}
    assert (1, "second") in by_choice
    assert client_text(sent) == "onetwobsecond"


async def test_a_chunk_with_a_bad_text_fails_as_an_upstream_error_after_the_ones_before(
    sse: RawSse, session: UpstreamClient
) -> None:
    lines = stream_lines(["one", "two", "three"], separators=(",", ":"))
    # like the template, but a raw control character in the text: not JSON
    lines.insert(4, lines[3].replace(b'"three"', b'"a\rdata: [DONE]\r"'))
    sse.reset(b"".join(line + b"\n\n" for line in lines))
    seen: list[Event] = []
    with pytest.raises(UpstreamProtocolError, match="could not be read"):
        await drain(provider_for(sse, session).events(call(BODY)), seen)
    collected = Collected()
    for event in seen:
        collected.add(event)
    assert collected.deltas == 3  # one, two and three reached the client (and the bill)
    assert not any(isinstance(e, EncodedText) and b"DONE" in b"".join(e.literals) for e in seen)


async def test_an_error_chunk_ends_the_stream_after_the_text_read_with_it(
    sse: RawSse, session: UpstreamClient
) -> None:
    lines = stream_lines(["one", "two"])[:3]
    lines.append(line({"error": {"message": "overloaded", "type": "server_error"}}))
    sse.reset(b"".join(line + b"\n\n" for line in lines))
    seen: list[Event] = []
    with pytest.raises(UpstreamProtocolError, match="overloaded"):
        await drain(provider_for(sse, session).events(call(BODY)), seen)
    assert sum(isinstance(e, (TextDelta, EncodedText)) for e in seen) >= 2


async def test_a_last_line_without_its_newline_is_still_read(
    sse: RawSse, session: UpstreamClient
) -> None:
    lines = stream_lines(["one", "two"])
    usage_line = lines[-2]
    sse.reset(b"".join(line + b"\n\n" for line in lines[:-2]) + usage_line)
    events = await collect(provider_for(sse, session), call(BODY))
    assert isinstance(events[-1], TokenUsage)
    assert events[-1].completion_tokens == 2


async def test_a_text_the_template_cannot_take_mid_run_is_decoded_in_its_place(
    sse: RawSse, session: UpstreamClient
) -> None:
    texts = ["one", "two", ', "quoted"', "three", "four"]
    events, sent = await answer(sse, session, stream_lines(texts))
    pieces: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, EncodedText):
            pieces += [("passed", json.loads(literal)) for literal in event.literals]
        elif isinstance(event, TextDelta) and event.text:
            pieces.append(("decoded", event.text))
    assert pieces == [
        ("decoded", "one"),
        ("passed", "two"),
        ("decoded", ', "quoted"'),
        ("passed", "three"),
        ("passed", "four"),
    ]
    assert client_text(sent) == "".join(texts)
