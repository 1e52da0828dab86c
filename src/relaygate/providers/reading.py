"""Reading upstream answers with bounded memory and linear work.

* :func:`read_body` reads a non-streamed body up to a byte limit: a declared ``Content-Length``
  above it fails before anything is read, and the count is kept as the body streams in
  (after any content decoding), whatever the header said.
* :class:`LineSplitter` cuts a stream into lines (or texts of whole lines). The bytes of an
  unfinished line are appended to one growing buffer and never scanned again (each network
  read is split once), so a long line costs time in proportion to its length, not to its
  length times the number of reads; a line longer than the limit fails as soon as it is seen.

Both raise :class:`~relaygate.errors.UpstreamProtocolError` (502 ``upstream_error``) with
relaygate's own sentence: nothing of what the upstream sent is repeated.
"""

from __future__ import annotations

from relaygate.errors import UpstreamProtocolError
from relaygate.upstream_http import Response


def _size_text(size: int) -> str:
    """``size`` bytes in the largest binary unit that divides it (``64 MiB``, ``1500 bytes``)."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def too_large(label: str, what: str, limit: int, setting: str) -> UpstreamProtocolError:
    """The error for an upstream answer part (``what``) over ``limit`` bytes."""
    return UpstreamProtocolError(
        f"Upstream {label} sent {what} larger than {_size_text(limit)}, relaygate's limit"
        f" ({setting}); the answer was dropped",
        upstream=label,
    )


async def read_body(response: Response, limit: int, label: str) -> bytes:
    """The whole body of ``response``; more than ``limit`` bytes is an upstream error."""
    declared = response.content_length
    if declared is not None and declared > limit and "content-encoding" not in response.headers:
        raise too_large(label, "a body", limit, "max_body_bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.receive():
        size += len(chunk)
        if size > limit:
            raise too_large(label, "a body", limit, "max_body_bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_some(response: Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the body of ``response`` (an error status's excerpt)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await response.receive()):
        size += len(chunk)
        chunks.append(chunk)
    return b"".join(chunks)[:limit]


class LineSplitter:
    """Lines of a byte stream, split at ``\\n`` (which is dropped), each at most ``limit``
    bytes long; see the module docstring."""

    __slots__ = ("_partial", "label", "limit")

    def __init__(self, limit: int, label: str) -> None:
        self.limit = limit
        self.label = label
        self._partial = bytearray()
        """The bytes of the line not yet finished."""

    def feed(self, piece: bytes) -> list[bytes]:
        """The lines that ``piece`` finishes, in order."""
        lines = piece.split(b"\n")
        tail = lines.pop()
        partial = self._partial
        if not (partial or tail) and len(piece) <= self.limit:
            return lines  # whole lines, the common case
        if partial:
            partial += lines[0] if lines else tail
            self._check(len(partial))
            if not lines:
                return lines
            lines[0] = bytes(partial)
            partial.clear()
        if len(piece) > self.limit:
            for line in lines:
                self._check(len(line))
        if tail:
            partial += tail
            self._check(len(partial))
        return lines

    def text(self, piece: bytes) -> bytes:
        """The complete lines that ``piece`` finishes as one text, each with its ``\\n`` (empty
        when it finishes none): for a reader that scans a read's lines at once. Only the new
        bytes are searched, and a read of whole lines is returned as it is. The unfinished
        line is held to the limit."""
        end = piece.rfind(b"\n") + 1
        partial = self._partial
        if not end:
            partial += piece
            self._check(len(partial))
            return b""
        if partial:
            self._check(len(partial) + piece.find(b"\n"))
            partial += piece[:end]
            text = bytes(partial)
            partial.clear()
        else:
            text = piece if end == len(piece) else piece[:end]
        if end < len(piece):
            partial += piece[end:]
            self._check(len(partial))
        return text

    def rest(self) -> bytes:
        """The last line, if the stream ended without its newline (empty otherwise)."""
        rest = bytes(self._partial)
        self._partial.clear()
        return rest

    def _check(self, size: int) -> None:
        if size > self.limit:
            self._partial = bytearray()  # nothing of it is kept
            raise too_large(self.label, "a stream line", self.limit, "max_line_bytes")


__all__ = ["LineSplitter", "read_body", "read_some", "too_large"]
