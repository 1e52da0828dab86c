"""Bytes on the wire: status lines, header checks, and the answers the protocol itself gives."""

from __future__ import annotations

import http
from typing import Any

import msgspec

from relaygate import access

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""The characters of a header name (names are checked joined with nothing between them)."""
CONTROL = bytes(range(9)) + bytes(range(10, 32)) + b"\x7f"
"""Control characters other than tab, which no header value may hold (values are checked
joined with tabs)."""
NO_BODY_STATUS = frozenset((204, 304))


def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: status_line(status) for status in range(100, 600)}


def valid_headers(names: list[bytes], values: list[bytes]) -> bool:
    joined = b"\t".join(values)
    return not b"".join(names).translate(None, TOKEN) and len(
        joined.translate(None, CONTROL)
    ) == len(joined)


def address(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else None


def refusal(status: int, kind: str, message: str, retry_after: int | None = None) -> bytes:
    """A whole response that ends the connection, in the contract's error shape."""
    error: dict[str, Any] = {"code": status, "message": message, "type": kind}
    if retry_after is not None:
        error["fallback_suggestion"] = f"retry after {retry_after} seconds"
    body = msgspec.json.encode({"error": error})
    extra = b"" if retry_after is None else b"retry-after: %d\r\n" % retry_after
    return b"".join(
        (
            STATUS_LINES[status],
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            extra,
            b"connection: close\r\n\r\n",
            body,
        )
    )


def log_refusal(answer: bytes) -> None:
    """The request log's line for a refusal (``answer``, made by :func:`refusal`)."""
    error = msgspec.json.decode(answer.partition(b"\r\n\r\n")[2])["error"]
    access.refused(error["code"], error["type"])


INTERNAL_ERROR = refusal(500, "internal_server_error", "Internal server error")
BAD_REQUEST = refusal(400, "invalid_request_error", "Invalid HTTP request received")
HEAD_TIMEOUT = refusal(408, "invalid_request_error", "The request head did not arrive in time")
BODY_TIMEOUT = refusal(408, "invalid_request_error", "The request body stopped arriving")
HEAD_TOO_LARGE = refusal(
    431, "request_too_large_error", "The request line and headers are too large"
)
TOO_MANY_CONNECTIONS = refusal(
    503, "service_unavailable_error", "Too many open connections", retry_after=1
)
