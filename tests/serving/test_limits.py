"""What a connection may hold of the server: the size of a request head, the time to send a head
or a body, the number of open connections; and a closed connection is freed by reference
counting (the app freezes the garbage collector)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from relaygate.api.http import Message, Receive, Scope, Send
from tests.serving.support import (
    ServerThread,
    echo,
    read_to_close,
    respond,
    serving,
    status_of,
    wait_until,
)

GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def with_header(size: int) -> bytes:
    return b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * size + b"\r\n\r\n"


# --- the head's size -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "piece", [pytest.param(1 << 30, id="at-once"), pytest.param(4096, id="in-pieces")]
)
def test_a_head_over_max_head_bytes_gets_431_and_a_close(piece: int) -> None:
    with serving(echo, max_head_bytes=16 * 1024) as server:
        sock = server.connect()
        head = with_header(200 * 1024)
        try:
            for i in range(0, len(head), piece):
                sock.sendall(head[i : i + piece])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the client was done: what it read is checked below
        answer = read_to_close(sock)
        assert status_of(answer) == 431
        assert b'"type":"request_too_large_error"' in answer


def test_a_head_under_max_head_bytes_is_served() -> None:
    with serving(echo, max_head_bytes=16 * 1024) as server:
        sock = server.connect(
            with_header(12 * 1024).replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
        )
        assert status_of(read_to_close(sock)) == 200


# --- freed by reference counting -------------------------------------------------------------


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def protocol_of(server: ServerThread) -> weakref.ref[object]:
    wait_until(lambda: server.connections() == 1, "the connection is open")
    return weakref.ref(next(iter(server.server.server_state.connections)))


@pytest.mark.parametrize(
    ("request_bytes", "answered"),
    [
        pytest.param(GET, True, id="served"),
        pytest.param(GET.replace(b"GET / ", b"GET /?waits "), False, id="app-waiting"),
        pytest.param(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", True, id="400"
        ),
        pytest.param(with_header(100 * 1024), True, id="431"),
    ],
)
def test_a_closed_connection_is_freed_without_the_garbage_collector(
    no_gc: None, request_bytes: bytes, answered: bool
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["query_string"]:
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await echo(scope, receive, send)

    with serving(app, max_head_bytes=16 * 1024) as server:
        sock = server.connect()
        ref = protocol_of(server)
        sock.sendall(request_bytes)
        if answered:
            sock.recv(100)  # its answer has begun
        sock.close()
        wait_until(lambda: server.connections() == 0 and server.tasks() == 0, "closed")
        wait_until(lambda: ref() is None, "the protocol freed by reference counting")


# --- slowloris ------------------------------------------------------------------------------


def test_a_head_that_does_not_arrive_in_head_timeout_gets_408_and_a_close() -> None:
    with serving(echo, head_timeout=0.2) as server:
        answer = read_to_close(server.connect(b"GET / HTTP/1.1\r\nhost: x"))
        assert status_of(answer) == 408
        wait_until(lambda: server.connections() == 0, "closed")


def test_a_body_that_stops_arriving_gets_408_and_the_app_hears_a_disconnect() -> None:
    heard: list[Message] = []

    async def reader(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message["more_body"]:
                break
        heard.append(message)
        await respond(send, 200, b"late")

    with serving(reader, body_timeout=0.2) as server:
        sock = server.connect(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        assert status_of(read_to_close(sock)) == 408
        wait_until(lambda: server.tasks() == 0 and server.connections() == 0, "released")
    assert heard == [{"type": "http.disconnect"}]


def test_past_max_connections_a_connection_gets_503_and_a_close() -> None:
    with serving(echo, max_connections=3) as server:
        held = [server.connect() for _ in range(3)]
        wait_until(lambda: server.connections() == 3, "three connections open")
        answer = read_to_close(server.connect())
        assert status_of(answer) == 503
        assert b"retry-after: 1\r\n" in answer
        held.pop().close()
        wait_until(lambda: server.connections() == 2, "one closed")
        sock = server.connect(GET.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"))
        assert status_of(read_to_close(sock)) == 200
        for sock in held:
            sock.close()


def test_idle_connections_are_unaffected_by_the_head_and_body_deadlines() -> None:
    """Keep-alive requests on one connection: the deadlines of one request do not end the
    next (each request's head arrives at once, so no head or body deadline is set)."""
    with serving(echo, head_timeout=0.05, body_timeout=0.05) as server:
        sock = server.connect()
        for _ in range(20):
            sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        sock.close()
