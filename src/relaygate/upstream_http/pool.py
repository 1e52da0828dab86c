"""The upstream client: a pool of keep-alive connections per (scheme, host, port), and the
requests' targets.

A :class:`Target` is an upstream URL with its fixed headers and timeouts, its request head
encoded once; a request is that head, its ``content-length`` and its body, in one write.
Connections are reused last-in first-out and closed after ``idle_seconds`` unused. A reused
connection that the server had closed meanwhile (the close or a reset comes before any byte of
the answer) is retried once on a new connection; nothing else is retried here (the router
retries). Like the aiohttp session it replaces: no proxy from the environment, no redirects,
no cookies; TLS verifies the server's certificate and host name against the system's trust
store (:func:`ssl.create_default_context`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from relaygate.upstream_http.connection import Connection
from relaygate.upstream_http.errors import (
    CertificateError,
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
)
from relaygate.upstream_http.response import Response

IDLE_SECONDS = 15.0
"""How long an unused connection is kept (aiohttp's keep-alive default)."""
_SMALL_BODY = 16 * 1024
"""Bodies up to this size are copied behind the head (one buffer); larger ones are written
with it in one ``writelines``."""


def _user_agent() -> str:
    try:
        return f"relaygate/{version('relaygate')}"
    except PackageNotFoundError:  # pragma: no cover - a source tree never installed
        return "relaygate"


_DEFAULT_HEADERS = {
    "accept": "*/*",
    "accept-encoding": "gzip, deflate",
    "user-agent": _user_agent(),
}
"""Sent unless the caller's headers name them (aiohttp sent the same, with its own agent)."""
_OURS = frozenset(("host", "content-length", "transfer-encoding"))
"""Headers the client writes itself (a caller's are dropped)."""


class Target:
    """One upstream URL with its headers and timeouts (see the module docstring)."""

    __slots__ = ("close", "connect_timeout", "head", "pool", "read_timeout")

    def __init__(
        self,
        pool: HostPool,
        path: str,
        headers: Mapping[str, str],
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> None:
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        lines = [f"POST {path} HTTP/1.1", f"host: {pool.host_header}"]
        given = {name.lower(): value for name, value in headers.items()}
        lines += (f"{k}: {v}" for k, v in _DEFAULT_HEADERS.items() if k not in given)
        for name, value in headers.items():
            if name.lower() not in _OURS:
                _check(name, value)
                lines.append(f"{name}: {value}")
        self.close = given.get("connection", "").strip().lower() == "close"
        """The caller asked to close the connection after the answer."""
        lines.append("content-length: ")
        self.head = "\r\n".join(lines).encode()

    async def post(self, body: bytes) -> Response:
        """Send ``body`` and return the answer once its head has come."""
        data: bytes | list[bytes]
        if len(body) <= _SMALL_BODY:
            data = b"%b%d\r\n\r\n%b" % (self.head, len(body), body)
        else:
            data = [self.head + b"%d\r\n\r\n" % len(body), body]
        return await self.pool.send(self, data)


def _check(name: str, value: str) -> None:
    """A header that could end the head or start another is refused, as aiohttp refuses it."""
    if any(c in name for c in "\r\n:") or not name or "\r" in value or "\n" in value:
        raise ValueError(f"invalid header {name!r}: it holds a line break or a colon")


class HostPool:
    """The connections to one (scheme, host, port)."""

    def __init__(
        self, client: UpstreamClient, host: str, port: int, tls: ssl.SSLContext | None
    ) -> None:
        self.client = client
        self.loop = client.loop
        self.host = host
        self.port = port
        self.tls = tls
        default = 443 if tls is not None else 80
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port == default else f"{name}:{port}"
        self.idle: list[Connection] = []
        """Unused connections, the most recently used last."""
        self.connections: set[Connection] = set()

    async def send(self, target: Target, data: bytes | list[bytes]) -> Response:
        """The answer's head to ``data``, on an idle connection or a new one."""
        conn = self._idle()
        if conn is not None:
            try:
                return await self._request(conn, target, data)
            except ConnectionClosed as exc:
                if not exc.before_answer:
                    raise
                # the server had closed it while it was idle: once more, on a new one
        conn = await self.connect(target.connect_timeout)
        return await self._request(conn, target, data)

    async def _request(
        self, conn: Connection, target: Target, data: bytes | list[bytes]
    ) -> Response:
        return await conn.request(data, target.read_timeout, target.close)

    def _idle(self) -> Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self, seconds: float | None) -> Connection:
        client = self.client
        if client.closed:
            raise ConnectError("the upstream client is closed")
        try:
            async with asyncio.timeout(seconds):
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                )
        except TimeoutError:
            raise ConnectTimeout("the connection took longer than connect_timeout") from None
        except ssl.SSLCertVerificationError as exc:
            message = f"the certificate did not verify ({exc.verify_message})"
            raise CertificateError(message) from None
        except OSError as exc:
            raise ConnectError(f"the connection failed ({type(exc).__name__})") from None
        if client.closed:
            conn.close()
            raise ConnectError("the upstream client is closed")
        self.connections.add(conn)
        return conn

    def put(self, conn: Connection) -> None:
        """A connection whose answer was read whole: kept for the next request."""
        if self.client.closed:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        self.client.sweep_later()

    def forget(self, conn: Connection) -> None:
        """A closed connection (it may still be in :attr:`idle`: skipped when popped)."""
        self.connections.discard(conn)

    def sweep(self, before: float) -> None:
        """Close the idle connections unused since ``before``."""
        keep = []
        for conn in self.idle:
            if conn.closed:
                continue
            if conn.idle_since < before:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep

    def close(self) -> None:
        self.idle = []
        for conn in list(self.connections):
            conn.close()


class UpstreamClient:
    """The connection pools of every upstream, shared by the providers (one per worker)."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.ssl_context = ssl_context
        self.idle_seconds = idle_seconds
        self.pools: dict[tuple[str, str, int], HostPool] = {}
        self.closed = False
        self._sweeper: asyncio.TimerHandle | None = None

    def target(
        self,
        url: str,
        headers: Mapping[str, str],
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> Target:
        """A :class:`Target` for ``url`` (http or https) with these headers and timeouts;
        build it once per upstream and URL, use it for every request."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        pool = self.pools.get((scheme, host, port))
        if pool is None:
            tls = None
            if scheme == "https":
                if self.ssl_context is None:
                    self.ssl_context = ssl.create_default_context()
                tls = self.ssl_context
            pool = self.pools[(scheme, host, port)] = HostPool(self, host, port, tls)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Target(pool, path, headers, connect_timeout, read_timeout)

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> Response:
        """One POST to ``url`` (a :class:`Target` built for it alone)."""
        return await self.target(url, headers, connect_timeout, read_timeout).post(body)

    def sweep_later(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.idle_seconds, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        before = self.loop.time() - self.idle_seconds
        for pool in self.pools.values():
            pool.sweep(before)
        if any(pool.idle for pool in self.pools.values()):
            self.sweep_later()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection, idle or in use; requests after this fail to connect."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self.pools.values():
            pool.close()
        await asyncio.sleep(0)  # the transports' close callbacks run


__all__ = ["IDLE_SECONDS", "HostPool", "Target", "UpstreamClient"]
