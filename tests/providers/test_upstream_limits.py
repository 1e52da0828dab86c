"""A broken upstream cannot exhaust memory: non-streamed bodies and stream lines are capped
(``max_body_bytes``, ``max_line_bytes``), answered as 502 ``upstream_error`` with relaygate's own
sentence, and a long line is buffered in linear time."""

from __future__ import annotations

import json
import tracemalloc
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from relaygate.errors import UpstreamProtocolError
from relaygate.providers.anthropic import AnthropicProvider
from relaygate.providers.base import Event, Provider
from relaygate.providers.gemini import GeminiProvider
from relaygate.providers.http import HttpJsonProvider
from relaygate.providers.openai import OpenAIProvider
from relaygate.providers.reading import LineSplitter
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers.server import ThreadedServer
from tests.providers.support import call, drain
from tests.support.gateway import GatewayProcess

LIMIT = 1024 * 1024
"""The limits the tests configure (1 MiB)."""
FLOOD = 24 * LIMIT
"""What the broken upstream sends: far more than the limit."""
PIECE = 64 * 1024


@dataclass
class Flood:
    """An answer of ``size`` bytes after ``head``, with no newline, sent in 64 KiB writes."""

    head: bytes
    size: int = FLOOD
    declared: bool = False
    """Send a ``Content-Length`` (a body only)."""
    stream: bool = False


class Flooder(ThreadedServer[Flood]):
    """Answers every POST with the scripted flood; stops writing when the client leaves."""

    sent = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        reply = self.next_reply()
        kind = "text/event-stream" if reply.stream else "application/json"
        response = web.StreamResponse(headers={"content-type": kind})
        if reply.declared:
            response.content_length = len(reply.head) + reply.size
        await response.prepare(request)
        piece = b"x" * PIECE
        self.sent = 0
        try:
            await response.write(reply.head)
            while self.sent < reply.size:
                await response.write(piece)
                self.sent += PIECE
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client has gone: the point of the test
        return response


@pytest.fixture(scope="module")
def flooder() -> Iterator[Flooder]:
    server = Flooder(Flood(b""))
    server.start()
    yield server
    server.stop()


PROVIDERS: dict[str, tuple[type[HttpJsonProvider], str]] = {
    "openai": (OpenAIProvider, "/v1"),
    "anthropic": (AnthropicProvider, ""),
    "gemini": (GeminiProvider, "/v1beta"),
}
STREAM_HEAD = b'data: {"type": "content_block_delta", "text": "'
BODY_HEAD = b'{"choices": [{"message": {"content": "'


def provider(name: str, server: Flooder, session: UpstreamClient, **limits: int) -> Provider:
    cls, path = PROVIDERS[name]
    settings = UpstreamSettings(
        provider=name, name=f"broken-{name}", api_key="k", base_url=server.root + path, **limits
    )
    return cls(settings, session)


async def traced_peak(events: Provider, stream: bool) -> tuple[int, list[Event], Exception]:
    """Run one answer under tracemalloc: the peak of traced memory, the events, the error."""
    seen: list[Event] = []
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamProtocolError) as raised:
            await drain(events.events(call(body)), seen)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, seen, raised.value


@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_a_huge_stream_line_is_an_upstream_error_in_bounded_memory(
    flooder: Flooder, name: str
) -> None:
    flooder.reset(Flood(STREAM_HEAD, stream=True))
    async with UpstreamClient() as session:
        upstream = provider(name, flooder, session, max_line_bytes=LIMIT)
        peak, _, error = await traced_peak(upstream, stream=True)
    assert error.message == (  # type: ignore[attr-defined]
        f"Upstream broken-{name} sent a stream line larger than 1 MiB, relaygate's limit"
        " (max_line_bytes); the answer was dropped"
    )
    assert peak < 4 * LIMIT, f"{peak / LIMIT:.1f} MiB traced for a 1 MiB line limit"
    assert flooder.sent < FLOOD  # reading stopped at the limit


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_a_huge_body_is_an_upstream_error_in_bounded_memory(
    flooder: Flooder, name: str, declared: bool
) -> None:
    flooder.reset(Flood(BODY_HEAD, declared=declared))
    async with UpstreamClient() as session:
        upstream = provider(name, flooder, session, max_body_bytes=LIMIT)
        peak, _, error = await traced_peak(upstream, stream=False)
    assert error.message == (  # type: ignore[attr-defined]
        f"Upstream broken-{name} sent a body larger than 1 MiB, relaygate's limit"
        " (max_body_bytes); the answer was dropped"
    )
    assert peak < 4 * LIMIT, f"{peak / LIMIT:.1f} MiB traced for a 1 MiB body limit"


async def test_answers_within_the_limits_are_read_whole(flooder: Flooder) -> None:
    text = "y" * (LIMIT - 1000)
    answer = {"choices": [{"message": {"content": text}, "finish_reason": "stop"}]}
    flooder.reset(Flood(json.dumps(answer).encode(), size=0))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with UpstreamClient() as session:
        upstream = provider("openai", flooder, session, max_body_bytes=LIMIT)
        seen: list[Event] = []
        await drain(upstream.events(call(body)), seen)
    assert any(getattr(event, "text", None) == text for event in seen)


# --- the line splitter: linear, exact --------------------------------------------------------


