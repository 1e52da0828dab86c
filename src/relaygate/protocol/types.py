"""Wire types of the chat-completions contract (msgspec Structs).

Requests are decoded twice from one body: into :class:`ChatRequest` to validate the fields the
contract defines, and into a plain ``dict`` so that fields the contract does not list but OpenAI
clients send are passed on to OpenAI-compatible upstreams unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

MAX_MODEL_NAME = 256
"""The longest model name accepted (``model`` and each of ``models``); longer gets 400."""
MAX_STOP = 4
"""Stop sequences OpenAI accepts in ``stop``."""
MAX_TOOLS = 128
"""Tools OpenAI accepts in ``tools``."""
MAX_LOGIT_BIAS = 300
"""Entries OpenAI accepts in ``logit_bias``."""

ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MODEL_NAME)]


# --- request ---------------------------------------------------------------------------------


class ImageURL(msgspec.Struct, frozen=True):
    url: Annotated[str, msgspec.Meta(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(msgspec.Struct, tag_field="type", tag="text", frozen=True):
    text: str


class ImagePart(msgspec.Struct, tag_field="type", tag="image_url", frozen=True):
    image_url: ImageURL


ContentPart = TextPart | ImagePart
Content = str | list[ContentPart]


class SystemMessage(msgspec.Struct, tag_field="role", tag="system", frozen=True):
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(msgspec.Struct, tag_field="role", tag="developer", frozen=True):
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(msgspec.Struct, tag_field="role", tag="user", frozen=True):
    content: Content
    name: str | None = None


class AssistantMessage(msgspec.Struct, tag_field="role", tag="assistant", frozen=True):
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


class ToolMessage(msgspec.Struct, tag_field="role", tag="tool", frozen=True):
    content: str | list[TextPart]
    tool_call_id: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct, frozen=True):
    """The fields of a chat-completions request that relaygate checks or uses."""

    model: ModelName
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=MAX_STOP)] | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[float, msgspec.Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, msgspec.Meta(ge=-2, le=2)] | None = None
    seed: int | None = None
    tools: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    logit_bias: (
        Annotated[
            dict[str, Annotated[float, msgspec.Meta(ge=-100, le=100)]],
            msgspec.Meta(max_length=MAX_LOGIT_BIAS),
        ]
        | None
    ) = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    models: Annotated[list[ModelName], msgspec.Meta(min_length=1, max_length=8)] | None = None
    """Fallback models, tried in order when ``model`` cannot answer (as OpenRouter does)."""
    # Fields that can change what the upstream charges (see relaygate.accounting.fields):
    service_tier: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    store: bool | None = None
    modalities: Annotated[list[str], msgspec.Meta(max_length=8)] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None


# --- response --------------------------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    text_tokens: int = 0
    audio_tokens: int = 0
    image_tokens: int = 0


class CompletionTokensDetails(msgspec.Struct):
    text_tokens: int = 0
    audio_tokens: int = 0
    reasoning_tokens: int = 0


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails
    input_tokens: int
    output_tokens: int
    input_tokens_details: dict[str, int] | None = None


class ToolCallFunction(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str = ""


class ToolCall(msgspec.Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None
    function: ToolCallFunction | None = None


class ResponseMessage(msgspec.Struct, omit_defaults=True):
    role: str
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(msgspec.Struct):
    index: int
    message: ResponseMessage
    finish_reason: str | None


class ChatCompletion(msgspec.Struct):
    id: str
    model: str
    object: str
    created: int
    choices: list[Choice]
    usage: Usage


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    model: str
    object: str
    created: int
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    type: str
    param: str | None = None
    fallback_suggestion: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody
