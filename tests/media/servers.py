"""Real servers on loopback for the image tests, and recorders of what the fetcher did.

* :class:`Canary`: a plain asyncio listener that must never be reached; it counts connections.
* :class:`RawServer`: answers each connection with a scripted coroutine (lying or missing
  ``Content-Length``, stalls, trickles, TLS).
* :class:`ImageServer`: an aiohttp app serving scripted routes and recording every request.
* :class:`Holder`: a blocking listener that accepts and never answers (for gateway processes).
* :class:`FakeDNS`: the pipeline's injected lookup; answers from a table (successive answers per
  name, to play DNS rebinding), records every call, never asks a real resolver.
* :class:`Trace`: an aiohttp ``TraceConfig`` recording requests, finished name lookups and
  established connections.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Canary:
    """A listener nobody may reach: ``connections`` must stay 0."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> Canary:
        self._server = await asyncio.start_server(self._accept, self.host, port)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()
        await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and headers of one HTTP request."""
    return await reader.readuntil(b"\r\n\r\n")


class RawServer:
    """Runs ``handler`` for each connection; ``released`` lets stalled handlers finish."""

    def __init__(
        self, handler: Handler, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.handler = handler
        self.host = host
        self.ssl_context = ssl_context
        self.connections = 0
        self.released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/image") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(
            self._serve, self.host, 0, ssl=self.ssl_context
        )
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def stall(self) -> None:
        """For handlers: wait until the test is over."""
        await self.released.wait()

    async def close(self) -> None:
        self.released.set()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ImageServer:
    """An aiohttp app on loopback; ``routes`` maps a path to its handler."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def serve(self, path: str, body: bytes, content_type: str = "image/png") -> str:
        async def route(request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, content_type=content_type)

        self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302, **headers: str) -> str:
        async def route(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": location, **headers})

        self.routes[path] = route
        return self.url(path)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path, dict(request.headers)))
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found")
        return await route(request)

    async def start(self, port: int = 0) -> ImageServer:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class FakeDNS:
    """Answers from ``table``: a name maps to a list of answers, given in turn (the last one
    repeats). Unknown names fail like NXDOMAIN; names in ``hang`` never answer."""

    table: dict[str, list[list[str]]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host in self.hang:
            await asyncio.Event().wait()
        answers = self.table.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: no such name (fake DNS)")
        return answers[min(self.calls.count(host), len(answers)) - 1]


@dataclass
class Trace:
    """What aiohttp reports the fetcher doing."""

    requests: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    connections: int = 0

    def config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def request_start(_: Any, __: SimpleNamespace, params: Any) -> None:
            self.requests.append(str(params.url))

        async def resolved(_: Any, __: SimpleNamespace, params: Any) -> None:
            self.resolved.append(params.host)

        async def connected(_: Any, __: SimpleNamespace, params: Any) -> None:
            self.connections += 1

        config.on_request_start.append(request_start)
        config.on_dns_resolvehost_end.append(resolved)
        config.on_connection_create_end.append(connected)
        return config


class Holder:
    """A blocking listener for tests against a gateway process: accepts every connection and
    never answers (the slowest image server there is) until :meth:`close`. ``accepted`` counts
    the connections; none is closed before :meth:`close`, so it is also how many are open."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1024)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        return len(self._held)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        self._sock.close()
        self._thread.join(10)
        for conn in self._held:
            conn.close()