def test_a_long_line_in_small_pieces_is_buffered_in_linear_time() -> None:
    """32 MiB in 512-byte reads: 65,536 reads. Re-joining the buffer at every read (as before)
    would copy about 1 TiB and never finish within the test's timeout; appending copies each
    byte a bounded number of times."""
    splitter = LineSplitter(64 * LIMIT, "up")
    piece = b"z" * 512
    reads = 32 * LIMIT // len(piece)
    for _ in range(reads):
        assert splitter.feed(piece) == []
    lines = splitter.feed(b"!\nnext")
    assert [len(line) for line in lines] == [32 * LIMIT + 1]
    assert lines[0].endswith(b"z!")
    assert splitter.rest() == b"next"
    assert splitter.rest() == b""


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([b"a\nbb\n", b"ccc\n"], id="whole-lines"),
        pytest.param([b"a\nb", b"b\ncc", b"c\n"], id="split-lines"),
        pytest.param([b"a", b"\n", b"bb", b"", b"\nccc\n"], id="newline-alone"),
        pytest.param([b"a\n\nbb\nccc\n"], id="empty-line"),
    ],
)
def test_lines_come_out_as_they_went_in(pieces: list[bytes]) -> None:
    splitter = LineSplitter(LIMIT, "up")
    lines = [line for piece in pieces for line in splitter.feed(piece)]
    assert [line for line in lines if line] == [b"a", b"bb", b"ccc"]
    assert b"".join(pieces).count(b"\n") == len(lines)


@pytest.mark.parametrize("size", [1, 3, 7, 1 << 20], ids=["1-byte reads", "3", "7", "one read"])
def test_texts_of_whole_lines_come_out_as_they_went_in(size: int) -> None:
    stream = b"a\nbb\n\nccc\ndddd"
    splitter = LineSplitter(LIMIT, "up")
    texts = [splitter.text(stream[at : at + size]) for at in range(0, len(stream), size)]
    assert all(text.endswith(b"\n") for text in texts if text)
    assert b"".join(texts) == b"a\nbb\n\nccc\n"
    assert splitter.rest() == b"dddd"


def test_a_text_read_of_whole_lines_is_not_copied() -> None:
    piece = b"a\nbb\n"
    assert LineSplitter(LIMIT, "up").text(piece) is piece


def test_an_unfinished_line_of_texts_is_held_to_the_limit() -> None:
    splitter = LineSplitter(10, "up")
    assert splitter.text(b"ok\n123456") == b"ok\n"
    with pytest.raises(UpstreamProtocolError, match="max_line_bytes"):
        splitter.text(b"78901\n")


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([b"x" * 11], id="in-one-read"),
        pytest.param([b"x" * 6, b"x" * 5], id="across-reads"),
        pytest.param([b"ok\n" + b"x" * 11 + b"\nok\n"], id="inside-a-read"),
        pytest.param([b"x" * 6, b"x" * 5 + b"\n"], id="finished-too-long"),
    ],
)
def test_a_line_over_the_limit_is_refused_as_soon_as_it_is_seen(pieces: list[bytes]) -> None:
    splitter = LineSplitter(10, "up")
    *before, last = pieces
    for piece in before:
        assert splitter.feed(piece) == []
    with pytest.raises(UpstreamProtocolError):
        splitter.feed(last)
    assert splitter.rest() == b""


def test_a_line_at_the_limit_passes() -> None:
    splitter = LineSplitter(10, "up")
    assert splitter.feed(b"x" * 6) == []
    assert splitter.feed(b"x" * 4 + b"\n" + b"y" * 10) == [b"x" * 10]
    assert splitter.rest() == b"y" * 10


# --- through relaygate -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, flooder: Flooder) -> Iterator[GatewayProcess]:
    upstream = {
        "provider": "openai",
        "name": "broken",
        "base_url": flooder.root + "/v1",
        "max_body_bytes": LIMIT,
        "max_line_bytes": LIMIT,
    }
    model = {"pricing": {"input": "1", "output": "1"}, "upstreams": [upstream]}
    directory: Path = tmp_path_factory.mktemp("limits-gateway")
    config = {"models": {"m": model}, "ledger_flush_seconds": 0.05}
    gateway = GatewayProcess(directory, config).start()
    yield gateway
    gateway.stop()


def test_relaygate_answers_a_huge_body_with_502(gateway: GatewayProcess, flooder: Flooder) -> None:
    flooder.reset(Flood(BODY_HEAD))
    key = gateway.create_key("--credits", "5")["key"]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    status, _, answer = gateway.post("/v1/chat/completions", body, key)
    assert status == 502, answer
    assert answer["error"]["type"] == "upstream_error"
    assert "larger than 1 MiB" in answer["error"]["message"]
    assert "xxxx" not in json.dumps(answer)


def test_relaygate_ends_a_stream_with_a_huge_line_with_an_error_event(
    gateway: GatewayProcess, flooder: Flooder
) -> None:
    flooder.reset(Flood(b'data: {"choices": [{"delta": {"content": "', stream=True))
    key = gateway.create_key("--credits", "5")["key"]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        sent = response.read()
    events = [e.removeprefix(b"data: ") for e in sent.split(b"\n\n") if e.startswith(b"data:")]
    error = json.loads(events[-1])["error"]
    assert error["type"] == "upstream_error"
    assert "stream line larger than 1 MiB" in error["message"]
    assert b"xxxx" not in sent
