"""One upstream answer: its status and headers, and its body as it arrives.

The body is held as the connection received it (dechunked, and inflated when the upstream sent
it ``gzip`` or ``deflate``), until :meth:`Response.receive` takes it. Past
:data:`HIGH_WATER` bytes held, the connection stops reading from the socket until the reader
has taken them: a fast upstream cannot fill memory. Inflating is done in steps of at most
:data:`HIGH_WATER` decoded bytes, and only while the held bytes are under it, so a small
compressed body that inflates to gigabytes (a zip bomb) holds no more than that at a time; the
reader's own limit (``max_body_bytes``, ``max_line_bytes``) stops it.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from relaygate.upstream_http.errors import RemoteProtocolError

if TYPE_CHECKING:
    from relaygate.upstream_http.connection import Connection

HIGH_WATER = 256 * 1024
"""Body bytes held for the reader past which the connection pauses reading."""


class Headers(dict[str, str]):
    """An answer's headers, names in lower case; looked up by any case. A repeated header's
    values are joined with ``", "``."""

    __slots__ = ()

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = dict.get(self, name)
        if value is None and not name.islower():
            value = dict.get(self, name.lower())
        return default if value is None else value

    def __getitem__(self, name: str) -> str:
        try:
            return dict.__getitem__(self, name)
        except KeyError:
            return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (
            isinstance(name, str) and dict.__contains__(self, name.lower())
        )


def _decoder(encoding: str | None, first: bytes) -> zlib._Decompress | None:
    """The inflater for a ``Content-Encoding`` (``None`` for an identity body). ``deflate`` is
    the zlib format, or raw deflate as some servers send it (told by its first byte), as
    aiohttp reads it."""
    if not encoding:
        return None
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        raw = bool(first) and first[0] & 0x0F != 8
        return zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return None  # an encoding relaygate did not ask for: passed on as it came


class Response:
    """An upstream's answer. Read its body with :meth:`receive` (or
    :func:`relaygate.providers.reading.read_body`), then :meth:`release` it (the connection
    goes back to the pool if the answer was whole) or :meth:`close` it (the connection is
    closed: an abandoned answer stops the upstream's work)."""

    __slots__ = (
        "_chunks",
        "_complete",
        "_conn",
        "_decoder",
        "_encoding",
        "_paused",
        "_pending",
        "_size",
        "content_length",
        "headers",
        "status",
    )

    def __init__(self, conn: Connection, status: int, headers: Headers) -> None:
        self._conn: Connection | None = conn
        self.status = status
        self.headers = headers
        length = headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._encoding = headers.get("content-encoding")
        self._decoder: zlib._Decompress | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._pending = b""
        """Compressed bytes not yet inflated (held while the decoded ones pass the bound)."""
        self._complete = False
        """The connection received the whole body."""
        self._paused = False

    # --- the connection's side ------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Body bytes the connection received (dechunked)."""
        if self._encoding is None:
            self._chunks.append(data)
            self._size += len(data)
        else:
            if self._decoder is None:
                self._decoder = _decoder(self._encoding, data)
                if self._decoder is None:
                    self._encoding = None
                    self.feed(data)
                    return
            self._pending = self._pending + data if self._pending else data
            self._inflate()
        if (self._size > HIGH_WATER or self._pending) and not self._paused and self._conn:
            self._paused = True
            self._conn.pause_reading()

    def finish(self) -> None:
        """The connection received the end of the body."""
        self._complete = True
        if self._decoder is not None and not self._pending:
            self._flush()

    def _inflate(self) -> None:
        decoder = self._decoder
        assert decoder is not None
        data = self._pending
        while data and self._size < HIGH_WATER:
            try:
                out = decoder.decompress(data, HIGH_WATER)
            except zlib.error:
                raise RemoteProtocolError("the answer's body could not be decoded") from None
            tail = decoder.unconsumed_tail
            if out:
                self._chunks.append(out)
                self._size += len(out)
            elif len(tail) == len(data):
                data = b""  # nothing more comes out of it (bytes past the end): dropped
                break
            data = tail
        self._pending = data
        if not data and self._complete:
            self._flush()

    def _flush(self) -> None:
        assert self._decoder is not None
        try:
            out = self._decoder.flush()
        except zlib.error:
            raise RemoteProtocolError("the answer's body could not be decoded") from None
        if out:
            self._chunks.append(out)
            self._size += len(out)

    # --- the reader's side ----------------------------------------------------------------

    @property
    def received_all(self) -> bool:
        """Whether the connection received the end of the body."""
        return self._complete

    @property
    def complete(self) -> bool:
        """Whether the whole body was received (not necessarily read)."""
        return self._complete and not self._pending

    async def receive(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some, at most
        ``read_timeout`` between two arrivals); ``b""`` at the end of the body. Errors of the
        connection are raised once the bytes before them are taken."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._chunks = []
                self._size = 0
                if self._pending:
                    self._inflate()
                if self._paused and not self._pending and self._conn is not None:
                    self._paused = False
                    self._conn.resume_reading()
                return data
            if self._complete and not self._pending:
                return b""
            conn = self._conn
            if conn is None:
                raise RemoteProtocolError("the answer was already released")
            await conn.wait()

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if the answer was
        received whole and neither side asked to close, else it is closed."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            if self._paused:
                conn.resume_reading()
            conn.done(self._complete and not self._pending)

    def close(self) -> None:
        """Done with the answer, whatever is left of it: its connection is closed."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.done(False)


__all__ = ["HIGH_WATER", "Headers", "Response"]
