"""Plumbing shared by the JSON-over-HTTP providers (Anthropic, Gemini): the POST with its
failures mapped to upstream errors, an SSE reader, and request-translation helpers.

Requests go through relaygate's upstream client (:mod:`relaygate.upstream_http`); its
transport errors (:class:`~relaygate.upstream_http.HttpClientError`) become upstream errors
here and in the providers' stream loops, named by their class."""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote_to_bytes

import msgspec

from relaygate.errors import (
    MAX_RETRY_AFTER,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamUnreachable,
)
from relaygate.protocol.validate import decode_json
from relaygate.providers.base import Provider
from relaygate.providers.reading import LineSplitter, read_body, read_some
from relaygate.redaction import REDACTOR
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import HttpClientError, Response, Target, UpstreamClient

TransportError = (TimeoutError, HttpClientError)
"""What reading an upstream's answer raises when the connection fails (named in the error)."""


class _ErrorDetail(msgspec.Struct):
    message: str | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorDetail | str | None = None


_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)
_MAX_ERROR_BODY = 64 * 1024
T = TypeVar("T")


def decode_upstream(decoder: msgspec.json.Decoder[T], data: bytes, label: str, what: str) -> T:
    """Decode JSON an upstream sent (``what``: "a body", "a stream event", ...).

    Anything unreadable is an :class:`UpstreamProtocolError` (a 502 and a failed attempt, so
    the next upstream is tried): not JSON, the wrong shape, or nested too deeply for the
    decoder. msgspec raises a bare ``RecursionError`` past about 1,000 levels (a 2 KB body),
    even inside a field it skips; every provider decodes upstream JSON through here.
    """
    try:
        return decoder.decode(data)
    except (msgspec.MsgspecError, RecursionError):
        raise UpstreamProtocolError(
            f"Upstream {label} sent {what} that could not be read", upstream=label
        ) from None


def upstream_message(body: bytes) -> str:
    """A short excerpt of the upstream's own error message, safe to show a client: on one
    line, without any form of a configured secret or anything key-shaped (see
    :meth:`relaygate.redaction.Redactor.excerpt`); "" when the body cannot be read."""
    try:
        envelope = decode_upstream(_error_decoder, body, "", "an error")
    except UpstreamProtocolError:
        return ""
    detail = envelope.error
    message = detail if isinstance(detail, str) else (detail.message if detail else None)
    return REDACTOR.excerpt(message) if message else ""


def upstream_word(text: str | None, default: str = "error") -> str:
    """A short, sanitized excerpt of an upstream's error type or code."""
    return REDACTOR.excerpt(text, 40) if text else default


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds (fractions accepted, as
    upstreams send them) or an HTTP-date (RFC 9110 section 10.2.3); ``None`` if unreadable
    (negative, infinite or not a number). A date in the past is 0; a wait is read as at most
    :data:`MAX_RETRY_AFTER` (the router holds an upstream for at most its cool-down anyway)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, as RFC 5322 reads it
            when = when.replace(tzinfo=datetime.UTC)
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    if not 0.0 <= seconds < math.inf:  # also false for nan
        return None
    return min(seconds, MAX_RETRY_AFTER)


