"""Edges a review found: a closed connection whose client stopped reading is freed, a send
deadline ends with its send, the head's size costs O(1) a read and counts only its own bytes,
a graceful shutdown lets the upload in flight finish, and an upgrade head ends the connection."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from relaygate.api.http import Receive, Scope, Send
from relaygate.serving import HttpProtocol
from tests.serving.support import (
    ServerThread,
    echo,
    open_fds,
    read_to_close,
    respond,
    serving,
    status_of,
    wait_until,
)


def protocol_of(server: ServerThread) -> Any:
    wait_until(lambda: server.connections() == 1, "the connection is open")
    return next(iter(server.server.server_state.connections))


async def sized(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers ``GET /<n>`` with ``n`` bytes."""
    await receive()
    await respond(send, 200, b"x" * int(scope["path"].strip("/")))


def test_a_closed_connection_with_unsent_bytes_is_freed_when_the_client_does_not_read() -> None:
    with serving(sized, send_timeout=0.3) as server:
        baseline = open_fds()
        sock = server.connect(rcvbuf=4096)
        protocol = protocol_of(server)
        # A small send buffer on the server's side too: the kernel holds little, so the
        # transport is left with unsent bytes under its high-water mark (not paused).
        protocol.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
        sock.sendall(
            b"GET /30000 HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /30000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        wait_until(lambda: server.connections() == 0, "the connection was freed")
        sock.close()
        wait_until(lambda: open_fds() == baseline, "the fds are back at their baseline")


def test_a_send_deadline_ends_with_its_send() -> None:
    """A client that read what a paused send waited for is not cut later by that deadline,
    while the app, not sending, leaves a later write paused."""
    go = threading.Event()
    finished = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a" * 4_000_000, "more_body": True})
        await send({"type": "http.response.body", "body": b"b", "more_body": True})  # drains
        await send({"type": "http.response.body", "body": b"c" * 12_000_000, "more_body": True})
        await asyncio.get_running_loop().run_in_executor(None, go.wait, 30)
        await send({"type": "http.response.body", "body": b"end"})
        finished.set()

    with serving(app, send_timeout=0.3) as server:
        sock = server.connect(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        protocol = protocol_of(server)
        got = 0
        while got < 4_000_000:  # all the first write, so that the drain ends
            got += len(sock.recv(65536))
        wait_until(lambda: protocol.write_paused, "the big write paused the transport")
        wait_until(lambda: protocol._timer is None, "the drain's deadline passed")
        go.set()
        sock.settimeout(30)
        tail = b""
        while not tail.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            assert chunk, "the server cut a client that was reading"
            tail = (tail + chunk)[-16:]
        assert finished.wait(10)
        sock.close()


def test_a_pipelined_read_holding_a_body_does_not_count_toward_the_next_head() -> None:
    with serving(echo, max_head_bytes=2048) as server:
        sock = server.connect(b"POST / HTTP/1.1\r\nhost: x\r\n")
        protocol = protocol_of(server)
        wait_until(lambda: protocol._in_head, "the first head is arriving")
        body = b"y" * 6000
        sock.sendall(
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
            + b"GET / HTTP/1.1\r\nhost: x\r\n"  # the next head begins in the same read
        )
        served = server.server.server_state

        def next_head() -> bool:  # A in flight or answered, B's head begun
            return bool(protocol._in_head and (protocol.cycle or served.total_requests))

        wait_until(next_head, "the next head began")
        sock.sendall(b"connection: close\r\n\r\n")
        answer = read_to_close(sock)
        assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:400]
        assert b" 431 " not in answer


class _CountingHeaders(list[tuple[bytes, bytes]]):
    """A head's header list that counts the entries read by a walk over it."""

    walked = 0

    def __iter__(self) -> Any:
        _CountingHeaders.walked += len(self)
        return super().__iter__()


class _Counting(HttpProtocol):
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers = _CountingHeaders()


def test_the_head_size_costs_constant_work_per_read() -> None:
    _CountingHeaders.walked = 0
    count = 200
    with serving(echo, protocol=_Counting) as server:
        sock = server.connect(b"GET / HTTP/1.1\r\nhost: x\r\n")
        protocol = protocol_of(server)
        for start in range(0, count, 10):  # 20 reads, each ending on a whole header
            sock.sendall(b"".join(b"x-h%d: v\r\n" % i for i in range(start, start + 10)))
            wait_until(lambda n=start + 10: len(protocol._headers) >= n, "the headers parsed")
        sock.sendall(b"connection: close\r\n\r\n")
        assert status_of(read_to_close(sock)) == 200
    # At most one walk over the headers (a sum at every read is quadratic: ~2,000 here).
    assert _CountingHeaders.walked <= count + 2


def test_a_graceful_shutdown_lets_the_upload_in_flight_finish() -> None:
    go = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait, 30)
        await echo(scope, receive, send)

    size = 512 * 1024
    with serving(app) as server:
        sock = server.connect(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size)
        sender = threading.Thread(target=sock.sendall, args=(b"z" * size,), daemon=True)
        sender.start()
        protocol = protocol_of(server)
        wait_until(lambda: protocol.read_paused, "reading paused at the body's high water")
        assert server.loop is not None
        server.loop.call_soon_threadsafe(protocol.shutdown)
        wait_until(lambda: protocol.closing, "the shutdown began")
        go.set()
        answer = read_to_close(sock)
        sender.join(10)
    assert status_of(answer) == 200
    assert answer.endswith(b"%d" % size)


def test_an_upgrade_head_is_answered_and_the_connection_closes() -> None:
    with serving(echo) as server:
        sock = server.connect(
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
            b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        answer = read_to_close(sock, timeout=5)
        wait_until(lambda: server.connections() == 0, "the connection was freed")
    assert answer.count(b"HTTP/1.1 ") == 1
    assert status_of(answer) == 200
    assert b"connection: close\r\n" in answer.lower()
