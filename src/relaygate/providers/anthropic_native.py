"""A Messages request passed through to an Anthropic upstream (the client speaks its dialect).

The client's body goes out with only ``model`` rewritten, with the client's allowed
``anthropic-beta`` values after the upstream's ``betas`` option, and the upstream's ``version``
option (the client's ``anthropic-version`` when it is unset, else the default):
``cache_control`` (with its ``ttl``), thinking blocks and their signatures, tools and
the priced parts the model allows (:mod:`relaygate.protocol.anthropic_messages.priced`) reach
the upstream as sent. The answer comes back as
:class:`~relaygate.providers.base.Passthrough` bytes, a stream's reads as they arrive; only
its usage is read (``message_start`` and ``message_delta``), for billing; an answer that tells
none is billed by the estimate, and one cut short by its prompt figures and the bytes of the
deltas relayed. An error event before
any content is an error status (the next upstream may be tried); one after it is relayed, and
ends the stream (:class:`RelayedError`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgspec

from relaygate.errors import InvalidRequest, UpstreamStatus
from relaygate.providers.anthropic_usage import ERROR_STATUS, Usage, merge_usage, usage_from
from relaygate.providers.base import (
    STARTED,
    Batch,
    Event,
    Passthrough,
    ProviderRequest,
    TokenUsage,
)
from relaygate.providers.http import (
    decode_upstream,
)
from relaygate.providers.reading import LineSplitter
from relaygate.providers.relay import RelayedError, relay_stream, relayed_failure

if TYPE_CHECKING:
    from relaygate.providers.anthropic import AnthropicProvider

_encoder = msgspec.json.Encoder()
_CLIENT_FAULT = {400, 404, 413, 422}


class _ErrorDetail(msgspec.Struct):
    type: str = ""
    message: str = ""


class _Body(msgspec.Struct):
    """The part of a message relaygate reads (in ``message_start``, and a whole answer)."""

    usage: Usage | None = None
    content: msgspec.Raw = msgspec.Raw()
    """The answer's content blocks, undecoded: their size is its output's, when no usage is
    told."""


class _Event(msgspec.Struct):
    """The parts of a stream event relaygate reads (usage and errors)."""

    type: str = ""
    message: _Body | None = None
    usage: Usage | None = None
    error: _ErrorDetail | None = None


_event_decoder = msgspec.json.Decoder(_Event)
_body_decoder = msgspec.json.Decoder(_Body)
_WATCHED = (b'"message_start"', b'"message_delta"', b'"message_stop"', b'"error"')
"""The events whose payload is decoded (usage, the end, errors); every other one is relayed
unread. A quote inside a JSON string is escaped, so these quoted words are JSON tokens; the
decoded ``type`` is checked all the same."""


def _watched_lines(text: bytes) -> list[tuple[int, bytes]]:
    """The data lines of ``text`` (complete lines) that hold a watched word, by position."""
    found: dict[int, bytes] = {}
    for word in _WATCHED:
        at = text.find(word)
        while at >= 0:
            start = text.rfind(b"\n", 0, at) + 1
            if start not in found:
                end = text.find(b"\n", at)
                line = text[start:] if end < 0 else text[start:end]
                if line.startswith(b"data:"):
                    found[start] = line[5:].strip()
            at = text.find(word, at + len(word))
    return sorted(found.items())


_DELTA = b'"content_block_delta"'
_DELTA_FRAME = len(
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}'
)
"""The bytes of a text delta's line around its text (thinking and tool input deltas have a
few more)."""


def _delta_tokens(text: bytes) -> int:
    """The output tokens of the content deltas in ``text`` (complete lines), for an answer cut
    short: each delta line's bytes past a text delta's framing, 4 a token (as
    :func:`~relaygate.providers.anthropic_usage.usage_from` counts thinking), at least one a
    delta. Only the delta lines are visited, found by one C search each."""
    tokens = 0
    at = text.find(_DELTA)
    while at >= 0:
        end = text.find(b"\n", at)
        start = text.rfind(b"\n", 0, at) + 1
        tokens += max(1, (end - start - _DELTA_FRAME + 3) // 4)
        at = text.find(_DELTA, end)
    return tokens


def billed(usage: Usage) -> TokenUsage:
    """The usage an answer told, marked ``partial`` when it did not tell its input side (the
    prompt is then billed by the estimate, not as 0)."""
    tokens = usage_from(usage)
    return tokens if usage.input_tokens is not None else replace(tokens, partial=True)


def request_body(request: ProviderRequest) -> bytes:
    assert request.native is not None
    return _encoder.encode({**request.native.body, "model": request.upstream_model})


def request_headers(provider: AnthropicProvider, native_headers: dict[str, str]) -> dict[str, str]:
    """The provider's headers with the client's: the operator's ``version`` option wins over
    the client's ``anthropic-version`` (the client's is used when the option is unset), and
    ``anthropic-beta`` is the operator's ``betas`` followed by the client's allowed values."""
    headers = provider.headers()
    version = native_headers.get("anthropic-version")
    if version is not None and provider.options.version is None:
        headers["anthropic-version"] = version
    client = native_headers.get("anthropic-beta")
    if client:
        merged = [*provider.options.betas, *client.split(",")]
        headers["anthropic-beta"] = ",".join(dict.fromkeys(merged))
    return headers


class _Reader:
    """What one relayed stream has told: its usage, whether it stopped or failed."""

    def __init__(self, provider: AnthropicProvider) -> None:
        self.provider = provider
        self.usage = Usage()
        self.lines = LineSplitter(provider.settings.max_line_bytes, provider.label)
        self.stopped = False
        self.content = False
        self.error: _ErrorDetail | None = None

    def read(self, piece: bytes) -> list[Event]:
        """The events of one read: its bytes, and the answer's usage: its input side (marked
        ``partial``) once ``message_start`` has told it, all of it once ``message_delta`` has
        (cumulative; marked ``partial`` too when the input side was never told).

        The lines the read completes are scanned once, in C, for the events relaygate reads;
        the many content deltas between them are measured (:func:`_delta_tokens`), never
        decoded."""
        text = self.lines.text(piece)
        if not text:
            return [Passthrough(piece)]
        tokens = _delta_tokens(text)
        if not self.content and b'"content_block' in text:
            self.content = True
        told = started = False
        for start, data in _watched_lines(text):
            event = decode_upstream(_event_decoder, data, self.provider.label, "an event")
            kind = event.type
            if kind == "message_start" and event.message and event.message.usage:
                merge_usage(self.usage, event.message.usage)  # the input side
                started = True
            elif kind == "message_delta" and event.usage is not None:
                merge_usage(self.usage, event.usage)
                told = True
            elif kind == "message_stop":
                self.stopped = True
            elif kind == "error":
                self.error = event.error or _ErrorDetail()
                if not self.content or text.find(b'"content_block') > start:
                    self.content = False  # the error came before any content
        batch: list[Event] = [Passthrough(piece, tokens)]
        if told:
            batch.append(billed(self.usage))
        elif started:  # a stream cut short is billed these prompt figures, not the estimate
            batch.append(replace(usage_from(self.usage), partial=True))
        return batch

    @property
    def ended(self) -> bool:
        return self.stopped

    @property
    def done(self) -> bool:
        return self.stopped

    def early_error(self) -> tuple[int, bytes] | None:
        if self.error is None or self.content:
            return None
        return ERROR_STATUS.get(self.error.type, 500), _encoder.encode({"error": self.error})

    def failure(self) -> RelayedError | None:
        error = self.error
        if error is None:
            return None
        return relayed_failure(self.provider.label, error.type, error.message)


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
            body = decode_upstream(_body_decoder, data, provider.label, "a body")
            usage = body.usage
            if usage is None:  # billed by the estimate: the prompt's, and the content's bytes / 4
                output = -(-len(body.content) // 4)
                yield (Passthrough(data, output, body=True),)
            else:
                yield (Passthrough(data, body=True), billed(usage))
        else:
            async for batch in relay_stream(provider, response, _Reader(provider)):
                yield batch
        complete = True
    finally:
        if complete:
            response.release()
        else:
            response.close()


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
