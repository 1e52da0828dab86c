"""Keep-alive reuse, the stale-connection retry, closes, cancellation, the request's bytes."""

from __future__ import annotations

import asyncio

import pytest

from relaygate.upstream_http import ConnectError, ConnectionClosed, UpstreamClient
from tests.upstream_http.servers import Peer, Upstream, answer, keep_answering


async def _post(client: UpstreamClient, upstream: Upstream, body: bytes = b"{}") -> bytes:
    response = await client.post(upstream.url(), body, {"content-type": "application/json"})
    data = await response.receive()
    assert await response.receive() == b""
    response.release()
    return data


async def test_a_connection_is_reused_after_a_whole_answer() -> None:
    async with Upstream(keep_answering) as upstream, UpstreamClient() as client:
        assert [await _post(client, upstream) for _ in range(3)] == [b"ok"] * 3
    assert upstream.connections == 1
    assert len(upstream.peers[0].requests) == 3


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(answer(b"ok", "Connection: close"), id="connection-close"),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="http-1.0"),
    ],
)
async def test_an_answer_that_closes_is_not_reused(reply: bytes) -> None:
    async def once(peer: Peer) -> None:
        await peer.request()
        await peer.send(reply)
        await peer.until_closed()

    async with Upstream(once) as upstream, UpstreamClient() as client:
        assert [await _post(client, upstream) for _ in range(2)] == [b"ok"] * 2
    assert upstream.connections == 2


async def test_a_request_that_says_close_is_not_reused() -> None:
    async with Upstream(keep_answering) as upstream, UpstreamClient() as client:
        for _ in range(2):
            response = await client.post(upstream.url(), b"{}", {"Connection": "close"})
            assert await response.receive() == b"ok"
            response.release()
    assert upstream.connections == 2


async def test_an_answer_released_before_its_end_closes_the_connection() -> None:
    async def slow(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")

    async with Upstream(slow) as upstream, UpstreamClient() as client:
        for _ in range(2):
            response = await client.post(upstream.url(), b"{}", {})
            assert await response.receive() == b"half"
            response.release()  # not whole: closed, not pooled
        await upstream.ended[0]
    assert upstream.connections == 2


async def test_a_reused_connection_the_server_closed_is_retried_once() -> None:
    async def forgetful(peer: Peer) -> None:
        if peer.number == 1:  # answers once, then drops the next request unanswered
            await peer.request()
            await peer.send(answer(b"first"))
            await peer.request()
            return
        await keep_answering(peer, answer(b"second"))

    async with Upstream(forgetful) as upstream, UpstreamClient() as client:
        assert await _post(client, upstream) == b"first"
        assert await _post(client, upstream) == b"second"
    assert upstream.connections == 2
    assert len(upstream.peers[1].requests) == 1


async def test_a_new_connection_closed_before_the_answer_is_not_retried() -> None:
    async def rude(peer: Peer) -> None:
        await peer.request()

    async with Upstream(rude) as upstream, UpstreamClient() as client:
        with pytest.raises(ConnectionClosed):
            await client.post(upstream.url(), b"{}", {})
    assert upstream.connections == 1


async def test_a_reused_connection_that_breaks_mid_answer_is_not_retried() -> None:
    async def breaks(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first"))
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\n")

    async with Upstream(breaks) as upstream, UpstreamClient() as client:
        assert await _post(client, upstream) == b"first"
        with pytest.raises(ConnectionClosed):
            await client.post(upstream.url(), b"{}", {})
    assert upstream.connections == 1


async def test_a_request_cancelled_while_waiting_closes_its_connection() -> None:
    async def silent(peer: Peer) -> None:
        await peer.request()
        await peer.until_closed()

    async with Upstream(silent) as upstream, UpstreamClient() as client:
        task = asyncio.create_task(client.post(upstream.url(), b"{}", {}))
        while not (upstream.peers and upstream.peers[0].requests):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await upstream.ended[0]  # the server saw the close
        assert not any(pool.connections for pool in client.pools.values())


async def test_a_read_cancelled_mid_answer_closes_its_connection() -> None:
    async def dribble(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsome\r\n")
        await peer.until_closed()

    async with Upstream(dribble) as upstream, UpstreamClient() as client:
        response = await client.post(upstream.url(), b"{}", {})
        assert await response.receive() == b"some"

        async def read() -> bytes:
            try:
                return await response.receive()
            finally:
                response.close()  # as the providers do with an answer they abandon

        task = asyncio.create_task(read())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await upstream.ended[0]
    assert upstream.connections == 1


async def test_idle_connections_are_closed_after_a_while() -> None:
    async with Upstream(keep_answering) as upstream, UpstreamClient(idle_seconds=0.05) as client:
        await _post(client, upstream)
        await upstream.ended[0]  # closed by the client's sweep, unused
        assert await _post(client, upstream) == b"ok"
    assert upstream.connections == 2


async def test_close_ends_every_connection_and_later_requests() -> None:
    async with Upstream(keep_answering) as upstream:
        client = UpstreamClient()
        await _post(client, upstream)
        await client.close()
        await upstream.ended[0]
        with pytest.raises(ConnectError):
            await client.post(upstream.url(), b"{}", {})


async def test_the_request_is_one_write_with_the_headers_aiohttp_sent() -> None:
    async with Upstream(keep_answering) as upstream, UpstreamClient() as client:
        target = client.target(
            upstream.url("/v1/models/m:stream?alt=sse"),
            {"content-type": "application/json", "x-api-key": "k", "accept": "text/plain"},
        )
        response = await target.post(b'{"a":1}')
        await response.receive()
        response.release()
    head, body = upstream.peers[0].requests[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/models/m:stream?alt=sse HTTP/1.1"
    assert f"host: 127.0.0.1:{upstream.port}" in lines
    assert "accept-encoding: gzip, deflate" in lines
    assert "accept: text/plain" in lines
    assert "accept: */*" not in lines
    assert "x-api-key: k" in lines
    assert "content-length: 7" in lines
    assert body == b'{"a":1}'


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-a": "1\r\nx-b: 2"}, id="value"),
        pytest.param({"x-a\r\nx-b": "2"}, id="name"),
    ],
)
async def test_a_header_with_a_line_break_is_refused(headers: dict[str, str]) -> None:
    async with UpstreamClient() as client:
        with pytest.raises(ValueError, match="line break"):
            client.target("http://127.0.0.1:9/", headers)


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with Upstream(keep_answering) as upstream:
        url = upstream.url()
    async with UpstreamClient() as client:
        with pytest.raises(ConnectError):
            await client.post(url, b"{}", {})
