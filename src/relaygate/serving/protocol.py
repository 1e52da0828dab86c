"""One client connection: parsing, the connection's deadlines, flow control, and its end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httptools

from relaygate.api.http import Headers
from relaygate.serving import wire
from relaygate.serving.cycle import Cycle

log = logging.getLogger("relaygate.http")

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_BODY_HIGH_WATER = 64 * 1024
"""Unread request body past which reading pauses."""
_DRAIN_BYTES = 1024 * 1024
_DRAIN_SECONDS = 2.0
"""After an answer that ends the connection, what is still read (and dropped) before the close,
so that the client, still sending, can read the answer rather than a reset."""

# What the connection's one deadline is for.
_IDLE, _HEAD, _BODY, _SEND, _LINGER = range(5)
# What is done with the bytes that arrive: parsed, parsed to find the end of a body that is
# dropped, or dropped.
_PARSE, _DRAIN, _DROP = range(3)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may hold of the server (the settings of the same names)."""

    max_head_bytes: int = 64 * 1024
    head_timeout: float = 20.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0
    max_connections: int = 2048


class _Warnings:
    """Warnings about clients, at most one a second per kind (an attack must not flood the log)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -2.0) < 1.0:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        log.warning("%s%s", message, f" (and {skipped} more since the last)" if skipped else "")


warnings = _Warnings()


class HttpProtocol(asyncio.Protocol):
    """One client connection (uvicorn creates one per accepted socket).

    Its attributes are slots: past 30 attributes an instance's dict is no longer shared with
    its class, and every attribute access on the hot path would cost a dict lookup.
    """

    __slots__ = (
        "__weakref__",
        "_closer",
        "_counted",
        "_deadline",
        "_drain_left",
        "_drained",
        "_expect",
        "_fed",
        "_fresh",
        "_head_bytes",
        "_head_parsed",
        "_headers",
        "_in_head",
        "_mode",
        "_refusal",
        "_sent_mark",
        "_timer",
        "_timer_at",
        "_url",
        "_waiting",
        "app",
        "app_state",
        "client",
        "closing",
        "cycle",
        "keep_alive_seconds",
        "limits",
        "loop",
        "parser",
        "parsing",
        "pipeline",
        "read_paused",
        "scheme",
        "server",
        "state",
        "transport",
        "write_paused",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        limits: Limits | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.state = server_state
        self.app_state = app_state
        self.limits = limits or Limits()
        self.keep_alive_seconds: float = config.timeout_keep_alive
        self.parser: Any = httptools.HttpRequestParser(self)
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
        self._in_head = False
        """A request head has begun and is not complete."""
        self._head_bytes = 0
        """Bytes of the current head, counted when it spans reads (never 0 then)."""
        self._head_parsed = 0
        """The bytes of the first ``_counted`` headers parsed (see :meth:`_parsed`)."""
        self._counted = 0
        self._fresh = False
        """The current head began in the read being parsed."""
        self._fed = 0
        """The size of the read being parsed."""
        self._mode = _PARSE
        self._drain_left = 0
        self._refusal: bytes | None = None
        self._deadline: float | None = None
        self._waiting = _IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sent_mark = 0
        """Unsent bytes when the send deadline was set: fewer at the deadline is progress."""
        self._closer: asyncio.TimerHandle | None = None
        """Aborts a closed connection whose client does not read what is left to send."""

    # --- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.state.connections) >= self.limits.max_connections:
            warnings.warn("connections", "max_connections reached: a connection was refused")
            self._mode = _DROP
            self.transport.write(wire.TOO_MANY_CONNECTIONS)
            wire.log_refusal(wire.TOO_MANY_CONNECTIONS)
            self._close()
            return
        self.state.connections.add(self)
        self.server = wire.address(transport.get_extra_info("sockname"))
        self.client = wire.address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        self._wait(_IDLE, self.keep_alive_seconds)

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
        self._drained = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        self._deadline = None
        self._mode = _DROP
        # Break the reference cycles (the parser's callbacks, the cycles' connection): the
        # protocol is freed by reference counting, as the app freezes the garbage collector.
        self.parser = None
        self.cycle = self.parsing = None
        self._headers = []

    def data_received(self, data: bytes) -> None:
        if self._mode:
            self._discard(data)
            return
        self._fed = len(data)
        self._fresh = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade_refused()
            return
        except httptools.HttpParserError as exc:
            if not self._mode:  # not already refused by a callback
                self._refuse(wire.BAD_REQUEST, f"invalid HTTP request received ({exc})")
            return
        if self._in_head:  # the whole read is part of the head, unless the head began in it
            self._head_arriving(0 if self._fresh else len(data))
        else:
            cycle = self.parsing
            if (
                cycle is not None
                and cycle.more_body
                and not self.read_paused
                and not cycle.expect_continue
                and not self._mode
            ):
                self._wait(_BODY, self.limits.body_timeout)

    def eof_received(self) -> bool | None:
        return None

    def _head_arriving(self, size: int) -> None:
        """After bytes that left a head incomplete (``size`` of them all part of it)."""
        self._head_bytes += size or 1
        if max(self._head_bytes, self._parsed()) > self.limits.max_head_bytes:
            self._refuse(wire.HEAD_TOO_LARGE, "a request head over max_head_bytes")
        elif self.cycle is None and (self._deadline is None or self._waiting != _HEAD):
            self._wait(_HEAD, self.limits.head_timeout)

    def _upgrade_refused(self) -> None:
        """No upgrades: the request is answered as plain HTTP and the connection closes after
        the answer in flight (httptools parses nothing after an upgrade head: the bytes that
        follow are left unread, and the close tells the client so rather than losing them
        silently on a connection kept alive). An upgrade request pipelined behind another is
        not answered: the close after the first answer tells the client to send it again."""
        cycle = self.parsing
        if cycle is not None:
            cycle.keep_alive = False
        self.closing = True
        self.pause_reading()

    def _close(self) -> None:
        """Close; bytes still unsent get ``send_timeout`` to reach the client, then it is cut
        (a close waits for the client to read them, which one that stopped reading never does)."""
        transport = self.transport
        transport.close()
        if self._closer is None and transport.get_write_buffer_size():
            self._closer = self.loop.call_later(self.limits.send_timeout, transport.abort)

    def _refuse(self, answer: bytes, reason: str) -> None:
        """Answer ``answer`` and close: the request being read cannot be served."""
        status = answer[9:12].decode()
        warnings.warn(status, f"{reason}: answered {status} and closed")
        if answer is not wire.BODY_TIMEOUT:  # a head: its request never reached the app
            wire.log_refusal(answer)
        self._mode = _DROP
        self.closing = True
        self.pipeline.clear()
        cycle = self.cycle
        if cycle is None:
            self._close_after(answer)
        elif cycle.complete:
            self._close()
        elif self.parsing is cycle and cycle.more_body:  # the body of the request in flight
            cycle.disconnected = True
            cycle.wake()
            self._close_after(answer if not cycle.started or cycle.head is not None else b"")
        else:  # a pipelined request: the one in flight is answered first
            self._refusal = answer
            self.pause_reading()

    def _close_after(self, answer: bytes) -> None:
        """Send ``answer``, then close once the client has read it: what it still sends is
        dropped, up to a bound in bytes and time."""
        transport = self.transport
        if answer:
            transport.write(answer)
        self.closing = True
        if self._mode == _PARSE:
            self._mode = _DRAIN
        self._drain_left = _DRAIN_BYTES
        if transport.can_write_eof():
            transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        self._wait(_LINGER, _DRAIN_SECONDS)

    def _discard(self, data: bytes) -> None:
        self._drain_left -= len(data)
        if self._mode == _DRAIN:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self._drain_left = 0
            cycle = self.parsing
            if cycle is None or not cycle.more_body:
                self._drain_left = 0  # the whole body is in: nothing more to wait for
        if self._drain_left <= 0:
            self._close()

    # --- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._expect = False
        self._in_head = True
        self._fresh = True
        self._head_bytes = 0
        self._head_parsed = self._counted = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def _parsed(self) -> int:
        """The request line and the headers parsed so far (httptools holds the one being
        read), counted when a bound is checked rather than on every header: each header is
        counted once, however many reads the head spans."""
        headers = self._headers
        if self._counted < len(headers):
            fresh = headers[self._counted :]
            self._head_parsed += sum(len(name) + len(value) for name, value in fresh)
            self._head_parsed += 4 * len(fresh)
            self._counted = len(headers)
        return len(self._url) + self._head_parsed

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.closing:
            return  # no new request on a connection that is closing
        # Counted only if the head spanned reads or its read was large (a read holding a whole
        # head is its bound).
        limit = self.limits.max_head_bytes
        if (self._head_bytes or self._fed > limit) and self._parsed() > limit:
            self._refuse(wire.HEAD_TOO_LARGE, "a request head over max_head_bytes")
            raise _Refused
        url = self._url
        parser = self.parser
        if url.find(b"#") >= 0:  # (``in`` on bytes first tries the operand as an int: an error)
            url = url.partition(b"#")[0]  # a fragment is not sent to a server: not our path
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
        self._deadline = None  # busy: the app has the request
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
            self.transport.write(wire.INTERNAL_ERROR)
        cycle.complete = True
        cycle.wake()
        self._close()

    def response_complete(self, cycle: Cycle) -> None:
        """After the last bytes of ``cycle``'s response: the next request, or idleness."""
        self.state.total_requests += 1
        if not cycle.keep_alive or cycle.more_body or self.closing:
            self._end(cycle)
            return
        self.cycle = None
        if self.pipeline:
            self._start(self.pipeline.popleft())
        elif self.write_paused or self._in_head:
            self._idle()
        else:  # idle: _wait(_IDLE, ...) inline, as after every response
            deadline = self.loop.time() + self.keep_alive_seconds
            self._waiting = _IDLE
            self._deadline = deadline
            if self._timer is None or self._timer_at > deadline:
                self._wait(_IDLE, self.keep_alive_seconds)
        self.resume_reading()

    def _end(self, cycle: Cycle) -> None:
        """The connection ends after ``cycle``'s response."""
        if self._refusal is not None:
            self._close_after(self._refusal)
        elif cycle.more_body and not self._mode:
            # A body left unread would be parsed as the next request: read it to its end
            # (within bounds) and drop it, then close.
            self._close_after(b"")
        else:
            self._close()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after the current response."""
        if self.cycle is None:
            self._close()
        else:
            self.closing = True

    # --- the deadline ------------------------------------------------------------------------

    def _idle(self) -> None:
        if self.write_paused:  # the client has yet to read the last response
            self._set_send_deadline()
        elif self._in_head:  # a pipelined head had begun
            self._wait(_HEAD, self.limits.head_timeout)
        else:
            self._wait(_IDLE, self.keep_alive_seconds)

    def _set_send_deadline(self) -> None:
        self._sent_mark = self.transport.get_write_buffer_size()
        self._wait(_SEND, self.limits.send_timeout)

    def _wait(self, kind: int, seconds: float) -> None:
        """Set the connection's deadline: the timer is moved only if it would fire too late."""
        deadline = self.loop.time() + seconds
        self._waiting = kind
        self._deadline = deadline
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.parser is None:
            return  # busy (the next wait arms the timer again), or closed
        if deadline > self.loop.time():
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._expire)
            return
        self._deadline = None
        kind = self._waiting
        if kind == _IDLE:
            if self.cycle is None and not self._in_head:
                if self.transport.get_write_buffer_size():
                    self.transport.abort()  # idle, and still not read what it was sent
                else:
                    self.transport.close()
        elif kind == _HEAD:
            if self.cycle is None and self._in_head:
                self._refuse(wire.HEAD_TIMEOUT, "a request head took over head_timeout")
        elif kind == _BODY:
            cycle = self.cycle
            if (
                cycle is not None
                and cycle is self.parsing
                and cycle.more_body
                and not cycle.complete
                and not self.read_paused
                and not self._mode
            ):
                self._refuse(wire.BODY_TIMEOUT, "a request body stalled past body_timeout")
        elif kind == _SEND:
            unsent = self.transport.get_write_buffer_size()
            if unsent and unsent < self._sent_mark:  # the client reads, if slowly: more time
                self._set_send_deadline()
            elif unsent:
                self._send_timed_out()
            elif self.cycle is None and not self._mode:
                self._idle()
        elif self.write_paused:  # the client does not even read the answer that ends it
            self._send_timed_out()
        else:
            self._close()

    def _send_timed_out(self) -> None:
        warnings.warn("send", "a client did not read for send_timeout: taken as gone")
        for cycle in (self.cycle, self.parsing, *self.pipeline):
            if cycle is not None and not cycle.complete:
                cycle.disconnected = True
                cycle.wake()
        self.transport.abort()

    # --- flow control ----------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        parsing = self.parsing
        if self.read_paused and not self.pipeline and (not self.closing or self._in_flight()):
            if parsing is not None and parsing.body_size > _BODY_HIGH_WATER:
                return
            self.read_paused = False
            self.transport.resume_reading()
            if parsing is not None and parsing.more_body and not self._mode:
                self._wait(_BODY, self.limits.body_timeout)  # the client's turn again

    def _in_flight(self) -> bool:
        """The body of the request being answered is still arriving (read it while closing)."""
        cycle = self.cycle
        return cycle is not None and cycle is self.parsing and cycle.more_body and not self._mode

    def body_expected(self) -> None:
        """After ``100 Continue``: the client's body is awaited from now."""
        self._wait(_BODY, self.limits.body_timeout)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None
        if self._waiting == _SEND and not self._mode:
            if self.cycle is None:
                self._idle()  # the client read the last response: now it may idle
            else:
                self._deadline = None  # its send is done: the next one sets its own deadline

    async def drain(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()
            self._set_send_deadline()
        await asyncio.shield(self._drained)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was refused."""
