"""A request body that breaks its framing gets 400 and a close, whenever it breaks, and the
connection leaves nothing behind (task, file descriptor, protocol)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import pytest

from relaygate.api.http import Message, Receive, Scope, Send
from tests.serving.support import read_to_close, respond, serving, status_of, wait_until
from tests.support.gateway import GatewayProcess

CHUNKED = b"transfer-encoding: chunked"
FRAMING = [
    pytest.param(CHUNKED, b"zz\r\nabc\r\n0\r\n\r\n", id="invalid-chunk-size"),
    pytest.param(CHUNKED, b"3\r\nabcXX0\r\n\r\n", id="missing-crlf-after-data"),
    pytest.param(CHUNKED, b"3\nabc\r\n0\r\n\r\n", id="bare-lf"),
    pytest.param(CHUNKED, b"3\r\nabc\r\n0\r\ncontent-length: 5\r\n\r\n", id="length-in-trailer"),
    pytest.param(b"transfer-encoding: gzip", b"abc", id="te-gzip"),
    pytest.param(b"transfer-encoding: xchunked", b"3\r\nabc\r\n0\r\n\r\n", id="te-xchunked"),
    pytest.param(b"transfer-encoding: chunked, gzip", b"3\r\nabc\r\n0\r\n\r\n", id="te-not-last"),
]


def head(framing: bytes, path: bytes = b"/", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\n%s%s\r\n\r\n" % (path, extra, framing)


class Reader:
    """An app that reads the body and records the last message ``receive()`` gave it."""

    def __init__(self) -> None:
        self.first_part = threading.Event()
        self.last: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            self.first_part.set()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        self.last.append(message)
        await respond(send, 200, b"read")


@pytest.mark.parametrize(("framing", "body"), FRAMING)
def test_a_framing_error_gets_400_and_a_close(framing: bytes, body: bytes) -> None:
    app = Reader()
    with serving(app) as server:
        answer = read_to_close(server.connect(head(framing) + body))
        assert status_of(answer) == 400
        assert b'"type":"invalid_request_error"' in answer
        wait_until(lambda: server.connections() == 0 and server.tasks() == 0, "all released")


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(b"zz\r\n", id="invalid-chunk-size"),
        pytest.param(b"3\r\nabcXX", id="missing-crlf-after-data"),
        pytest.param(b"0\r\ncontent-length: 5\r\n\r\n", id="length-in-trailer"),
    ],
)
def test_a_framing_error_while_the_app_waits_for_the_body(broken: bytes) -> None:
    app = Reader()
    with serving(app) as server:
        sock = server.connect(head(CHUNKED) + b"3\r\nabc\r\n")
        assert app.first_part.wait(10)  # the app has part of the body and waits for more
        sock.sendall(broken)
        answer = read_to_close(sock)
        assert status_of(answer) == 400
        wait_until(lambda: server.connections() == 0 and server.tasks() == 0, "all released")
    assert app.last == [{"type": "http.disconnect"}]


def test_a_broken_pipelined_request_after_a_good_one() -> None:
    app = Reader()
    good = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok"
    with serving(app) as server:
        answer = read_to_close(server.connect(good + head(CHUNKED) + b"zz\r\n"))
        first, _, second = answer.partition(b"read")
        assert status_of(first) == 200
        assert status_of(second) == 400
        wait_until(lambda: server.connections() == 0 and server.tasks() == 0, "all released")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_200_framing_errors_leave_no_file_descriptor_behind(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway()
    key = gateway.create_key("--credits", "0")["key"]
    assert gateway.process is not None
    pid = gateway.process.pid
    baseline = fd_count(pid)
    auth = b"authorization: Bearer %s\r\n" % key.encode()
    cases = [(p.values[0], p.values[1]) for p in FRAMING]
    statuses = set()
    for i in range(200):
        framing, body = cases[i % len(cases)]
        sock = socket_to(gateway.port, head(framing, b"/v1/chat/completions", auth) + body)
        statuses.add(status_of(read_to_close(sock)))
    assert statuses == {400}
    gateway.wait_until(lambda: fd_count(pid) <= baseline, message="fds back at the baseline")
    assert gateway.get("/health")[0] == 200


def socket_to(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock
