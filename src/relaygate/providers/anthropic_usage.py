"""Anthropic's usage and error types, shared by the translating provider
(:mod:`relaygate.providers.anthropic`) and the pass-through (:mod:`.anthropic_native`)."""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

from relaygate.providers.base import TokenUsage

# The status each error type stands for, for an error event that arrives before any content.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_CHARS_PER_TOKEN = 4
Count = Annotated[int, msgspec.Meta(ge=0)]
"""A token count: a negative one is an upstream protocol error, never a credit."""


class OutputDetails(msgspec.Struct):
    thinking_tokens: Count | None = None


class CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: Count | None = None
    ephemeral_1h_input_tokens: Count | None = None


class Usage(msgspec.Struct):
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    cache_creation_input_tokens: Count | None = None
    output_tokens_details: OutputDetails | None = None
    cache_creation: CacheCreation | None = None


def merge_usage(total: Usage, update: Usage) -> None:
    """Fold a later (cumulative) usage report into ``total``."""
    for field in Usage.__struct_fields__:
        value = getattr(update, field)
        if value is not None:
            setattr(total, field, value)


def usage_from(usage: Usage, thinking_chars: int = 0) -> TokenUsage:
    """Anthropic's usage in OpenAI's meaning (see :mod:`relaygate.providers.anthropic`)."""
    read = usage.cache_read_input_tokens or 0
    written = usage.cache_creation_input_tokens or 0
    output = usage.output_tokens or 0
    details = usage.output_tokens_details
    if details is not None and details.thinking_tokens is not None:
        reasoning = details.thinking_tokens
    else:
        reasoning = math.ceil(thinking_chars / _CHARS_PER_TOKEN)
    creation = usage.cache_creation
    hour = min(written, (creation.ephemeral_1h_input_tokens or 0) if creation else 0)
    return TokenUsage(
        prompt_tokens=(usage.input_tokens or 0) + read + written,
        completion_tokens=output,
        cached_tokens=read,
        reasoning_tokens=min(reasoning, output),
        cache_write_tokens=written - hour,
        cache_write_1h_tokens=hour,
    )
