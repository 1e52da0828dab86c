"""relaygate's HTTP/1.1 connection protocol, run by uvicorn's server.

uvicorn keeps what a server process needs: sockets, ``--workers``, signals, lifespan, graceful
shutdown and the ``date`` header. This protocol replaces its per-request machinery: a scope with
a copied state, an ``asyncio.Event`` and a keep-alive timer per request, two regular
expressions per response header, and one socket write for the head and another for the body.
Under callgrind, a trivial app ran 209,000 instructions a request behind uvicorn's httptools
protocol and 163,000 behind this one; relaygate's streamed request, 46,000 fewer.

Here, for each request:

- the request is parsed by httptools, as in uvicorn, and the app is called through ASGI with
  an HTTP scope; a body that arrived whole is handed over without waiting;
- a response's head leaves with its first body bytes, in one write (a stream's head with its
  first chunk); a chunked body's framing is written with each piece;
- response headers are checked in two table lookups in all: names are tokens, and no value
  holds CR, LF or another control character (no response splitting);
- keep-alive: a connection idle for ``timeout_keep_alive`` is closed, by one timer per
  connection that is only re-armed when it fires;
- pipelined requests are answered in order (reading pauses while one is in flight);
- ``Expect: 100-continue`` is answered when the app first asks for the body;
- back-pressure: a send waits while the transport's buffer is over its high-water mark, and
  reading pauses while more than 64 KiB of body is unread;
- a client that goes away: ``receive()`` answers ``http.disconnect`` and ``send()`` drops what
  it is given;
- a response sent without its whole request body having been read closes the connection.

Not supported, because relaygate does not use them: WebSocket upgrades (an upgrade request is
answered as plain HTTP), uvicorn's access log, ``root_path`` and ``limit_concurrency``.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import deque
from typing import Any
from urllib.parse import unquote

import httptools

from relaygate.api.http import Headers, Message

log = logging.getLogger("relaygate.http")

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT: Message = {"type": "http.disconnect"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BODY_HIGH_WATER = 64 * 1024
"""Unread request body past which reading pauses."""
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""The characters of a header name (names are checked joined with nothing between them)."""
_CONTROL = bytes(range(9)) + bytes(range(10, 32)) + b"\x7f"
"""Control characters other than tab, which no header value may hold (values are checked
joined with tabs)."""
_NO_BODY_STATUS = frozenset((204, 304))
_EMPTY_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 29\r\nconnection: close\r\n\r\nInvalid HTTP request received."
)


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


_STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


def _valid_headers(names: list[bytes], values: list[bytes]) -> bool:
    joined = b"\t".join(values)
    return not b"".join(names).translate(None, _TOKEN) and len(
        joined.translate(None, _CONTROL)
    ) == len(joined)


