"""Opaque cursors: where a listing resumes, encoded so clients treat it as a token."""

from __future__ import annotations

import base64
import binascii
import json

from relaygate.errors import InvalidRequest

MAX_CURSOR = 200


def encode(position: list[object]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> object:
    if len(cursor) > MAX_CURSOR:
        raise ValueError("too long")
    padded = cursor + "=" * (-len(cursor) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _invalid() -> InvalidRequest:
    return InvalidRequest("cursor is not a cursor this API returned", param="cursor")


def decode_page(cursor: str | None) -> tuple[int, str] | None:
    """A ``(created_at, id)`` cursor."""
    if cursor is None:
        return None
    try:
        value = _decode(cursor)
    except (ValueError, UnicodeError, binascii.Error):
        raise _invalid() from None
    match value:
        case [int() as created, str() as ident] if len(ident) <= 80 and 0 <= created < 2**63:
            return created, ident
    raise _invalid()


def decode_before(cursor: str | None) -> int | None:
    """An ``[id]`` cursor (the audit log)."""
    if cursor is None:
        return None
    try:
        value = _decode(cursor)
    except (ValueError, UnicodeError, binascii.Error):
        raise _invalid() from None
    match value:
        case [int() as ident] if 0 <= ident < 2**63:
            return ident
    raise _invalid()
