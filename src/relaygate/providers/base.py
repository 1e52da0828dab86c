"""The one provider interface: translate a request, yield typed events.

A provider turns a checked :class:`ProviderRequest` into a call to its upstream and yields
:data:`Event` values. The first event is always :class:`Started`, yielded once the upstream has
accepted the request: errors raised before it may be retried elsewhere, errors after it end the
client's stream with an SSE error event. Non-streaming answers are the collected stream.

Providers never create HTTP sessions: they receive the app's shared :class:`aiohttp.ClientSession`.
Upstream failures are raised as :class:`relaygate.errors.UpstreamError` where they happen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import reparse

if TYPE_CHECKING:
    from relaygate.media.pipeline import PreparedImages
from relaygate.settings import UpstreamSettings


@dataclass(slots=True)
class Started:
    """The upstream accepted the request; nothing has reached the client yet."""


@dataclass(slots=True)
class Flush:
    """Nothing more is buffered from the upstream right now: pending output may be sent.

    Providers that set ``batches = True`` yield it after each network read, and the stream
    relay then writes everything since the previous one in a single send; for other providers
    every event is sent as it comes.
    """


FLUSH = Flush()


@dataclass(slots=True)
class TextDelta:
    text: str
    index: int = 0


@dataclass(slots=True)
class ReasoningDelta:
    text: str
    index: int = 0


@dataclass(slots=True)
class ToolCallDelta:
    tool_index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    index: int = 0


@dataclass(slots=True)
class Finish:
    reason: str
    index: int = 0


@dataclass(slots=True)
class TokenUsage:
    """Token counts as the upstream reported them, normalised to OpenAI's meaning:
    ``completion_tokens`` includes ``reasoning_tokens``; ``prompt_tokens`` includes cached,
    image and audio tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    prompt_audio_tokens: int = 0
    completion_audio_tokens: int = 0
    image_tokens: int = 0


Event = Started | TextDelta | ReasoningDelta | ToolCallDelta | Finish | TokenUsage | Flush


@dataclass(slots=True)
class ProviderRequest:
    """What a provider needs to call its upstream."""

    request: ChatRequest
    """The checked request."""
    raw: dict[str, Any]
    """The request body as the client sent it (for pass-through fields)."""
    upstream_model: str
    stream: bool
    request_id: str
    extra: dict[str, Any] = field(default_factory=dict)
    images: PreparedImages | None = None
    """Checked images still given as URLs (``images.forward_urls``): each provider gets them
    as URLs if it fetches URLs itself, inline otherwise (see :meth:`for_provider`)."""

    def for_provider(self, provider: Provider) -> ProviderRequest:
        """This request as ``provider`` should receive it."""
        if self.images is None or provider.fetches_image_urls:
            return self
        raw = self.images.rewrite(self.raw, inline=True)
        return replace(self, raw=raw, request=reparse(raw), images=None)


class Provider:
    """Base class of providers. Subclasses set the capability attributes and ``events``."""

    name: ClassVar[str] = ""
    supports_top_k: ClassVar[bool] = False
    """Whether the upstream takes ``top_k`` (dropped from the request otherwise)."""
    supports_images: ClassVar[bool] = True
    fetches_image_urls: ClassVar[bool] = False
    """Whether the upstream downloads http(s) image URLs itself (else images go inline)."""
    batches: ClassVar[bool] = False
    """Whether ``events`` yields :class:`Flush` at the end of each network read."""

    def __init__(self, settings: UpstreamSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.label = settings.name or settings.provider

    @classmethod
    def check_options(cls, settings: UpstreamSettings) -> None:
        """Raise ``ValueError`` naming the problem if ``settings`` cannot work (start-up)."""
        if settings.options:
            unknown = ", ".join(sorted(settings.options))
            raise ValueError(f"options: {cls.name} takes no options (got {unknown})")

    def events(self, request: ProviderRequest) -> AsyncIterator[Event]:
        """Call the upstream and yield its answer as events, :class:`Started` first."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line (the upstream's key)."""
        return [self.settings.api_key] if self.settings.api_key else []
