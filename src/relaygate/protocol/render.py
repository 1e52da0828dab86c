"""Rendering of responses: the one place errors become ``{"error": {...}}`` bodies (and SSE
error events); every message passes the process's redactor on its way out."""

from __future__ import annotations

from typing import Any

import msgspec

from relaygate.errors import ApiError
from relaygate.protocol.types import ErrorBody, ErrorEnvelope
from relaygate.redaction import REDACTOR

encoder = msgspec.json.Encoder(decimal_format="number")


def error_body(error: ApiError) -> bytes:
    """The contract's error object for ``error``."""
    return encoder.encode(
        ErrorEnvelope(
            ErrorBody(
                code=error.status,
                message=REDACTOR.redact_configured(error.message),
                type=error.type,
                param=error.param,
                fallback_suggestion=error.fallback_suggestion,
            )
        )
    )


def sse_event(payload: Any) -> bytes:
    """One SSE ``data:`` event holding ``payload`` as JSON."""
    return b"data: " + encoder.encode(payload) + b"\n\n"


def sse_error(error: ApiError) -> bytes:
    """The SSE event that ends a stream that failed after it started (never ``[DONE]``)."""
    return b"data: " + error_body(error) + b"\n\n"


class ErrorShape:
    """How one route renders errors: the contract's ``{"error": {...}}`` here; a dialect with
    its own shape (Anthropic's) subclasses it. Every route's errors pass through one."""

    def response(self, error: ApiError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The status, body and extra headers of the error response."""
        return error.status, error_body(error), error.headers()

    def sse(self, error: ApiError) -> bytes:
        """The event that ends a stream that failed after it started."""
        return sse_error(error)


CONTRACT = ErrorShape()
"""The contract's error shape (chat completions, models, credits, ...)."""


SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keep-alive\n\n"