def _address(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else None


class Cycle:
    """One request and its response: the ``receive`` and ``send`` the app is given."""

    __slots__ = (
        "body",
        "body_size",
        "chunked",
        "complete",
        "conn",
        "delivered",
        "disconnected",
        "expect_continue",
        "head",
        "keep_alive",
        "more_body",
        "no_body",
        "remaining",
        "scope",
        "started",
        "waiter",
    )

    def __init__(
        self, conn: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect
        self.body: list[bytes] = []
        self.body_size = 0
        self.more_body = True
        self.delivered = False
        self.disconnected = False
        self.started = False
        self.complete = False
        self.head: bytes | None = None
        self.chunked = False
        self.no_body = False
        self.remaining: int | None = None
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- receive ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        conn = self.conn
        if self.expect_continue:
            self.expect_continue = False
            if self.more_body and not self.started and not conn.transport.is_closing():
                conn.transport.write(_CONTINUE)
        while not (self.disconnected or self.complete):
            if self.body or (not self.more_body and not self.delivered):
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body = []
                self.body_size = 0
                self.delivered = not self.more_body
                conn.resume_reading()
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            conn.resume_reading()
            self.waiter = conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return _DISCONNECT

    # --- send ------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', got {kind!r}")
            self.head = self._head(message["status"], message.get("headers", ()))
            self.started = True
            return
        if self.complete:
            raise RuntimeError(f"ASGI message {kind!r} sent after the response was complete")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', got {kind!r}")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        out = self._frame(body, more)
        if self.head is not None:
            out = self.head + out
            self.head = None
        if out:
            conn.transport.write(out)
        if not more:
            self.complete = True
            self.wake()
            conn.response_complete(self)

    def _head(self, status: int, headers: Headers) -> bytes:
        """The status line and headers; the framing of the body is decided here (and only once
        the headers are known to be valid: a refused head changes nothing)."""
        conn = self.conn
        lines = [_STATUS_LINES.get(status) or _status_line(status)]
        for name, value in conn.state.default_headers:
            lines += (name, b": ", value, b"\r\n")
        names: list[bytes] = []
        values: list[bytes] = []
        length: bytes | None = None
        chunked = close = False
        for name, value in headers:
            name = name.lower()
            names.append(name)
            values.append(value)
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection" and b"close" in value.lower():
                close = True
            lines += (name, b": ", value, b"\r\n")
        if not _valid_headers(names, values) or (length is not None and not length.isdigit()):
            raise RuntimeError("Invalid HTTP response header name or value")
        self.remaining = None if length is None else int(length)
        keep_alive = self.keep_alive and not close
        scope = self.scope
        if scope["method"] == "HEAD" or status in _NO_BODY_STATUS or status < 200:
            self.no_body = True
        elif chunked or length is None:
            if scope["http_version"] == "1.1":
                self.chunked = True
                if not chunked:
                    lines.append(b"transfer-encoding: chunked\r\n")
            else:
                keep_alive = False  # an HTTP/1.0 body without a length ends at close
        if not keep_alive and not close:
            lines.append(b"connection: close\r\n")
        self.keep_alive = keep_alive
        lines.append(b"\r\n")
        return b"".join(lines)

    def _frame(self, body: bytes, more: bool) -> bytes:
        if self.no_body:
            return b""
        if self.chunked:
            if not body:
                return b"" if more else b"0\r\n\r\n"
            end = b"\r\n" if more else b"\r\n0\r\n\r\n"
            return b"".join((b"%x\r\n" % len(body), body, end))
        if self.remaining is not None:
            self.remaining -= len(body)
            if self.remaining < 0:
                raise RuntimeError("Response content longer than its content-length")
            if not more and self.remaining:
                raise RuntimeError("Response content shorter than its content-length")
        return body


class HttpProtocol(asyncio.Protocol):
    """One client connection (uvicorn creates one per accepted socket)."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.state = server_state
        self.app_state = app_state
        self.keep_alive_seconds: float = config.timeout_keep_alive
        self.parser = httptools.HttpRequestParser(self)
        # Answer the first of pipelined requests even if the client closes after sending.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.cycle: Cycle | None = None
        """The request being answered."""
        self.parsing: Cycle | None = None
        """The request whose body is being read (the answered one, or a pipelined one)."""
        self.pipeline: deque[Cycle] = deque()
        self.read_paused = False
        self.write_paused = False
        self.closing = False
        self._drained: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: Headers = []
        self._expect = False
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    # --- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        for cycle in (self.cycle, self.parsing, *self.pipeline):
            if cycle is not None and not cycle.complete:
                cycle.disconnected = True
                cycle.wake()
        self.pipeline.clear()
        self.write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no upgrades: the request is answered as plain HTTP
        except httptools.HttpParserError:
            self._bad_request()

    def eof_received(self) -> bool | None:
        return None

    def _bad_request(self) -> None:
        log.warning("invalid HTTP request received")
        if self.cycle is None:
            self.transport.write(_BAD_REQUEST)
            self.transport.close()
        else:  # answer what is in flight, then close
            self.closing = True
            self.pipeline.clear()
            self.pause_reading()

    # --- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._expect = False
        self._idle_since = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = self._url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
        else:  # absolute form, or '*'
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"),
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self._headers,
        }
        if self.app_state:
            scope["state"] = self.app_state.copy()
        cycle = Cycle(self, scope, parser.should_keep_alive(), self._expect)
        self.parsing = cycle
        if self.cycle is None:
            self._start(cycle)
        else:
            self.pipeline.append(cycle)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.complete or cycle.disconnected:
            return
        cycle.body.append(body)
        cycle.body_size += len(body)
        if cycle.body_size > _BODY_HIGH_WATER:
            self.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is not None:
            cycle.more_body = False
            cycle.wake()

    # --- requests --------------------------------------------------------------------------

    def _start(self, cycle: Cycle) -> None:
        self.cycle = cycle
        task = self.loop.create_task(self._run(cycle))
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    async def _run(self, cycle: Cycle) -> None:
        try:
            await self.app(cycle.scope, cycle.receive, cycle.send)
        except BaseException as exc:
            log.error("Exception in ASGI application", exc_info=exc)
            self._fail(cycle)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            if not cycle.complete and not cycle.disconnected:
                log.error("ASGI application returned without completing its response")
                self._fail(cycle)

    def _fail(self, cycle: Cycle) -> None:
        if cycle.complete or cycle.disconnected:
            return
        if not cycle.started or cycle.head is not None:
            self.transport.write(_EMPTY_500)
        cycle.complete = True
        cycle.wake()
        self.transport.close()

    def response_complete(self, cycle: Cycle) -> None:
        """After the last bytes of ``cycle``'s response: the next request, or idleness."""
        self.state.total_requests += 1
        if not cycle.keep_alive or cycle.more_body or self.closing:
            # A request body left unread would be parsed as the next request: close instead.
            self.transport.close()
            return
        self.cycle = None
        if self.pipeline:
            self._start(self.pipeline.popleft())
        else:
            self._idle()
        self.resume_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after the current response."""
        if self.cycle is None:
            self.transport.close()
        else:
            self.closing = True

    # --- keep-alive ------------------------------------------------------------------------

    def _idle(self) -> None:
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.keep_alive_seconds, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # busy: the end of the current response starts the next idle period
        left = since + self.keep_alive_seconds - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._idle_check)
        else:
            self.transport.close()

    # --- flow control ----------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closing and not self.pipeline:
            parsing = self.parsing
            if parsing is not None and parsing.body_size > _BODY_HIGH_WATER:
                return
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    async def drain(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()
        await asyncio.shield(self._drained)
