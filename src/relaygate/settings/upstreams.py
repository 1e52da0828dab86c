"""One upstream serving a model: where it is, its limits, retries and health."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from relaygate.settings.types import PositiveFloat, PositiveInt


class UpstreamSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One upstream serving a model."""

    provider: str
    """Provider name: ``openai`` (and OpenAI-compatible servers), ``azure``, ``anthropic``,
    ``gemini`` or ``simulator``."""
    base_url: str | None = None
    """The upstream API root, e.g. ``https://api.openai.com/v1``."""
    api_key: str | None = None
    """The upstream's key; ``${VAR}`` reads it from the environment. Never logged."""
    model: str | None = None
    """The upstream's own model name; defaults to the public name."""
    name: str | None = None
    """A label for logs, metrics, the ledger and the ``x-relaygate-upstream`` header."""
    connect_timeout: PositiveFloat = 10.0
    """Seconds to establish the connection."""
    read_timeout: PositiveFloat = 300.0
    """Seconds to wait for the next byte of an answer."""
    max_body_bytes: PositiveInt = 64 * 1024 * 1024
    """Largest non-streamed answer read from this upstream; a larger one is dropped and the
    client gets 502 ``upstream_error``. Generous for answers that carry base64 images."""
    max_line_bytes: PositiveInt = 32 * 1024 * 1024
    """Longest line of a streamed answer (one SSE ``data:`` line, so one event's payload); a
    longer one ends the stream with an upstream error. Room for a large base64 image."""
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    """Provider-specific options (the simulator's latency, for example)."""
    priority: int = 0
    """Lower goes first: upstreams of a higher priority serve only when every one of a lower
    priority is failing or out of rotation."""
    weight: PositiveFloat = 1.0
    """Share of traffic among the upstreams of the same priority (weighted random)."""
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1
    """Further attempts on this upstream after a connect error, 429 or 5xx (before the first
    byte of an answer), with exponential back-off and jitter, honouring ``Retry-After``."""
    health_window_seconds: PositiveFloat = 60.0
    """The sliding window of request outcomes the failure rate is taken over."""
    health_min_requests: PositiveInt = 5
    """Outcomes the window must hold before the upstream can be taken out of rotation."""
    health_failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    """Failure rate over the window at which the upstream is taken out of rotation."""
    health_cooldown_seconds: PositiveFloat = 30.0
    """Seconds out of rotation before one trial request probes the upstream again."""
