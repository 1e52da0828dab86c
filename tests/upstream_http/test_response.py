"""Answers: chunks, content encodings (and a zip bomb), malformed and cut answers, timeouts,
head limits, flow control."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from relaygate.errors import UpstreamProtocolError
from relaygate.providers.reading import read_body
from relaygate.upstream_http import (
    ConnectionClosed,
    HeadTooLarge,
    ReadTimeout,
    RemoteProtocolError,
    Response,
    UpstreamClient,
)
from relaygate.upstream_http.response import HIGH_WATER
from tests.upstream_http.servers import Peer, Upstream, answer, keep_answering


def replying(*sends: bytes, hold: bool = True):  # type: ignore[no-untyped-def]
    """A handler that answers the first request with ``sends`` (one write each), then holds
    the connection open until the client closes it (or closes it at once)."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        for data in sends:
            await peer.send(data)
        if hold:
            await peer.until_closed()

    return handler


async def _read_all(response: Response) -> bytes:
    chunks = []
    while chunk := await response.receive():
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_chunked_answer_is_dechunked_and_the_connection_reused() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    pieces = [b"5\r\nhello\r\n", b"1\r\n \r\n5\r\nworld\r\n", b"0\r\n\r\n"]

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(chunked)
        for piece in pieces:
            await peer.send(piece)
        await keep_answering(peer)

    async with Upstream(handler) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        assert await _read_all(response) == b"hello world"
        response.release()
        second = await client.post(upstream.url(), b"{}", {})
        assert await _read_all(second) == b"ok"
        second.release()
    assert upstream.connections == 1


async def test_headers_are_read_in_any_case() -> None:
    reply = answer(b"{}", "Retry-After: 3", "X-Request-Id: r1", "Set-Cookie: a", "Set-Cookie: b")
    async with Upstream(replying(reply)) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        assert response.status == 200
        assert response.headers.get("retry-after") == "3"
        assert response.headers["X-REQUEST-ID"] == "r1"
        assert "Retry-After" in response.headers
        assert response.headers.get("retry-after-ms") is None
        assert response.headers["set-cookie"] == "a, b"
        response.close()


async def test_a_body_without_length_ends_with_the_connection() -> None:
    reply = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    async with Upstream(replying(reply, hold=False)) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        assert await _read_all(response) == b"until the end"
        response.release()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        pytest.param("gzip", gzip.compress, id="gzip"),
        pytest.param("deflate", zlib.compress, id="deflate"),
        pytest.param(
            "deflate", lambda b: zlib.compress(b)[2:-4], id="raw-deflate"
        ),  # as some servers send it
    ],
)
async def test_an_encoded_answer_is_decoded(encoding: str, encode: object) -> None:
    text = b'{"choices": []}' * 1000
    body = encode(text)  # type: ignore[operator]
    reply = answer(body, f"Content-Encoding: {encoding}")
    async with Upstream(replying(reply)) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        assert await read_body(response, 1 << 20, "u") == text
        response.release()


async def test_a_zip_bomb_stops_at_the_limit_with_bounded_memory() -> None:
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)  # 64 MiB of zeros in ~64 KiB
    reply = answer(bomb, "Content-Encoding: gzip")
    async with Upstream(replying(reply)) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        largest = 0
        total = 0
        while total <= 4 << 20 and (chunk := await response.receive()):
            largest = max(largest, len(chunk))
            total += len(chunk)
        assert total > 4 << 20  # it did decode...
        assert largest <= 2 * HIGH_WATER  # ...a bounded piece at a time
        response.close()
        second = await client.post(upstream.url(), b"{}", {})
        with pytest.raises(UpstreamProtocolError, match="a body larger than 1 MiB"):
            await read_body(second, 1 << 20, "u")
        second.close()


async def test_a_broken_encoding_is_a_protocol_error() -> None:
    reply = answer(b"not gzip at all", "Content-Encoding: gzip")
    async with Upstream(replying(reply)) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        with pytest.raises(RemoteProtocolError):
            await _read_all(response)
        response.close()


@pytest.mark.parametrize(
    "sends",
    [
        pytest.param([b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"], id="one"),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\n"] + [b"X-H: " + b"b" * 1000 + b"\r\n"] * 80, id="many-reads"
        ),
    ],
)
async def test_a_head_over_64_kib_is_an_error(sends: list[bytes]) -> None:
    async with Upstream(replying(*sends)) as upstream, UpstreamClient() as client:
        with pytest.raises(HeadTooLarge):
            await client.post(upstream.url(), b"{}", {})


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 2xx OK\r\nContent-Length: 0\r\n\r\n", id="status"),
        pytest.param(b"SMTP ready\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", id="length"),
    ],
)
async def test_a_malformed_answer_is_a_protocol_error(reply: bytes) -> None:
    async with Upstream(replying(reply)) as upstream, UpstreamClient() as client:
        with pytest.raises(RemoteProtocolError):
            await client.post(upstream.url(), b"{}", {})
    await upstream.ended[0]


async def test_a_broken_chunk_is_a_protocol_error() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    handler = replying(head, b"4\r\nsome\r\nzz\r\n")
    async with Upstream(handler) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        assert await response.receive() == b"some"
        with pytest.raises(RemoteProtocolError):
            await response.receive()
        response.close()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", id="length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nshort", id="chunk"
        ),
    ],
)
async def test_an_early_eof_is_an_error(reply: bytes) -> None:
    async with Upstream(replying(reply, hold=False)) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        with pytest.raises(ConnectionClosed):
            await _read_all(response)
        response.close()


async def test_a_silent_upstream_is_a_read_timeout() -> None:
    async with Upstream(replying()) as upstream, UpstreamClient() as client:
        with pytest.raises(ReadTimeout):
            await client.post(upstream.url(), b"{}", {}, read_timeout=0.05)


async def test_a_stream_that_stops_is_a_read_timeout() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with Upstream(replying(head, b"4\r\nsome\r\n")) as upstream:
        async with UpstreamClient() as client:
            response = await client.post(upstream.url(), b"{}", {}, read_timeout=0.05)
            assert await response.receive() == b"some"
            with pytest.raises(ReadTimeout):
                await response.receive()
            response.close()
        await upstream.ended[0]


async def test_a_fast_upstream_is_held_to_the_bound() -> None:
    size = 16 << 20

    async def flood(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(bytes(size)))
        await keep_answering(peer)

    async with Upstream(flood) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        for _ in range(100_000):  # let the upstream send as much as it can
            if response._paused:
                break
            await asyncio.sleep(0)
        assert response._paused
        held = sum(map(len, response._chunks))
        assert HIGH_WATER < held <= 4 * HIGH_WATER
        assert len(await _read_all(response)) == size  # reading resumes it
        response.release()
        assert await _read_all(await client.post(upstream.url(), b"{}", {})) == b"ok"
    assert upstream.connections == 1


async def test_an_interim_answer_is_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
    async with Upstream(replying(early, answer(b"final"))) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        assert response.status == 200
        assert await _read_all(response) == b"final"
        response.release()
