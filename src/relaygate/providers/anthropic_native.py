"""A Messages request passed through to an Anthropic upstream (the client speaks its dialect).

The client's body goes out with only ``model`` rewritten, with the client's
``anthropic-beta``/``anthropic-version`` headers (the upstream's version option when the client
sent none): ``cache_control`` (with its ``ttl``), thinking blocks and their signatures, tools
and any field relaygate does not know reach the upstream as sent. The answer comes back as
:class:`~relaygate.providers.base.Passthrough` bytes, a stream's reads as they arrive; only
its usage is read (``message_start`` and ``message_delta``), for billing. An error event before
any content is an error status (the next upstream may be tried); one after it is relayed, and
ends the stream (:class:`RelayedError`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from relaygate.errors import InvalidRequest, UpstreamProtocolError, UpstreamStatus
from relaygate.providers.anthropic_usage import ERROR_STATUS, Usage, merge_usage, usage_from
from relaygate.providers.base import DONE, STARTED, Batch, Event, Passthrough, ProviderRequest
from relaygate.providers.http import decode_upstream, upstream_message, upstream_word
from relaygate.providers.reading import LineSplitter

if TYPE_CHECKING:
    from relaygate.providers.anthropic import AnthropicProvider

_encoder = msgspec.json.Encoder()
_CLIENT_FAULT = {400, 404, 413, 422}


class RelayedError(UpstreamProtocolError):
    """The upstream's error event, already relayed to the client as it came: the stream ends
    without another error event."""

    relayed = True


class _ErrorDetail(msgspec.Struct):
    type: str = ""
    message: str = ""


class _Event(msgspec.Struct):
    """The parts of a stream event relaygate reads (usage and errors)."""

    type: str = ""
    message: Any = None
    usage: Any = None
    error: _ErrorDetail | None = None


class _Body(msgspec.Struct):
    usage: Any = None


_event_decoder = msgspec.json.Decoder(_Event)
_body_decoder = msgspec.json.Decoder(_Body)
_READ = (b"message_start", b"message_delta", b"message_stop", b"error")
"""The events whose payload is decoded; every other one is relayed unread."""


def request_body(request: ProviderRequest) -> bytes:
    assert request.native is not None
    return _encoder.encode({**request.native.body, "model": request.upstream_model})


def request_headers(provider: AnthropicProvider, native_headers: dict[str, str]) -> dict[str, str]:
    return {**provider.headers(), **native_headers}


class _Reader:
    """What one relayed stream has told: its usage, whether it stopped or failed."""

    def __init__(self, provider: AnthropicProvider) -> None:
        self.provider = provider
        self.usage = Usage()
        self.lines = LineSplitter(provider.settings.max_line_bytes, provider.label)
        self.event = b""
        self.stopped = False
        self.content = False
        self.error: _ErrorDetail | None = None

    def read(self, piece: bytes) -> list[Event]:
        """The events of one read: its bytes, and its usage if it told any."""
        deltas = 0
        told = False
        for line in self.lines.feed(piece):
            if line.startswith(b"event:"):
                self.event = line[6:].strip()
                if self.event == b"content_block_delta":
                    deltas += 1
                continue
            if not line.startswith(b"data:"):
                continue
            name = self.event
            if not name:  # no event lines: the type is in the payload
                name = next((n for n in _READ if b'"' + n + b'"' in line), b"")
            if name not in _READ:
                self.content = self.content or name.startswith(b"content_block")
                continue
            data = line[5:].strip()
            event = decode_upstream(_event_decoder, data, self.provider.label, "an event")
            if event.type == "message_start" and isinstance(event.message, dict):
                told = self._merge(event.message.get("usage")) or told
            elif event.type == "message_delta":
                told = self._merge(event.usage) or told
            elif event.type == "message_stop":
                self.stopped = True
            elif event.type == "error":
                self.error = event.error or _ErrorDetail()
        batch: list[Event] = [Passthrough(piece, deltas)]
        if told:
            batch.append(usage_from(self.usage))
        return batch

    def _merge(self, usage: Any) -> bool:
        if not isinstance(usage, dict):
            return False
        try:
            merge_usage(self.usage, msgspec.convert(usage, Usage))
        except msgspec.ValidationError:
            raise UpstreamProtocolError(
                f"Upstream {self.provider.label} sent usage that could not be read",
                upstream=self.provider.label,
            ) from None
        return True

    def failure(self) -> RelayedError:
        error = self.error or _ErrorDetail()
        detail = upstream_message(_encoder.encode({"error": {"message": error.message}}))
        return RelayedError(
            f"Upstream {self.provider.label} failed mid-stream: {upstream_word(error.type)}"
            + (f": {detail}" if detail else ""),
            upstream=self.provider.label,
        )


async def relay_events(
    provider: AnthropicProvider, request: ProviderRequest
) -> AsyncIterator[Batch]:
    """The upstream's answer as :class:`Passthrough` batches (see the module docstring)."""
    assert request.native is not None
    headers = request_headers(provider, request.native.headers)
    response = await provider.post(provider.url(), request_body(request), headers)
    complete = False
    try:
        if not request.stream:
            yield STARTED
            data = await provider.read_body(response)
            usage = decode_upstream(_body_decoder, data, provider.label, "a body").usage
            parsed = msgspec.convert(usage, Usage) if isinstance(usage, dict) else Usage()
            yield (Passthrough(data, body=True), usage_from(parsed))
        else:
            async for batch in _stream(provider, response):
                yield batch
        complete = True
    finally:
        if complete:
            response.release()
        else:
            response.close()


async def _stream(
    provider: AnthropicProvider, response: aiohttp.ClientResponse
) -> AsyncIterator[Batch]:
    reader = _Reader(provider)
    pieces = response.content.iter_any()
    try:
        piece = await anext(pieces, None)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise provider.broke_off(exc, "before its stream started", retryable=True) from None
    if piece is None:
        raise provider.cut()
    batch = reader.read(piece)
    if reader.error is not None and not reader.content:
        # an error before any content: an error status (it may be retried elsewhere)
        status = ERROR_STATUS.get(reader.error.type, 500)
        provider.raise_status(status, _encoder.encode({"error": reader.error}), None)
    yield STARTED
    while True:
        if reader.stopped:
            batch.append(DONE)
        yield batch
        if reader.error is not None:
            raise reader.failure()
        if reader.stopped:
            return
        try:
            piece = await anext(pieces, None)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise provider.broke_off(exc, "mid-stream") from None
        if piece is None:
            raise provider.cut()
        batch = reader.read(piece)


async def count_tokens(
    provider: AnthropicProvider, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, bytes]:
    """The upstream's ``POST /v1/messages/count_tokens`` answer (status and body)."""
    url = provider.url() + "/count_tokens"
    try:
        response = await provider.post(
            url, _encoder.encode(body), request_headers(provider, headers)
        )
    except UpstreamStatus as exc:
        if exc.upstream_status in _CLIENT_FAULT:
            raise InvalidRequest(f"The upstream rejected the request: {exc.message}") from None
        raise
    try:
        return 200, await provider.read_body(response)
    finally:
        response.release()
