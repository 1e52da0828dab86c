"""One HTTP/1.1 connection to an upstream: an asyncio protocol around httptools' C parser.

A connection carries one request at a time. :meth:`Connection.request` writes the request in
one write and waits for the answer's head; the body then arrives into the
:class:`~relaygate.upstream_http.response.Response`. Every wait for the upstream's next bytes
(the head, then each piece of the body) is bounded by ``read_timeout``; a timeout, a parser
error, a head over :data:`MAX_HEAD_BYTES` or a close before the answer ended fail the request
and close the connection (:mod:`relaygate.upstream_http.errors`). Only an answer received whole,
after which neither side said ``Connection: close`` (an HTTP/1.0 answer closes too), leaves the
connection reusable.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from relaygate.upstream_http.errors import (
    ConnectionClosed,
    HeadTooLarge,
    HttpClientError,
    ReadTimeout,
    RemoteProtocolError,
)
from relaygate.upstream_http.response import Headers, Response

if TYPE_CHECKING:
    from relaygate.upstream_http.pool import HostPool

MAX_HEAD_BYTES = 64 * 1024
"""The longest status line and headers read of an answer."""


class Connection(asyncio.Protocol):
    """One connection to an upstream (see the module docstring)."""

    __slots__ = (
        "_error",
        "_head_bytes",
        "_headers",
        "_keep",
        "_loop",
        "_parser",
        "_read_timeout",
        "_reusable",
        "_waiter",
        "busy",
        "closed",
        "idle_since",
        "pool",
        "received",
        "response",
        "transport",
    )

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: HttpClientError | None = None
        self._read_timeout: float | None = None
        self._reusable = False
        self._keep = True
        """The request did not say ``Connection: close``."""
        self.response: Response | None = None
        """The answer being received (from its head on)."""
        self.busy = False
        """A request is in flight (from its write until its answer is released)."""
        self.closed = False
        self.received = False
        """A byte of the current answer came."""
        self.idle_since = 0.0

    # --- asyncio's side -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        if not self.busy or self._error is not None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self.received = True
        response = self.response
        if response is not None and response.received_all:
            self._fail(RemoteProtocolError("the upstream sent bytes after its answer"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised (a head too large, a bad encoding)
            if isinstance(cause, HttpClientError):
                self._fail(cause)
            else:
                self._fail(RemoteProtocolError(f"the answer is not valid HTTP/1.1 ({exc})"))
        else:
            if response is None and self.response is None:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._fail(HeadTooLarge("the answer's head is larger than 64 KiB"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.busy and self._error is None:
            response = self.response
            if response is None:
                self._error = ConnectionClosed(
                    "the connection closed before the answer", before_answer=not self.received
                )
            elif not response.received_all and not self._ends_at_close(response):
                self._error = ConnectionClosed("the connection closed before the answer ended")
        self._wake()

    def _ends_at_close(self, response: Response) -> bool:
        """An answer with neither a length nor chunks ends when the connection does."""
        if response.content_length is not None or "transfer-encoding" in response.headers:
            return False
        try:
            response.finish()
        except HttpClientError as exc:
            self._error = exc
        return True

    # --- httptools' callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.response is not None:
            raise RemoteProtocolError("the upstream sent bytes after its answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge("the answer's head is larger than 64 KiB")
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (103 Early Hints, ...): the real one follows
            self._headers = []
            return
        headers = Headers()
        for raw_name, raw_value in self._headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            previous = headers.get(name)
            headers[name] = value if previous is None else f"{previous}, {value}"
        self._headers = []
        self.response = Response(self, status, headers)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.feed(body)

    def on_message_complete(self) -> None:
        if self.response is None:
            return  # the end of an interim answer
        self._reusable = self._keep and self._parser.should_keep_alive()
        self.response.finish()

    # --- the request ----------------------------------------------------------------------

    async def request(
        self, data: bytes | list[bytes], read_timeout: float | None, close: bool = False
    ) -> Response:
        """Send ``data`` (the whole request) and wait for the answer's head; ``close``: the
        request said ``Connection: close``."""
        self.busy = True
        self._keep = not close
        self.received = False
        self.response = None
        self._error = None
        self._reusable = False
        self._head_bytes = 0
        self._read_timeout = read_timeout
        transport = self.transport
        assert transport is not None
        if self.closed:
            self._error = ConnectionClosed(
                "the connection closed before the answer", before_answer=True
            )
            raise self._error
        if isinstance(data, list):
            transport.writelines(data)
        else:
            transport.write(data)
        try:
            while self.response is None:
                try:
                    await self.wait()
                except HttpClientError:
                    if self.response is None:
                        raise  # else the body's reader meets it
        except BaseException:
            self.done(False)
            raise
        return self.response

    async def wait(self) -> None:
        """Wait for the next event of the answer (bytes, its end, an error), at most
        ``read_timeout``; raise the connection's error if it has one."""
        error = self._error
        if error is None:
            waiter = self._waiter = self._loop.create_future()
            timeout = self._read_timeout
            timer = None if timeout is None else self._loop.call_later(timeout, self._time_out)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            error = self._error
        if error is not None:
            raise error

    def _time_out(self) -> None:
        self._fail(ReadTimeout("no answer within read_timeout"))
        self._wake()

    def _fail(self, error: HttpClientError) -> None:
        if self._error is None:
            self._error = error
        self._reusable = False
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def done(self, whole: bool) -> None:
        """The answer is released: back to the pool when ``whole`` and reusable, else closed."""
        self.response = None
        if whole and self._reusable and not self.closed and self._error is None:
            self.busy = False
            self.pool.put(self)
        else:
            self.busy = False
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


__all__ = ["MAX_HEAD_BYTES", "Connection"]
