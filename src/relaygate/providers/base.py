"""The one provider interface: translate a request, yield typed events.

A provider turns a checked :class:`ProviderRequest` into a call to its upstream and yields
:data:`Batch` values: the :data:`Event` values of one network read, in order. The first batch is
always ``[Started()]`` alone, yielded once the upstream has accepted the request: errors raised
before it may be retried elsewhere, errors after it end the client's stream with an SSE error
event. A provider that knows its answer is complete ends the last batch with :class:`Done`.
Non-streaming answers are the collected stream.

A batch per read, rather than an event per ``yield``, costs each streamed read one resume of the
provider's generator instead of one per token, and lets the stream relay write each read to the
client in a single send.

Providers never create HTTP clients: they receive the app's shared
:class:`~relaygate.upstream_http.UpstreamClient`.
Upstream failures are raised as :class:`relaygate.errors.UpstreamError` where they happen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from relaygate.protocol.types import ChatRequest
from relaygate.protocol.validate import reparse

if TYPE_CHECKING:
    from relaygate.media.pipeline import PreparedImages
    from relaygate.upstream_http import UpstreamClient
from relaygate.settings import UpstreamSettings


@dataclass(slots=True)
class Started:
    """The upstream accepted the request; nothing has reached the client yet."""


@dataclass(slots=True)
class Done:
    """The upstream has finished its answer: the provider yields nothing after this batch.

    Optional (a stream also ends when the generator does), but it lets the relay send the last
    read together with the stream's tail.
    """


DONE = Done()


@dataclass(slots=True)
class TextDelta:
    text: str
    index: int = 0


@dataclass(slots=True)
class EncodedText:
    """Consecutive text deltas of choice 0, each still the JSON string literal the upstream
    sent (quotes included): streamed on as bytes, without decoding and re-encoding each one."""

    literals: list[bytes]


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
    cache_write_tokens: int = 0
    """Prompt tokens written to the upstream's prompt cache for 5 minutes (Anthropic's
    ``cache_creation_input_tokens``); part of ``prompt_tokens``, priced as ``cache_write``."""
    cache_write_1h_tokens: int = 0
    """Prompt tokens written to the cache for 1 hour; part of ``prompt_tokens``, priced as
    ``cache_write_1h``."""
    partial: bool = False
    """Only the input side is known yet (Anthropic's ``message_start``): an answer cut short
    is billed these prompt figures and, for output, at least the deltas received. A partial
    usage with no prompt tokens did not tell its input side: the prompt is the estimate."""


@dataclass(slots=True)
class Passthrough:
    """Bytes of the upstream's answer in the client's own dialect, relayed as they came (a
    stream's read, or a whole non-streamed body). ``tokens`` estimates the output tokens of the
    content deltas among them, by their bytes (for billing a stream cut short, or an answer
    that tells no usage)."""

    data: bytes
    tokens: int = 0
    body: bool = False
    """The whole body of a non-streamed answer (kept to be sent); a stream's reads are not."""


Event = (
    Started
    | TextDelta
    | EncodedText
    | ReasoningDelta
    | ToolCallDelta
    | Finish
    | TokenUsage
    | Done
    | Passthrough
)
Batch = Sequence[Event]
"""The events of one network read, in order (a list or a tuple)."""
STARTED: Batch = (Started(),)
"""The first batch of every answer."""


@dataclass(slots=True)
class Native:
    """The client's request in its own dialect, for an upstream that speaks it: the body is
    passed through with only ``model`` rewritten, and the answer relayed as it comes."""

    dialect: str
    """``messages`` (Anthropic) or ``responses`` (OpenAI Responses)."""
    body: dict[str, Any]
    """The client's body as decoded (never modified in place)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Client headers the upstream should see (``anthropic-beta``, ``anthropic-version``)."""


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
    native: Native | None = None
    """The client's own request, set by routes whose dialect some upstream speaks natively;
    ``request`` and ``raw`` still hold it translated for every other provider."""

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

    def __init__(self, settings: UpstreamSettings, session: UpstreamClient) -> None:
        self.settings = settings
        self.session = session
        self.label = settings.name or settings.provider

    @classmethod
    def check_options(cls, settings: UpstreamSettings) -> None:
        """Raise ``ValueError`` naming the problem if ``settings`` cannot work (start-up)."""
        if settings.options:
            unknown = ", ".join(sorted(settings.options))
            raise ValueError(f"options: {cls.name} takes no options (got {unknown})")

    def events(self, request: ProviderRequest) -> AsyncIterator[Batch]:
        """Call the upstream and yield its answer as batches of events, :data:`STARTED` first."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line (the upstream's key)."""
        return [self.settings.api_key] if self.settings.api_key else []
