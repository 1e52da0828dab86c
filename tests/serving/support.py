"""A real uvicorn server with relaygate's protocol, in a thread of the test process, and plain
blocking sockets to talk to it (byte for byte, as a misbehaving client would)."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from relaygate.api.http import Message, Receive, Scope, Send
from relaygate.serving import HttpProtocol, Limits

App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServerThread:
    """``app`` served on loopback by uvicorn with :class:`HttpProtocol` and ``limits``."""

    def __init__(
        self, app: App, limits: Limits, keep_alive: float = 75, protocol: type = HttpProtocol
    ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            http=functools.partial(protocol, limits=limits),  # type: ignore[arg-type]
            lifespan="off",
            log_config=None,
            timeout_keep_alive=keep_alive,  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()

    def start(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started, "the server started")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def connections(self) -> int:
        return len(self.server.server_state.connections)

    def tasks(self) -> int:
        return len(self.server.server_state.tasks)

    def connect(self, data: bytes = b"", rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", self.port))
        if data:
            sock.sendall(data)
        return sock


@contextmanager
def serving(
    app: App, keep_alive: float = 75, protocol: type = HttpProtocol, **limits: Any
) -> Iterator[ServerThread]:
    server = ServerThread(app, Limits(**limits), keep_alive, protocol).start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(check: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Poll ``check`` until it holds (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"{what}: did not hold within {timeout} s")


def read_to_close(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as a
    close); fails if it does not close within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server did not close; it sent {data[:200]!r}") from None
    finally:
        sock.close()
    return data


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body (413 past 1 MiB), then answers with its size."""
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if size > 1024 * 1024:
            await respond(send, 413, b"too large")
            return
        if not message.get("more_body", False):
            break
    await respond(send, 200, b"%d" % size)


async def respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
