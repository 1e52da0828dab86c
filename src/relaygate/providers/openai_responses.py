"""A Responses request passed through to an upstream that speaks Responses (OpenAI; Azure with
its ``responses`` option).

The client's body goes out with ``model`` rewritten, and three changes relaygate needs: the
input of a stored conversation (``previous_response_id``, resolved by relaygate: an upstream
never sees another account's ids), ``store: false`` (relaygate keeps what is kept), and, when
relaygate stores the answer, ``reasoning.encrypted_content`` in ``include`` (so that the
stored reasoning can be sent back). The answer comes back as
:class:`~relaygate.providers.base.Passthrough` bytes, a stream's reads as they arrive; only the
final event (``response.completed``, ``.incomplete`` or ``.failed``) is decoded, for its usage;
an answer that tells none is billed by the estimate, one cut short by the bytes of its deltas.
An ``error`` or ``response.failed`` event before any output is an error status (the next
upstream may be tried); one after it is relayed as it came, and ends the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import msgspec

from relaygate.providers.base import (
    DONE,
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
    from relaygate.providers.openai import OpenAIProvider

_encoder = msgspec.json.Encoder()


_Count = Annotated[int, msgspec.Meta(ge=0)]
"""A token count: a negative one is an upstream protocol error, never a credit."""


class _InputDetails(msgspec.Struct):
    cached_tokens: _Count | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: _Count | None = None


class _Usage(msgspec.Struct):
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _Error(msgspec.Struct):
    code: str | None = None
    message: str | None = None


class _Response(msgspec.Struct):
    id: str = ""
    status: str | None = None
    usage: _Usage | None = None
    error: _Error | None = None
    output: msgspec.Raw = msgspec.Raw()
    """The output items, undecoded: their size is the output's, when no usage is told."""


class _Event(msgspec.Struct):
    type: str = ""
    response: _Response | None = None
    code: str | None = None
    message: str | None = None


class _Kind(msgspec.Struct):
    type: str = ""


_event_decoder = msgspec.json.Decoder(_Event)
_kind_decoder = msgspec.json.Decoder(_Kind)
_response_decoder = msgspec.json.Decoder(_Response)
_FINAL = (b"response.completed", b"response.incomplete", b"response.failed", b"error")
"""The events whose payload is decoded; every other one is relayed unread."""
_FINAL_TYPES = frozenset(name.decode() for name in _FINAL)
_DELTA = b'"delta":"'


def _delta_tokens(line: bytes) -> int:
    """The output tokens of a delta event's data line, for an answer cut short: its ``delta``
    string's bytes, 4 a token, at least one. Inside a JSON string every quote is escaped, so
    ``"delta":"`` and ``","`` are found only as tokens."""
    at = line.find(_DELTA)
    if at < 0:
        return 1
    start = at + len(_DELTA)
    end = line.find(b'","', start)
    if end < 0:
        end = len(line) - 2  # the string ends the object: ..."}
    return max(1, (end - start + 3) // 4)


def usage_from(usage: _Usage | None) -> TokenUsage | None:
    """The usage told, or ``None`` when the answer told none: the estimate is billed."""
    if usage is None:
        return None
    cached = usage.input_tokens_details.cached_tokens if usage.input_tokens_details else None
    reasoning = (
        usage.output_tokens_details.reasoning_tokens if usage.output_tokens_details else None
    )
    return TokenUsage(
        prompt_tokens=usage.input_tokens or 0,
        completion_tokens=usage.output_tokens or 0,
        cached_tokens=cached or 0,
        reasoning_tokens=reasoning or 0,
    )


def request_body(request: ProviderRequest) -> bytes:
    assert request.native is not None
    body = {**request.native.body, "model": request.upstream_model, "store": False}
    body.pop("previous_response_id", None)  # resolved by relaygate into the input
    return _encoder.encode(body)


class _Reader:
    """What one relayed stream has told: its final response, whether it failed."""

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self.lines = LineSplitter(provider.settings.max_line_bytes, provider.label)
        self.name = b""
        self.final: _Response | None = None
        self.failed: _Error | None = None
        self.content = False

    def read(self, piece: bytes) -> list[Event]:
        tokens = 0
        for line in self.lines.feed(piece):
            if line.startswith(b"event:"):
                self.name = line[6:].strip()
                continue
            if not line.startswith(b"data:"):
                continue
            name = self.name
            if name:
                final = name in _FINAL
                delta = name.endswith(b".delta")
            else:  # no event lines: the type is in the payload, decoded (its only field)
                data = line[5:].strip()
                kind = decode_upstream(_kind_decoder, data, self.provider.label, "an event").type
                final = kind in _FINAL_TYPES
                delta = kind.endswith(".delta")
            if delta:
                tokens += _delta_tokens(line)
                self.content = True
            elif final:
                self._final(line[5:].strip())
        batch: list[Event] = [Passthrough(piece, tokens)]
        usage = usage_from(self.final.usage) if self.final is not None else None
        if usage is not None:
            batch.append(usage)
        return batch

    def _final(self, data: bytes) -> None:
        event = decode_upstream(_event_decoder, data, self.provider.label, "an event")
        if event.type == "error":
            self.failed = _Error(event.code, event.message)
        elif event.response is not None:
            self.final = event.response
            if event.type == "response.failed":
                self.failed = event.response.error or _Error()

    @property
    def ended(self) -> bool:
        return self.final is not None

    @property
    def done(self) -> bool:
        return self.final is not None and self.failed is None

    def early_error(self) -> tuple[int, bytes] | None:
        error = self.failed
        if error is None or self.content:
            return None
        status = 429 if error.code == "rate_limit_exceeded" else 502
        return status, _encoder.encode({"error": {"message": error.message}})

    def failure(self) -> RelayedError | None:
        error = self.failed
        if error is None:
            return None
        return relayed_failure(self.provider.label, error.code, error.message)


async def relay_events(provider: OpenAIProvider, request: ProviderRequest) -> AsyncIterator[Batch]:
    """The upstream's answer as :class:`Passthrough` batches (see the module docstring)."""
    response = await provider.post(provider.responses_url(), request_body(request))
    complete = False
    try:
        if not request.stream:
            yield STARTED
            data = await provider.read_body(response)
            body = decode_upstream(_response_decoder, data, provider.label, "a body")
            usage = usage_from(body.usage)
            if usage is None:  # billed by the estimate: the prompt's, and the output's bytes / 4
                output = -(-len(body.output) // 4)
                yield (Passthrough(data, output, body=True), DONE)
            else:
                yield (Passthrough(data, body=True), usage, DONE)
        else:
            async for batch in relay_stream(provider, response, _Reader(provider)):
                yield batch
        complete = True
    finally:
        if complete:
            response.release()
        else:
            response.close()
