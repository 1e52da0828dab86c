"""Generated malformed requests: each gets 400 (431 for a head over the limit) and a close in
bounded time, and when they are done no connection, task, file descriptor or protocol is left.

Each request is built valid (a head, then a Content-Length or chunked body), then broken in one
way; httptools itself is the oracle that the result is broken before its end (examples it would
accept are discarded), so each example is a request that relaygate must refuse.
"""

from __future__ import annotations

import gc
import itertools
import weakref
from typing import Any

import httptools
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from relaygate.serving import HttpProtocol
from tests.serving.support import (
    ServerThread,
    echo,
    open_fds,
    read_to_close,
    serving,
    status_of,
    wait_until,
)

HEAD_LIMIT = 8 * 1024
TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
VALUE = st.binary(min_size=0, max_size=60).map(
    lambda b: bytes(c for c in b if 32 <= c < 127 and c != 58)
)
NASTY = [b"\x00", b"\n", b"\r", b" ", b":", b"\x7f", b"z", b"\t", b"@", b"\r\n", b"\xff", b"-"]
ENCODINGS = [b"gzip", b"xchunked", b"chunked, gzip", b"identity", b"chunked\x00", b"chunkedx"]


class Counted(HttpProtocol):
    """The protocol, with every instance remembered weakly (to see that all are freed)."""

    alive: weakref.WeakSet[HttpProtocol] = weakref.WeakSet()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Counted.alive.add(self)


@st.composite
def valid_request(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=8))
    lines = [b"POST /%s HTTP/1.1" % draw(TOKEN).encode(), b"host: x"]
    lines += [b"x-%s: %s" % (name.encode(), value) for name, value in headers]
    if draw(st.booleans()):
        chunks = draw(st.lists(st.binary(min_size=1, max_size=50), max_size=4))
        lines.append(b"transfer-encoding: chunked")
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    else:
        body = draw(st.binary(max_size=100))
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@st.composite
def broken_request(draw: st.DrawFn) -> tuple[bytes, int]:
    """A request broken in one way, and the status it must get."""
    data = draw(valid_request())
    way = draw(st.sampled_from(["replace", "insert", "delete", "encoding", "trailer", "huge"]))
    at = draw(st.integers(min_value=0, max_value=len(data) - 1))
    if way == "replace":
        data = data[:at] + draw(st.sampled_from(NASTY)) + data[at + 1 :]
    elif way == "insert":
        data = data[:at] + draw(st.sampled_from(NASTY)) + data[at:]
    elif way == "delete":
        data = data[:at] + data[at + draw(st.integers(min_value=1, max_value=8)) :]
    elif way == "encoding":
        head, _, body = data.partition(b"\r\n\r\n")
        extra = b"transfer-encoding: " + draw(st.sampled_from(ENCODINGS))
        data = head + b"\r\n" + extra + b"\r\n\r\n" + body
    elif way == "trailer":
        data = data.replace(b"\r\n\r\n", b"\r\ntransfer-encoding: chunked\r\n\r\n", 1)
        data = (
            data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n3\r\nabc\r\n0\r\ncontent-length: 3\r\n\r\n"
        )
    else:
        size = draw(st.integers(min_value=HEAD_LIMIT, max_value=4 * HEAD_LIMIT))
        return data.replace(b"host: x", b"host: x\r\nx-huge: " + b"h" * size, 1), 431
    assume(rejected(data))
    return data, 400


def rejected(data: bytes) -> bool:
    """Whether httptools refuses ``data`` before a request in it is complete."""

    class Oracle:
        complete = False

        def on_message_complete(self) -> None:
            self.complete = True

    oracle = Oracle()
    try:
        httptools.HttpRequestParser(oracle).feed_data(data)
    except httptools.HttpParserUpgrade:
        return False
    except httptools.HttpParserError:
        return not oracle.complete
    return False


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def exchange(server: ServerThread, data: bytes, cuts: list[int]) -> bytes:
    sock = server.connect()
    try:
        for piece in pieces(data, cuts):
            sock.sendall(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the client was done: its answer is still there to read
    return read_to_close(sock, timeout=5)


def test_malformed_requests_get_400_or_431_and_a_close_and_leave_nothing() -> None:
    gc.collect()
    fds = open_fds()
    with serving(echo, protocol=Counted, max_head_bytes=HEAD_LIMIT) as server:

        @settings(
            max_examples=1000,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(broken_request(), st.lists(st.integers(min_value=0), max_size=4))
        def refused(case: tuple[bytes, int], cuts: list[int]) -> None:
            data, expected = case
            answer = exchange(server, data, cuts)
            assert status_of(answer) == expected, data
            assert b"connection: close" in answer

        refused()
        wait_until(lambda: server.connections() == 0 and server.tasks() == 0, "all closed")
        # Freed by reference counting alone (the app freezes the garbage collector).
        gc.disable()
        try:
            wait_until(lambda: len(Counted.alive) == 0, "every protocol freed")
        finally:
            gc.enable()
    wait_until(lambda: open_fds() <= fds, "file descriptors back at the baseline")


def test_a_valid_request_after_the_storm_is_served() -> None:
    with serving(echo, max_head_bytes=HEAD_LIMIT) as server:
        for data in (b"GET / HTTP/1.1\r\n\r\n", b"POST / HTTP/1.1\r\ncontent-length: 1\r\n\r\nx"):
            answer = exchange(
                server, data.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1), []
            )
            assert status_of(answer) == 200


def test_a_body_over_the_app_limit_gets_413_and_a_close() -> None:
    with serving(echo) as server:
        chunk = b"x" * 65536
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
        head = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        answer = exchange(server, head + body, [len(head) + 70_000 * i for i in range(1, 4)])
        assert status_of(answer) == 413
