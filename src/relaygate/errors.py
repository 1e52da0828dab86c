"""The one error hierarchy of relaygate.

Every error a client can see carries the contract's HTTP status and ``type``; it is rendered to
``{"error": {...}}`` in exactly one place (:mod:`relaygate.protocol.render`).

    RelaygateError
    ├── ConfigError                      start-up only: a bad config file or setting
    └── ApiError                         anything a client can receive
        ├── InvalidRequest               400 invalid_request_error
        │   ├── MethodNotAllowed         405 invalid_request_error (+ Allow)
        │   └── Conflict                 409 invalid_request_error (admin API: a used code, a
        │                                    reused Idempotency-Key)
        ├── AuthenticationFailed         401 authentication_error
        ├── InsufficientQuota            402 insufficient_quota_error
        ├── PermissionDenied             403 permission_error
        ├── NotFound                     404 not_found_error
        ├── RequestTooLarge              413 request_too_large_error
        ├── RateLimited                  429 rate_limit_error (+ Retry-After)
        │   └── UpstreamsRateLimited     every upstream refused for rate (+ retry-after-ms)
        ├── InternalError                500 internal_server_error
        ├── UpstreamError                502 upstream_error
        │   ├── UpstreamUnreachable      connect error or time-out (retryable)
        │   ├── UpstreamStatus           the upstream answered an error status
        │   └── UpstreamProtocolError    the upstream answered something we cannot read
        └── ServiceUnavailable           503 service_unavailable_error
            ├── NoUpstream               the model has no upstream configured (permanent)
            ├── UpstreamsUnavailable     nothing answered; retry after a known time (+ headers)
            └── ServerBusy               the process is at a capacity limit (+ Retry-After)

Every error says whether retrying the same request can help (``x-should-retry: true`` or
``false``, which OpenAI's SDKs obey before their own rules): not for a 4xx but 429, nor for a
permanent 503 or an upstream's own refusal; yes for 429, 503 and an upstream that failed or did
not answer; a 500 says nothing (the SDKs' default: retry).

Upstream failures are mapped to :class:`UpstreamError` where the upstream is called (including
while a stream is read); their messages never contain the upstream's key or raw body.
"""

from __future__ import annotations

import math

EXCERPT_CHARS = 64
"""The most characters of a client's value an error message quotes."""
MAX_RETRY_AFTER = 86400.0
"""The longest wait, in seconds, relaygate reads from an upstream's ``Retry-After`` or tells a
client in its own (a day)."""


def bounded_wait(seconds: float) -> float:
    """``seconds`` as a wait to read or tell: within 0 and :data:`MAX_RETRY_AFTER` (0 for
    nan), so that no value an upstream sent can overflow a header."""
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if not math.isnan(seconds) else 0.0


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short, quoted, escaped excerpt of a client-provided value, for an error message.

    At most ``limit`` characters of the value are quoted (``repr`` escapes quotes, newlines and
    control characters); a longer value is cut and the message says how much was left out, so an
    error never echoes more than a short excerpt of client input.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text) - limit} more characters)"


class RelaygateError(Exception):
    """Base of every error relaygate raises on purpose."""


class ConfigError(RelaygateError):
    """A configuration problem found at start-up; the message names the file, key and problem."""


class ApiError(RelaygateError):
    """An error with the contract's status, ``type`` and optional ``param``."""

    status: int = 500
    type: str = "internal_server_error"
    default_suggestion: str | None = None
    should_retry: bool | None = None
    """``x-should-retry``: whether the same request, sent again, can succeed (``None``: the
    header is left out)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        fallback_suggestion: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.fallback_suggestion = fallback_suggestion or self.default_suggestion

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers this error carries."""
        return []

    def retry_hint(self) -> bool | None:
        """The ``x-should-retry`` value (see :attr:`should_retry`)."""
        return self.should_retry


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"
    should_retry = False


class MethodNotAllowed(InvalidRequest):
    """A known route asked with a method it does not serve."""

    status = 405

    def __init__(self, message: str, *, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", ", ".join(self.allow).encode())]


class Conflict(InvalidRequest):
    """The request conflicts with what was done before (admin API)."""

    status = 409


class AuthenticationFailed(ApiError):
    status = 401
    type = "authentication_error"
    should_retry = False


class InsufficientQuota(ApiError):
    status = 402
    type = "insufficient_quota_error"
    should_retry = False
    default_suggestion = "add credits to this key (relaygate credits add KEY_ID USD)"


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    should_retry = False


class NotFound(ApiError):
    status = 404
    type = "not_found_error"
    should_retry = False


class RequestTooLarge(ApiError):
    status = 413
    type = "request_too_large_error"
    should_retry = False


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    should_retry = True

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(bounded_wait(retry_after)))
        super().__init__(message, fallback_suggestion=f"retry after {self.retry_after} seconds")

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after).encode())]


class InternalError(ApiError):
    status = 500
    type = "internal_server_error"
    default_suggestion = "try again later"


class UpstreamError(ApiError):
    """The upstream failed; ``retryable`` says whether another attempt may succeed."""

    status = 502
    type = "upstream_error"
    default_suggestion = "try different model"
    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        upstream: str = "",
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream = upstream
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after

    def retry_hint(self) -> bool | None:
        return self.retryable


class UpstreamUnreachable(UpstreamError):
    """Connecting to the upstream failed or it did not answer in time."""


class UpstreamStatus(UpstreamError):
    """The upstream answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        upstream: str,
        upstream_status: int,
        retry_after: float | None = None,
    ) -> None:
        retryable = upstream_status == 429 or upstream_status >= 500
        super().__init__(message, upstream=upstream, retryable=retryable, retry_after=retry_after)
        self.upstream_status = upstream_status


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer could not be read (bad JSON, a stream cut short)."""

    retryable = False


class ServiceUnavailable(ApiError):
    status = 503
    type = "service_unavailable_error"
    default_suggestion = "retry after 30 seconds"
    should_retry = True


class NoUpstream(ServiceUnavailable):
    """503 that will not go away: the model has no upstream configured."""

    should_retry = False


def _retry_headers(seconds: float) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` in whole seconds (at least 1) and ``retry-after-ms`` (exact, which
    OpenAI's SDKs read first), for a wait within 0 and :data:`MAX_RETRY_AFTER`."""
    seconds = bounded_wait(seconds)
    return [
        (b"retry-after", str(max(1, math.ceil(seconds))).encode()),
        (b"retry-after-ms", str(math.ceil(seconds * 1000)).encode()),
    ]


class UpstreamsRateLimited(RateLimited):
    """429: every upstream that could answer refused for rate (their limit, not the key's).

    ``wait_seconds`` is the exact wait (the soonest any upstream allowed); ``retry_after`` the
    whole seconds of ``Retry-After``.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.wait_seconds = bounded_wait(retry_after)
        super().__init__(message, retry_after=retry_after)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return _retry_headers(self.wait_seconds)


class UpstreamsUnavailable(ServiceUnavailable):
    """503 with ``Retry-After``: nothing could answer now, and some upstream takes requests
    again after a known time (a rate limit's ``Retry-After``, or the end of a cool-down)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.wait_seconds = bounded_wait(retry_after)
        self.retry_after = max(1, math.ceil(self.wait_seconds))
        super().__init__(message, fallback_suggestion=f"retry after {self.retry_after} seconds")

    def headers(self) -> list[tuple[bytes, bytes]]:
        return _retry_headers(self.wait_seconds)


class ServerBusy(ServiceUnavailable):
    """The process is at one of its capacity limits; the client is told when to retry."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(message, fallback_suggestion=f"retry after {retry_after} seconds")

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after).encode())]


__all__ = [
    "MAX_RETRY_AFTER",
    "ApiError",
    "AuthenticationFailed",
    "ConfigError",
    "Conflict",
    "InsufficientQuota",
    "InternalError",
    "InvalidRequest",
    "MethodNotAllowed",
    "NoUpstream",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "RelaygateError",
    "RequestTooLarge",
    "ServerBusy",
    "ServiceUnavailable",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatus",
    "UpstreamUnreachable",
    "UpstreamsRateLimited",
    "UpstreamsUnavailable",
    "bounded_wait",
    "excerpt",
]
