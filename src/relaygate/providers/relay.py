"""What the two pass-through relays share (:mod:`~relaygate.providers.anthropic_native` for
Messages, :mod:`~relaygate.providers.openai_responses` for Responses): the stream loop that
relays an upstream's reads as they come, and the error for a failure event already relayed.

Each relay brings a :class:`StreamReader` that reads its dialect's events from the bytes; the
loop is the same for both. A failure event before any content is an error status (nothing has
reached the client, so the next upstream may be tried); one after it ends the stream with a
:class:`RelayedError`, since the client has already received the upstream's own error event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

import msgspec

from relaygate.errors import UpstreamProtocolError
from relaygate.providers.base import DONE, STARTED, Batch, Event
from relaygate.providers.http import TransportError, upstream_message, upstream_word

if TYPE_CHECKING:
    from relaygate.providers.http import HttpJsonProvider
    from relaygate.upstream_http import Response

_encoder = msgspec.json.Encoder()


class RelayedError(UpstreamProtocolError):
    """The upstream's failure event, already relayed to the client as it came: the stream ends
    without another error event."""

    relayed = True


def relayed_failure(label: str, kind: str | None, message: str | None) -> RelayedError:
    """The error for a failure event (its ``kind``: type or code, and message) relayed
    mid-stream: a short sanitized excerpt of each."""
    detail = upstream_message(_encoder.encode({"error": {"message": message or ""}}))
    return RelayedError(
        f"Upstream {label} failed mid-stream: {upstream_word(kind)}"
        + (f": {detail}" if detail else ""),
        upstream=label,
    )


class StreamReader(Protocol):
    """What a relay reads of its dialect's stream."""

    def read(self, piece: bytes) -> list[Event]:
        """The batch of one read: its bytes as they came, and any usage they told."""

    def early_error(self) -> tuple[int, bytes] | None:
        """A failure told before any content: the status and error body to raise it as."""

    def failure(self) -> RelayedError | None:
        """A failure told (after content): the error that ends the stream."""

    @property
    def ended(self) -> bool:
        """The stream's last event came."""

    @property
    def done(self) -> bool:
        """The answer is complete (:data:`DONE` ends its last batch)."""


async def _receive(provider: HttpJsonProvider, response: Response, started: bool) -> bytes:
    try:
        piece = await response.receive()
    except TransportError as exc:
        when = "mid-stream" if started else "before its stream started"
        raise provider.broke_off(exc, when, retryable=not started) from None
    if not piece:
        raise provider.cut()
    return piece


async def relay_stream(
    provider: HttpJsonProvider, response: Response, reader: StreamReader
) -> AsyncIterator[Batch]:
    """The upstream's stream as batches, :data:`STARTED` first (see the module docstring)."""
    batch = reader.read(await _receive(provider, response, started=False))
    early = reader.early_error()
    if early is not None:
        provider.raise_status(early[0], early[1], None)
    yield STARTED
    while True:
        if reader.done:
            batch.append(DONE)
        yield batch
        failure = reader.failure()
        if failure is not None:
            raise failure
        if reader.ended:
            return
        batch = reader.read(await _receive(provider, response, started=True))


__all__ = ["RelayedError", "StreamReader", "relay_stream", "relayed_failure"]
