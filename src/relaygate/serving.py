"""The HTTP protocol relaygate runs under uvicorn: fewer system calls per response.

uvicorn writes a response's head and each body message to the socket as they are sent, and
uvloop makes each ``transport.write`` its own system call (and, with ``TCP_NODELAY``, its own
packet, so the client wakes up once for the head and again for the body). Here the writes made
in one turn of the event loop are joined and written once, at the start of the next turn: a
non-streamed answer (head and body sent back to back) leaves in one write, as does a stream's
head with its first chunk.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_BYTES = 64 * 1024
"""Pending bytes written at once rather than at the next turn."""


class CoalescingTransport(asyncio.Transport):
    """A transport whose writes within one event-loop turn reach the socket together."""

    __slots__ = ("_loop", "_pending", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        # A copy of a mutable buffer: the caller may reuse it once write returns.
        self._pending.append(data if type(data) is bytes else bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()  # a large response reaches the transport (and its flow control) now

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is pending now (called at the start of the next turn, and before
        closing)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._size = 0
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))
