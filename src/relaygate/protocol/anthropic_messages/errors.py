"""Errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.

relaygate's errors keep their meaning; only the status/type pairs become Anthropic's: 402 is
``billing_error``, 413 ``request_too_large``, 500 and 502 ``api_error``, 503 becomes 529
``overloaded_error`` (which Anthropic's SDKs and Claude Code retry), 504 ``timeout_error``.
429 and 529 always carry ``Retry-After``.
"""

from __future__ import annotations

import msgspec

from relaygate.errors import ApiError
from relaygate.protocol.render import ErrorShape
from relaygate.redaction import REDACTOR

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OVERLOADED = 529
DEFAULT_RETRY_AFTER = b"30"
"""``Retry-After`` of a 429 or 529 whose error named no wait (seconds)."""


class _Detail(msgspec.Struct):
    type: str
    message: str


class _Envelope(msgspec.Struct, tag_field="type", tag="error"):
    error: _Detail


class _Event(msgspec.Struct):
    type: str
    error: _Detail


_encoder = msgspec.json.Encoder()


def _status_type(error: ApiError) -> tuple[int, str]:
    status = OVERLOADED if error.status == 503 else error.status
    return status, TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _message(error: ApiError) -> str:
    message = REDACTOR.redact_configured(error.message)
    if error.fallback_suggestion and error.status in (402, 404):
        message += f" ({error.fallback_suggestion})"
    return message


class AnthropicErrors(ErrorShape):
    """The error shape of the Anthropic routes."""

    def response(self, error: ApiError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        status, kind = _status_type(error)
        headers = error.headers()
        if status in (429, OVERLOADED) and not any(k == b"retry-after" for k, _ in headers):
            headers = [*headers, (b"retry-after", DEFAULT_RETRY_AFTER)]
        body = _encoder.encode(_Envelope(_Detail(kind, _message(error))))
        return status, body, headers

    def sse(self, error: ApiError) -> bytes:
        _, kind = _status_type(error)
        data = _encoder.encode(_Event("error", _Detail(kind, _message(error))))
        return b"event: error\ndata: " + data + b"\n\n"


ANTHROPIC_ERRORS = AnthropicErrors()
