"""Protocol details: a fragment is not part of the path, HTTP/1.0 keep-alive is said so, a wrong
method gets 405 with ``Allow``, and an answer sent before the body was read can be read."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from relaygate.api.http import Receive, Scope, Send
from tests.serving.support import (
    ServerThread,
    echo,
    read_to_close,
    respond,
    serving,
    status_of,
)
from tests.support.gateway import GatewayProcess


async def where(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await respond(send, 200, f"{scope['path']}|{scope['query_string'].decode()}".encode())


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(b"/a/b#frag", b"/a/b|", id="path"),
        pytest.param(b"/a?q=1#frag", b"/a|q=1", id="query"),
        pytest.param(b"/a%20b#x?y", b"/a b|", id="escaped"),
        pytest.param(b"http://example.com/a#frag", b"/a|", id="absolute-form"),
    ],
)
def test_a_fragment_is_not_part_of_the_path(target: bytes, expected: bytes) -> None:
    with serving(where) as server:
        request = b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % target
        answer = read_to_close(server.connect(request))
        assert answer.endswith(b"\r\n\r\n" + expected)


def test_an_http_10_keep_alive_answer_says_keep_alive() -> None:
    with serving(where) as server:
        sock = server.connect()
        for _ in range(2):  # the connection stays open for the second request
            sock.sendall(b"GET /x HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            head = sock.recv(4096).partition(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"http/1.1 200 ok")
            assert b"\r\nconnection: keep-alive" in head
        sock.close()
        # Without keep-alive, HTTP/1.0 closes and says nothing of it.
        answer = read_to_close(server.connect(b"GET /x HTTP/1.0\r\n\r\n"))
        assert b"keep-alive" not in answer.lower()


def test_an_early_answer_is_readable_by_a_client_still_sending() -> None:
    """The app answers 413 past 1 MiB; the client sends the rest of its body only once the
    answer has arrived. The rest is read and dropped before the close, so the client's sends
    succeed and it reads the 413, not a reset (the flaky ``BrokenPipeError`` of
    ``test_413_chunked_body_without_content_length``)."""
    with serving(echo) as server:
        body = b"x" * (1100 * 1024)
        rest = b"y" * (200 * 1024)
        head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (len(body) + len(rest))
        sock = server.connect(head + body)
        assert sock.recv(12, socket.MSG_PEEK) == b"HTTP/1.1 413"  # answered early
        for i in range(0, len(rest), 4096):
            sock.sendall(rest[i : i + 4096])
        assert status_of(read_to_close(sock)) == 413


def test_a_wrong_method_gets_405_with_allow_and_head_is_served(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway()
    cases = [("GET", "/v1/chat/completions", "POST"), ("POST", "/health", "GET, HEAD")]
    for method, path, allow in cases:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        sock.sendall(f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
        answer = read_to_close(sock)
        head = answer.partition(b"\r\n\r\n")[0].lower()
        assert status_of(answer) == 405
        assert f"\r\nallow: {allow.lower()}".encode() in head
        assert b'"type":"invalid_request_error"' in answer
        assert b'"code":405' in answer
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(b"HEAD /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    answer = read_to_close(sock)
    assert status_of(answer) == 200
    assert answer.endswith(b"\r\n\r\n")  # the head only


def test_each_head_carries_the_servers_default_headers_of_the_moment() -> None:
    """The server's default headers are encoded once per list (uvicorn replaces the list each
    second, with the new ``date``): a replaced list is what the next head carries."""
    servers: list[ServerThread] = []

    async def dated(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        day = scope["path"][1:].encode()
        servers[0].server.server_state.default_headers = [(b"date", day), (b"server", b"x")]
        await respond(send, 200, b"ok")

    with serving(dated) as server:
        servers.append(server)
        sock = server.connect()
        for day in (b"monday", b"monday", b"tuesday"):
            sock.sendall(b"GET /%s HTTP/1.1\r\nhost: x\r\n\r\n" % day)
            head = sock.recv(4096).partition(b"\r\n\r\n")[0]
            assert b"\r\ndate: %s\r\nserver: x\r\n" % day in head, head
        sock.close()
