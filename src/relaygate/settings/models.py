"""A public model of the catalog: its pricing, limits, upstreams and price-changing fields."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from relaygate.settings.types import PositiveInt
from relaygate.settings.upstreams import UpstreamSettings

PRICE_CHANGING_FIELDS = (
    "service_tier",
    "web_search_options",
    "audio",
    "modalities",
    "prediction",
    "store",
)
"""Request fields that can make an upstream charge more than the tokens relaygate counts; a
request using one is refused (400 naming it) unless its model prices or allows it (see the
README's "Price-changing fields")."""

MESSAGES_TOKEN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "stream", "temperature", "top_p",
        "top_k", "stop_sequences", "tools", "tool_choice", "thinking", "metadata",
        "cache_control", "context_management", "output_config",
    }
)  # fmt: skip
"""Top-level fields of a Messages request that are billed as tokens only (what Claude Code
sends included); any other passes to an Anthropic upstream only if ``allow_fields`` names it."""


class Pricing(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """USD per one million tokens. ``cached_input`` defaults to ``input``."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    """Prompt tokens read from the upstream's prompt cache (defaults to ``input``)."""
    cache_write: Decimal | None = None
    """Prompt tokens written to the upstream's prompt cache for 5 minutes (Anthropic's
    ``cache_control``); defaults to 1.25 times ``input``, as Anthropic charges."""
    cache_write_1h: Decimal | None = None
    """Prompt tokens written to the prompt cache for 1 hour (``cache_control`` with
    ``ttl: "1h"``); defaults to 2 times ``input``, as Anthropic charges."""
    service_tiers: dict[str, Decimal] = msgspec.field(default_factory=dict)
    """Cost multipliers by ``service_tier`` (e.g. ``{flex: 0.5, priority: 2.0}``): a request
    asking for a listed tier is accepted, and its reservation and charge are multiplied (the
    charge rounded up to the micro-dollar). Unlisted tiers other than ``auto`` and ``default``
    get 400."""


class ModelSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One public model."""

    pricing: Pricing
    max_output_tokens: PositiveInt = 16384
    """The largest ``max_tokens`` a request may ask for; the reservation's default."""
    vision: bool = False
    """Whether ``image_url`` content parts are accepted."""
    upstreams: list[UpstreamSettings] = msgspec.field(default_factory=list)
    image_token_estimate: PositiveInt = 1445
    """Prompt tokens reserved for each image (not ``detail: "low"``, which is 85) until the
    upstream reports the real count; 1445 is the most OpenAI's tile formula gives an image."""
    fallbacks: list[str] = msgspec.field(default_factory=list)
    """Models tried, in order, when every upstream of this one fails (a request's own
    ``models`` array takes precedence)."""
    allow_fields: list[str] = msgspec.field(default_factory=list)
    """Price-changing request fields (:data:`PRICE_CHANGING_FIELDS`) this model passes to its
    upstreams although relaygate bills only the tokens they report; by default each gets 400.
    For ``/v1/messages`` also: a server tool (``web_search`` or ``web_search_20250305``), a
    top-level field (``mcp_servers``, ``container``, ...), ``document_url``, ``document_file``
    (:mod:`relaygate.protocol.anthropic_messages.priced`)."""
