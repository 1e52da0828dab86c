"""Providers: one module per upstream API, one interface (see base)."""

from relaygate.providers.base import (
    Event,
    Finish,
    Provider,
    ProviderRequest,
    ReasoningDelta,
    Started,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)

__all__ = [
    "Event",
    "Finish",
    "Provider",
    "ProviderRequest",
    "ReasoningDelta",
    "Started",
    "TextDelta",
    "TokenUsage",
    "ToolCallDelta",
]
