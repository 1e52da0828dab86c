"""One request and its response: the ASGI ``receive`` and ``send`` of a request."""

from __future__ import annotations

import asyncio
import operator
from typing import TYPE_CHECKING, Any

from relaygate.api.http import Headers, Message
from relaygate.serving.wire import (
    CONTINUE,
    NO_BODY_STATUS,
    STATUS_LINES,
    status_line,
    valid_headers,
)

if TYPE_CHECKING:
    from relaygate.serving.protocol import HttpProtocol

_DISCONNECT: Message = {"type": "http.disconnect"}
_LAST_CHUNK = b"\r\n0\r\n\r\n"
"""What ends a chunked body's last piece: its CRLF, then the zero-length chunk."""
_name = operator.itemgetter(0)
_value = operator.itemgetter(1)
_lower = operator.methodcaller("lower")
_encoded_defaults: tuple[object, bytes] = (None, b"")


def _defaults(headers: Headers) -> bytes:
    """The server's default headers (``date``, and ``server`` if on) as they go out: encoded
    once per list (uvicorn builds a new one each second), not once per response."""
    global _encoded_defaults
    if _encoded_defaults[0] is not headers:
        # the list is kept with its bytes: its identity cannot be reused while it is cached
        _encoded_defaults = (headers, b"".join(b"%s: %s\r\n" % pair for pair in headers))
    return _encoded_defaults[1]


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
                conn.transport.write(CONTINUE)
                conn.body_expected()
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
        if self.chunked and body:  # a stream's piece: _frame's chunk, without its call
            out = b"".join((b"%x\r\n" % len(body), body, b"\r\n" if more else _LAST_CHUNK))
        else:
            out = self._frame(body, more)
        head = self.head
        if head is not None:
            out = head + out
            self.head = None
        if out:
            conn.transport.write(out)
        if not more:
            self.complete = True
            if self.waiter is not None:
                self.wake()
            conn.response_complete(self)

    def _head(self, status: int, headers: Headers) -> bytes:
        """The status line and headers; the framing of the body is decided here (and only once
        the headers are known to be valid: a refused head changes nothing)."""
        names: list[bytes] = list(map(_lower, map(_name, headers)))  # no loop in Python
        values: list[bytes] = list(map(_value, headers))
        length: bytes | None = None
        chunked = close = False
        if b"transfer-encoding" in names or b"connection" in names:
            for name, value in zip(names, values):  # noqa: B905 (built together; no keyword parsing)
                if name == b"content-length":
                    length = value
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection" and b"close" in value.lower():
                    close = True
        elif b"content-length" in names:  # the usual framing: found in C, the last one wins
            length = values[~names[::-1].index(b"content-length")]
        if not valid_headers(names, values) or (length is not None and not length.isdigit()):
            raise RuntimeError("Invalid HTTP response header name or value")
        self.remaining = None if length is None else int(length)
        keep_alive = self.keep_alive and not close
        scope = self.scope
        lines = [STATUS_LINES.get(status) or status_line(status)]
        lines.append(_defaults(self.conn.state.default_headers))
        if names:
            pairs = zip(names, values)  # noqa: B905 (built together; no keyword parsing)
            lines += (b"\r\n".join(map(b": ".join, pairs)), b"\r\n")
        if scope["method"] == "HEAD" or status in NO_BODY_STATUS or status < 200:
            self.no_body = True
        elif chunked or length is None:
            if scope["http_version"] == "1.1":
                self.chunked = True
                if not chunked:
                    lines.append(b"transfer-encoding: chunked\r\n")
            else:
                keep_alive = False  # an HTTP/1.0 body without a length ends at close
        if not keep_alive:
            if not close:
                lines.append(b"connection: close\r\n")
        elif scope["http_version"] == "1.0":
            lines.append(b"connection: keep-alive\r\n")  # not HTTP/1.0's default
        self.keep_alive = keep_alive
        lines.append(b"\r\n")
        return b"".join(lines)

    def _frame(self, body: bytes, more: bool) -> bytes:
        if self.no_body:
            return b""
        if self.chunked:
            if not body:
                return b"" if more else b"0\r\n\r\n"
            end = b"\r\n" if more else _LAST_CHUNK
            return b"".join((b"%x\r\n" % len(body), body, end))
        if self.remaining is not None:
            self.remaining -= len(body)
            if self.remaining < 0:
                raise RuntimeError("Response content longer than its content-length")
            if not more and self.remaining:
                raise RuntimeError("Response content shorter than its content-length")
        return body
