"""Request bodies are bounded before they are buffered: a key's concurrency bounds the bodies
it has in flight, and the bytes of all bodies in flight are bounded per process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from typing import Any

from relaygate.api.http import BODIES, Message, read_body
from tests.serving.support import read_to_close, status_of
from tests.support.gateway import GatewayProcess

CHAT = "/v1/chat/completions"


def padded_body(size: int) -> bytes:
    """A valid chat request of exactly ``size`` bytes (JSON allows trailing spaces)."""
    body = json.dumps(
        {"model": "relaygate-simulator", "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    return body.ljust(size)


def start_slow_body(
    gateway: GatewayProcess, key: str, body: bytes, sent: int = 10, path: str = CHAT
) -> socket.socket:
    """A request whose first ``sent`` bytes of body arrive (the rest is sent by ``finish``)."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    sock.sendall(
        b"POST %s HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\ncontent-type: "
        b"application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
        % (path.encode(), key.encode(), len(body), body[:sent])
    )
    return sock


def finish(sock: socket.socket, body: bytes, sent: int = 10) -> int:
    sock.sendall(body[sent:])
    return status_of(read_to_close(sock))


def until_refused(gateway: GatewayProcess, key: str, body: Any) -> tuple[int, dict[str, str], Any]:
    """Post ``body`` until it is refused (the slow request has taken its share by then)."""
    answers: list[tuple[int, dict[str, str], Any]] = []

    def refused() -> bool:
        answers.append(gateway.post(CHAT, body, key))
        return answers[-1][0] != 200

    gateway.wait_until(refused, message="a refusal")
    return answers[-1]


def test_a_key_at_its_concurrency_gets_429_before_its_body_is_read(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway()
    key = gateway.create_key("--credits", "10", "--concurrency", "1")["key"]
    slow = padded_body(100_000)
    sock = start_slow_body(gateway, key, slow)
    hello = json.loads(padded_body(0))
    big = json.loads(padded_body(0))
    big["messages"][0]["content"] = "x" * 70_000  # small bodies take no slot: see SMALL_BODY
    status, headers, answer = until_refused(gateway, key, big)
    assert status == 429
    assert answer["error"]["type"] == "rate_limit_error"
    assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
    assert finish(sock, slow) == 200
    assert gateway.post(CHAT, big, key)[0] == 200  # the slot is free again
    assert gateway.post(CHAT, hello, key)[0] == 200


def test_a_count_tokens_body_takes_the_keys_share_too(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway()
    key = gateway.create_key("--credits", "10", "--concurrency", "1")["key"]
    slow = padded_body(100_000)  # a Messages body as well
    sock = start_slow_body(gateway, key, slow, path="/v1/messages/count_tokens")
    big = json.loads(padded_body(0))
    big["messages"][0]["content"] = "x" * 70_000
    status, _, answer = until_refused(gateway, key, big)
    assert (status, answer["error"]["type"]) == (429, "rate_limit_error")
    assert finish(sock, slow) == 200
    assert gateway.post(CHAT, big, key)[0] == 200


def test_body_bytes_in_flight_are_bounded_per_process(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway(max_body_bytes_in_flight=150_000)
    key = gateway.create_key("--credits", "10")["key"]
    slow = padded_body(100_000)
    sock = start_slow_body(gateway, key, slow, sent=90_000)  # holds the 90,000 bytes it sent
    big = json.loads(padded_body(0))
    big["messages"][0]["content"] = "x" * 70_000
    status, headers, answer = until_refused(gateway, key, big)
    assert status == 503
    assert answer["error"]["type"] == "service_unavailable_error"
    assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
    assert finish(sock, slow, sent=90_000) == 200
    assert gateway.post(CHAT, big, key)[0] == 200  # its bytes are free again


async def test_a_declared_length_reserves_no_bytes_before_they_arrive() -> None:
    """A body sent a byte at a time holds what it sent, not the 32 MiB it declares."""
    called = asyncio.Event()
    calls = 0

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"x", "more_body": True}
        called.set()
        await asyncio.Future()  # the next byte never comes
        raise AssertionError

    scope = {"headers": [(b"content-length", b"%d" % (32 << 20))]}
    before = BODIES.bytes
    task = asyncio.create_task(
        read_body(scope, receive, 64 << 20, key_id="slow", in_flight_limit=256 << 20)
    )
    await called.wait()
    assert BODIES.bytes - before == 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert BODIES.bytes == before
