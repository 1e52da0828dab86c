"""Wire types of Anthropic's Messages API that relaygate checks (msgspec Structs).

The body is decoded twice, as for chat completions: into :class:`MessagesRequest` to check the
fields relaygate reads, and into a plain ``dict`` that an Anthropic upstream receives unchanged
but for ``model``. Content blocks stay dicts at this level (Anthropic adds block types often);
the ones relaygate translates are checked one by one (:mod:`.decode`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from relaygate.protocol.types import MAX_TOOLS, ModelName, PositiveInt

Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]


class MessageParam(msgspec.Struct, frozen=True):
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class MessagesRequest(msgspec.Struct, frozen=True):
    """The fields of a Messages request relaygate checks or uses."""

    model: ModelName
    messages: Annotated[list[MessageParam], msgspec.Meta(min_length=1)]
    max_tokens: PositiveInt | None = None
    """Required by ``POST /v1/messages`` (checked there); ``count_tokens`` takes none."""
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: PositiveInt | None = None
    stop_sequences: list[str] | None = None
    tools: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class TextBlock(msgspec.Struct, frozen=True):
    text: str


class Base64Source(msgspec.Struct, tag_field="type", tag="base64", frozen=True):
    media_type: str
    data: str


class UrlSource(msgspec.Struct, tag_field="type", tag="url", frozen=True):
    url: Annotated[str, msgspec.Meta(min_length=1)]


class ImageBlock(msgspec.Struct, frozen=True):
    source: Base64Source | UrlSource


class ToolUseBlock(msgspec.Struct, frozen=True):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(msgspec.Struct, frozen=True):
    tool_use_id: str
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class ThinkingBlock(msgspec.Struct, frozen=True):
    thinking: str
    signature: str | None = None


class Tool(msgspec.Struct, frozen=True):
    """A client tool (``type`` absent or ``custom``)."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    input_schema: dict[str, Any]
    description: str | None = None


class ToolChoice(msgspec.Struct, frozen=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct, frozen=True):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: PositiveInt | None = None
