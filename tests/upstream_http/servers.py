"""Fake upstreams for the client's tests: real asyncio servers on 127.0.0.1 that send exactly
the bytes a test scripts (malformed ones too), and count their connections."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Handler = Callable[["Peer"], Awaitable[None]]


@dataclass
class Peer:
    """One accepted connection, as the handler sees it."""

    number: int
    """1 for the server's first connection, 2 for the next, ..."""
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def request(self) -> tuple[bytes, bytes] | None:
        """The next request's head and body (``None`` at the client's close)."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        self.requests.append((head, body))
        return head, body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self) -> None:
        """Wait for the client to close the connection (what it sends meanwhile is dropped)."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass


def answer(body: bytes = b"ok", *headers: str, status: str = "200 OK") -> bytes:
    """A whole HTTP/1.1 answer with a Content-Length."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Upstream:
    """A server whose every connection runs ``handler``."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.peers: list[Peer] = []
        self.ended: list[asyncio.Future[None]] = []
        """One per connection: done when its handler has returned."""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._run, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.close()
        await asyncio.gather(*self.ended)
        await self._server.wait_closed()

    def url(self, path: str = "/v1/chat/completions", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def connections(self) -> int:
        return len(self.peers)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(len(self.peers) + 1, reader, writer)
        self.peers.append(peer)
        ended = asyncio.get_running_loop().create_future()
        self.ended.append(ended)
        try:
            await self.handler(peer)
        except ConnectionError:
            pass
        finally:
            writer.close()
            ended.set_result(None)


async def keep_answering(peer: Peer, reply: bytes = b"") -> None:
    """Answer every request with ``reply`` (by default ``ok``), keeping the connection."""
    while await peer.request() is not None:
        await peer.send(reply or answer())
