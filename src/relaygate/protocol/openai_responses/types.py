"""Wire types of OpenAI's Responses API request (``POST /v1/responses``), as relaygate checks it.

The top level is a :class:`ResponsesRequest`; ``input`` items and ``tools`` are kept as plain
dicts here and checked one by one in :mod:`relaygate.protocol.openai_responses.decode`, which
names the offending item in its errors (``input[3].content[0]``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from relaygate.protocol.types import MAX_TOOLS, ModelName, PositiveInt

MAX_METADATA = 16
"""Entries OpenAI accepts in ``metadata`` (keys up to 64 characters, values up to 512)."""
MAX_INPUT_ITEMS = 10_000
"""Input items accepted in one request (the body's byte limit bounds them too)."""
MAX_ID = 256
"""The longest ``previous_response_id``, ``call_id`` or item id accepted."""

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
ShortText = Annotated[str, msgspec.Meta(max_length=512)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]


class Reasoning(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    """Deprecated spelling of ``summary``."""


class TextOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    include_obfuscation: bool | None = None


Include = Literal[
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
    "message.input_image.image_url",
]
"""``include`` values relaygate accepts (others name hosted tools it does not serve)."""


class ResponsesRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The top-level fields of a Responses request that relaygate serves."""

    model: ModelName
    input: str | Annotated[list[dict[str, Any]], msgspec.Meta(max_length=MAX_INPUT_ITEMS)] = ""
    instructions: str | None = None
    tools: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: PositiveInt | None = None
    text: TextOptions | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    metadata: (
        Annotated[
            dict[Annotated[str, msgspec.Meta(max_length=64)], ShortText],
            msgspec.Meta(max_length=MAX_METADATA),
        ]
        | None
    ) = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    previous_response_id: Id | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    include: Annotated[list[Include], msgspec.Meta(max_length=8)] | None = None
    user: ShortText | None = None
    safety_identifier: ShortText | None = None
    prompt_cache_key: ShortText | None = None
    truncation: Literal["auto", "disabled"] | None = None
    service_tier: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    client_metadata: dict[str, Any] | None = None
    """What a client tells about itself (Codex CLI sends its thread and turn); not used."""
    background: bool | None = None
    """Background responses are not served (``true`` gets 400)."""


UNSUPPORTED = {
    "background": "background responses are not served by relaygate; send the request without"
    " it and read the answer (or stream it)",
    "conversation": "OpenAI's conversations are not served by relaygate; use"
    " previous_response_id (with stored responses) or send the whole input",
    "prompt": "stored prompt templates are not served by relaygate; send instructions and input",
    "max_tool_calls": "max_tool_calls applies to hosted tools, which relaygate does not serve",
    "context_management": "server-side context management is not served by relaygate",
}
"""Fields OpenAI defines that relaygate refuses, with the reason given in the 400."""
