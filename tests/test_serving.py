"""relaygate's HTTP/1.1 connection protocol: framing, keep-alive, pipelining, flow control and
disconnects, on a recording transport and on a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from relaygate.api.http import Message, Receive, Scope, Send
from relaygate.serving import HttpProtocol

App = Callable[[Scope, Receive, Send], Awaitable[None]]
GET = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False
        self.reading = True

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0  # everything written is sent at once

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 80)}.get(name, default)


def connect(app: App, keep_alive: float = 75) -> tuple[HttpProtocol, Recorder]:
    config = SimpleNamespace(loaded=True, loaded_app=app, timeout_keep_alive=keep_alive)
    protocol = HttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = Recorder()
    protocol.connection_made(transport)
    return protocol, transport


async def settle(protocol: HttpProtocol) -> None:
    """Let the connection's tasks run until none is left."""
    for _ in range(100):
        await asyncio.sleep(0)
    await asyncio.gather(*protocol.state.tasks, return_exceptions=True)


async def plain(scope: Scope, receive: Receive, send: Send) -> None:
    body = (await receive())["body"]
    answer = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} ".encode() + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def streamed(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    await send({"type": "http.response.body", "body": b"b", "more_body": False})


# --- on a recording transport --------------------------------------------------------------


async def test_a_head_and_its_body_leave_in_one_write() -> None:
    protocol, transport = connect(plain)
    protocol.data_received(b"POST /x?q=1 HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi")
    await settle(protocol)
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 14" in head
    assert body == b"POST /x q=1 hi"
    assert not transport.closed


async def test_a_stream_is_chunked_and_its_head_leaves_with_the_first_chunk() -> None:
    protocol, transport = connect(streamed)
    protocol.data_received(GET)
    await settle(protocol)
    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n1\r\na\r\n")
    assert transport.writes[1] == b"1\r\nb\r\n0\r\n\r\n"


async def test_a_header_that_would_split_the_response_is_refused() -> None:
    async def splitting(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"x-model", b"m\r\nset-cookie: a=b"), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    protocol, transport = connect(splitting)
    protocol.data_received(GET)
    await settle(protocol)
    assert transport.writes[0].startswith(b"HTTP/1.1 500 ")
    assert b"set-cookie" not in b"".join(transport.writes)
    assert transport.closed


async def test_a_refused_head_leaves_no_framing_behind() -> None:
    async def retrying(scope: Scope, receive: Receive, send: Send) -> None:
        bad = [(b"content-length", b"5"), (b"x-model", b"m\r\nx: y")]
        with pytest.raises(RuntimeError):
            await send({"type": "http.response.start", "status": 200, "headers": bad})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol, transport = connect(retrying)
    protocol.data_received(GET)
    await settle(protocol)
    head, _, body = b"".join(transport.writes).partition(b"\r\n\r\n")
    assert b"content-length" not in head
    assert b"transfer-encoding: chunked" in head
    assert body == b"2\r\nok\r\n0\r\n\r\n"
    assert not transport.closed


async def test_a_send_waits_while_the_transport_is_full() -> None:
    protocol, transport = connect(streamed)
    protocol.pause_writing()
    protocol.data_received(GET)
    await asyncio.sleep(0.05)
    assert transport.writes == []
    protocol.resume_writing()
    await settle(protocol)
    assert b"".join(transport.writes).endswith(b"0\r\n\r\n")


async def test_shutdown_closes_after_the_response_under_way() -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await plain(scope, receive, send)

    protocol, transport = connect(slow)
    protocol.data_received(GET)
    await asyncio.sleep(0.01)
    protocol.shutdown()
    assert not transport.closed
    release.set()
    await settle(protocol)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK")
    assert transport.closed


async def test_a_large_request_body_pauses_reading_until_it_is_read() -> None:
    got: list[Message] = []
    gate = asyncio.Event()

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        await gate.wait()
        while True:
            message = await receive()
            got.append(message)
            if not message["more_body"]:
                break
        await plain_empty(send)

    protocol, transport = connect(reader)
    size = 200 * 1024
    protocol.data_received(b"POST / HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % size)
    protocol.data_received(b"x" * (100 * 1024))
    assert not transport.reading
    gate.set()
    await asyncio.sleep(0.01)
    assert transport.reading
    protocol.data_received(b"x" * (100 * 1024))
    await settle(protocol)
    assert sum(len(m["body"]) for m in got) == size


async def plain_empty(send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 204, "headers": [(b"x-done", b"1")]}
    )
    await send({"type": "http.response.body", "body": b""})


async def test_an_answer_before_the_whole_body_closes_the_connection_after_the_body() -> None:
    async def early(scope: Scope, receive: Receive, send: Send) -> None:
        await plain_empty(send)

    protocol, transport = connect(early)
    protocol.data_received(b"POST / HTTP/1.1\r\ncontent-length: 100\r\n\r\nonly part")
    await settle(protocol)
    assert transport.writes[0].startswith(b"HTTP/1.1 204 No Content")
    # The rest of the body is read and dropped (the client can read the answer, not a reset),
    # and not parsed as a request; then the connection closes.
    assert transport.eof
    assert not transport.closed
    protocol.data_received(b"GET /not-a-request HTTP/1.1\r\n\r\n".ljust(91, b"x"))
    assert transport.closed
    assert len(transport.writes) == 1


# --- on a real server ----------------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(app: App, **options: Any) -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=HttpProtocol,
            lifespan="off",
            log_config=None,
            **options,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        servers.append((server, task))
        return port

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    headers = head.lower()
    if b"content-length:" in headers:
        length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return head, body
        body += chunk[:-2]


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    serve: Callable[..., Awaitable[int]],
) -> None:
    port = await serve(plain)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /one HTTP/1.1\r\ncontent-length: 1\r\n\r\n1"
        b"GET /two?x=%41 HTTP/1.1\r\n\r\n"
    )
    assert (await read_response(reader))[1] == b"POST /one  1"
    assert (await read_response(reader))[1] == b"GET /two x=%41 "
    writer.write(b"GET /th%20ree HTTP/1.1\r\n\r\n")
    assert (await read_response(reader))[1] == b"GET /th ree  "
    writer.close()


async def test_a_chunked_body_after_100_continue(serve: Callable[..., Awaitable[int]]) -> None:
    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    port = await serve(echo)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST / HTTP/1.1\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    head, body = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"date: " in head
    assert body == b"abcde"
    writer.close()


async def test_an_http_10_answer_without_a_length_ends_at_close(
    serve: Callable[..., Awaitable[int]],
) -> None:
    port = await serve(streamed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 10)  # to EOF: the server closes
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"connection: close" in head
    assert b"chunked" not in head
    assert body == b"ab"
    writer.close()


async def test_the_app_hears_a_client_go_away(serve: Callable[..., Awaitable[int]]) -> None:
    heard: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def waiting(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the (empty) body
        heard.set_result(await receive())

    port = await serve(waiting)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    assert (await asyncio.wait_for(heard, 10)) == {"type": "http.disconnect"}


async def test_an_invalid_request_gets_400_and_a_close(
    serve: Callable[..., Awaitable[int]],
) -> None:
    port = await serve(plain)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 10)
    assert raw.startswith(b"HTTP/1.1 400 Bad Request")
    writer.close()


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    serve: Callable[..., Awaitable[int]],
) -> None:
    port = await serve(plain, timeout_keep_alive=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET)
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    writer.close()