def retry_after_header(headers: Mapping[str, str]) -> str | None:
    """The upstream's wait as a ``Retry-After`` value: ``retry-after-ms`` (Azure OpenAI and
    OpenAI send it, more precise) in seconds when readable, else ``Retry-After``."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if 0.0 <= value < math.inf:
            return str(value)
    return headers.get("retry-after")


def parse_data_url(url: str, param: str) -> tuple[str, bytes]:
    """The media type and bytes of a ``data:`` URL (400 naming ``param`` if unreadable)."""
    header, comma, payload = url.partition(",")
    if not comma:
        raise InvalidRequest("Invalid image data URL: it has no ',' before the data", param=param)
    meta = header[len("data:") :].split(";")
    media_type = meta[0].strip().lower() or "text/plain"
    try:
        if "base64" in (m.strip().lower() for m in meta[1:]):
            data = base64.b64decode(payload, validate=True)
        else:
            data = unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            "Invalid image data URL: the data is not base64", param=param
        ) from None
    return media_type, data


def tool_arguments(arguments: Any, param: str) -> dict[str, Any]:
    """An assistant tool call's ``arguments`` (a JSON string) as the object vendors want."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = decode_json(arguments if isinstance(arguments, str) else str(arguments), param)
    except msgspec.DecodeError:
        raise InvalidRequest("Tool call arguments must be a JSON object", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object", param=param)
    return value


async def aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class SseReader:
    """The ``data:`` payloads of an SSE response, one list per network read.

    A plain object rather than an async generator, so that a provider's ``events`` is the only
    generator each streamed read passes through. Lines are split in linear time and each is at
    most ``limit`` bytes (:class:`~relaygate.providers.reading.LineSplitter`).
    """

    def __init__(self, response: Response, limit: int, label: str) -> None:
        self._response = response
        self._lines = LineSplitter(limit, label)

    async def next(self) -> list[bytes] | None:
        """The payloads of the next read that has any; ``None`` at the end of the stream."""
        while True:
            piece = await self._response.receive()
            if not piece:
                rest = self._lines.rest()
                return [rest[5:].strip()] if rest.startswith(b"data:") else None
            lines = self._lines.feed(piece)
            payloads = [line[5:].strip() for line in lines if line.startswith(b"data:")]
            if payloads:
                return payloads


class HttpJsonProvider(Provider):
    """A JSON-over-HTTP upstream: the POST, and its failures mapped to upstream errors.

    The plumbing every HTTP provider shares (OpenAI, Azure, Anthropic, Gemini).
    """

    def __init__(self, settings: UpstreamSettings, session: UpstreamClient) -> None:
        super().__init__(settings, session)
        REDACTOR.add(self.secrets())  # whatever this upstream echoes of its key is redacted
        self._targets: dict[str, Target] = {}
        """The upstream's URLs with its own headers, each built once."""

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def target(self, url: str, headers: dict[str, str] | None = None) -> Target:
        """``url`` with the upstream's own headers (built once), or with ``headers`` (a
        pass-through's, built for this request)."""
        if headers is None:
            target = self._targets.get(url)
            if target is None:
                target = self._targets[url] = self.target(url, self.headers())
            return target
        settings = self.settings
        return self.session.target(url, headers, settings.connect_timeout, settings.read_timeout)

    async def post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> Response:
        """The upstream's 200 response; anything else raised as an upstream error.
        ``headers`` replace the upstream's own for this request (a pass-through's)."""
        try:
            response = await self.target(url, headers).post(body)
        except (TimeoutError, HttpClientError, OSError) as exc:
            raise UpstreamUnreachable(
                f"Upstream AI service unavailable: {self.label} could not be reached"
                f" ({type(exc).__name__})",
                upstream=self.label,
            ) from None
        if response.status != 200:
            try:
                raw = await read_some(response, _MAX_ERROR_BODY)
            except TransportError:
                raw = b""
            finally:
                response.release()
            self.raise_status(response.status, raw, retry_after_header(response.headers))
        return response

    def raise_status(self, status: int, raw: bytes, retry_after: str | None) -> NoReturn:
        """Raise the error for an error status: relaygate's sentence, and a short sanitized
        excerpt of the upstream's message, never its raw body."""
        if status in (401, 403):
            message = f"Upstream {self.label} rejected the gateway's credentials (HTTP {status})"
        else:
            detail = upstream_message(raw)
            message = f"Upstream {self.label} answered HTTP {status}"
            message += f": {detail}" if detail else ""
        raise UpstreamStatus(
            message,
            upstream=self.label,
            upstream_status=status,
            retry_after=parse_retry_after(retry_after),
        )

    async def read_more(self, reader: SseReader) -> list[bytes] | None:
        """The next payloads of a stream that has started (``None`` at its end)."""
        try:
            return await reader.next()
        except TransportError as exc:
            raise self.broke_off(exc, "mid-stream") from None

    def sse_reader(self, response: Response) -> SseReader:
        """A reader of ``response``'s stream, with this upstream's line limit."""
        return SseReader(response, self.settings.max_line_bytes, self.label)

    async def read_body(self, response: Response) -> bytes:
        """The non-streamed answer, at most ``max_body_bytes`` of it (else an upstream error)."""
        try:
            return await read_body(response, self.settings.max_body_bytes, self.label)
        except TransportError as exc:
            raise self.broke_off(exc, "while answering") from None

    def broke_off(self, exc: BaseException, when: str, retryable: bool = False) -> UpstreamError:
        return UpstreamUnreachable(
            f"Upstream {self.label} failed {when} ({type(exc).__name__})",
            upstream=self.label,
            retryable=retryable,
        )

    def cut(self) -> UpstreamError:
        return UpstreamProtocolError(
            f"Upstream {self.label} closed the stream before it finished", upstream=self.label
        )
